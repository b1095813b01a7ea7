"""Protocol invariants checked over everything one client received, in order.

``check_frames`` is prefix-safe: it holds for any prefix of a correct stream, so it
can run on connections that were cut at any point.
"""

from __future__ import annotations

from typing import Any

from tests.support import SCHEMA

TRANSITIONS: dict[str, list[str]] = SCHEMA["x-state-machine"]["transitions"]


def _flatten(frames: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in frames:
        out.extend(f if isinstance(f, list) else [f])
    return out


def check_frames(frames: list[Any]) -> list[str]:
    """Return the violations of SEQ-1, ORD-1/2/4/5/6/8 and STATE-1 in ``frames``."""
    problems: list[str] = []
    seq: dict[str, int] = {}
    status: dict[str, str] = {}
    started_response: set[str] = set()
    ended: set[str] = set()
    finals: dict[str, dict[str, Any]] = {}
    tool_msgs: dict[str, int] = {}
    turn_terminal: dict[str, int] = {}
    for i, f in enumerate(_flatten(frames)):
        result = f.get("result")
        if isinstance(result, dict) and result.get("status") == "started" and "resumeToken" in result:
            started_response.add(result["sessionId"])
            continue
        if isinstance(result, dict) and "replayed" in result:  # attachSession: replay follows
            sid = result["sessionId"]
            started_response.add(sid)
            seq[sid] = result["lastSeq"] - result["replayed"]
            status.pop(sid, None)
            ended.discard(sid)
            continue
        if "method" not in f:
            continue
        p = f["params"]
        sid = p["sessionId"]
        where = f"frame {i} ({f['method']} seq {p.get('seq')})"
        if sid not in started_response:
            problems.append(f"ORD-2: {where} before the startSession response of {sid}")
        if sid in ended:
            problems.append(f"ORD-6: {where} after session {sid} ended")
        expected = seq.get(sid, 0) + 1
        if p["seq"] != expected:
            problems.append(f"SEQ-1: {where}: expected seq {expected}")
        seq[sid] = p["seq"]
        if p["seq"] == 1 and not (f["method"] == "SessionStatusNotification" and p["status"] == "started"):
            problems.append(f"ORD-1: first notification of {sid} is {where}")
        if f["method"] == "SessionStatusNotification":
            new = p["status"]
            old = status.get(sid)
            if old is not None and new not in TRANSITIONS[old]:
                problems.append(f"STATE-1: {sid} {old} -> {new} at {where}")
            status[sid] = new
            if new == "ended":
                ended.add(sid)
        elif f["method"] in ("AIMessageChunkNotification", "ToolCallNotification"):
            key = f"{sid}/{p['messageId']}"
            if key in finals:
                problems.append(f"ORD-4: {where} after the final chunk of message {p['messageId']}")
            if f["method"] == "ToolCallNotification":
                tool_msgs[key] = tool_msgs.get(key, 0) + 1
            elif p["isFinal"]:
                finals[key] = p
                has_tools = key in tool_msgs
                if (p["finishReason"] == "tool_calls") != has_tools:
                    problems.append(f"ORD-5: {where}: finishReason {p['finishReason']} with {tool_msgs.get(key, 0)} tool calls")
                if p["finishReason"] != "tool_calls":
                    tkey = f"{sid}/{p['turnId']}"
                    turn_terminal[tkey] = turn_terminal.get(tkey, 0) + 1
                    if turn_terminal[tkey] > 1:
                        problems.append(f"ORD-8: turn {p['turnId']} ended twice at {where}")
    return problems

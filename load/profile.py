"""Summaries of py-spy profiles (``--format raw``: collapsed stacks, one line per stack).

``python -m load.profile FILE`` prints the summary of a recorded profile. The
benchmark (``python -m load.bench --profile``) records one of our server under a
closed-loop load and prints the same summary.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any

__all__ = ["CATEGORIES", "format_summary", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

CATEGORIES: list[tuple[str, str]] = [
    ("server/transport/", "ours: transport pump (writer task, receive loop)"),
    ("server/session/bridge", "ours: bridge (event → frame, orjson)"),
    ("server/session/", "ours: session layer (connection, handlers, manager)"),
    ("server/protocol/", "ours: JSON-RPC parsing/encoding"),
    ("server/loop/", "ours: AI loop engine (turn task, timeouts, gate)"),
    ("simulator/", "simulator provider (stream, script, rng/hash)"),
    ("uvicorn/protocols/websockets", "uvicorn websockets-sansio protocol (send/receive)"),
    ("websockets/", "websockets sans-I/O (framing)"),
    ("starlette/", "starlette WebSocket wrapper"),
    ("fastapi/", "fastapi routing"),
    ("pydantic", "pydantic validation"),
    ("asyncio/", "asyncio (tasks, queues, events, timeouts)"),
    ("uvloop", "uvloop"),
    ("logging/", "logging"),
]


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    return m.group("func"), m.group("file")


def _category(file: str) -> str:
    for needle, name in CATEGORIES:
        if needle in file:
            return name
    return "other"


def _short(func: str, file: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    file = re.sub(r"^\d+(\.\d+)?/", "", file)
    return f"{func} ({file})"


def summarize(raw: str, top: int = 25) -> dict[str, Any]:
    """Self time by function and by category, inclusive time by function (share of samples)."""
    self_fn: Counter[str] = Counter()
    self_cat: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        parsed = [_split(f) for f in frames]
        leaf_func, leaf_file = parsed[-1]
        self_fn[_short(leaf_func, leaf_file)] += count
        self_cat[_category(leaf_file)] += count
        for name in {_short(fn, fl) for fn, fl in parsed}:
            incl_fn[name] += count

    def share(c: Counter[str], n: int) -> list[list[Any]]:
        return [[k, v, round(100.0 * v / total, 1)] for k, v in c.most_common(n)] if total else []

    return {
        "samples": total,
        "top_self": share(self_fn, top),
        "by_category": share(self_cat, len(self_cat)),
        "top_inclusive": share(incl_fn, top + 15),
    }


def format_summary(s: dict[str, Any], top: int = 15) -> str:
    lines = [f"Profile of our server: {s.get('samples', 0)} samples (busy time only)"]
    lines.append("  self time by layer:")
    for name, _, pct in s.get("by_category", []):
        lines.append(f"    {pct:5.1f}%  {name}")
    lines.append("  self time by function:")
    for name, _, pct in s.get("top_self", [])[:top]:
        lines.append(f"    {pct:5.1f}%  {name}")
    lines.append("  inclusive time by function:")
    for name, _, pct in s.get("top_inclusive", [])[: top + 10]:
        lines.append(f"    {pct:5.1f}%  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m load.profile PY_SPY_RAW_FILE")
    with open(sys.argv[1], encoding="utf-8") as f:
        print(format_summary(summarize(f.read())))

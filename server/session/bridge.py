"""DelegateBridge: turns one session's AILoop events into JSON-RPC notifications.

The bridge is the loop's delegate (its ``emit`` callback). It numbers the
session's notifications (``seq`` starts at 1 and rises by exactly 1), serializes
each frame once, and hands it to the connection's outbound queue. It is
synchronous: the order events are emitted in is the order frames are queued in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from server.loop.events import (
    AIChunk,
    LoopError,
    LoopEvent,
    ReasoningChunk,
    SessionEnded,
    SessionStarted,
    StatusChanged,
    ToolCallGenerated,
)
from server.protocol import errors

__all__ = ["DelegateBridge", "error_code_for"]

log = logging.getLogger("ailoop.bridge")

_KIND_TO_CODE = {
    "rate_limit": errors.PROVIDER_RATE_LIMITED,
    "unavailable": errors.PROVIDER_UNAVAILABLE,
    "midstream": errors.PROVIDER_UNAVAILABLE,
    "truncated": errors.PROVIDER_UNAVAILABLE,
    "timeout": errors.PROVIDER_TIMEOUT,
    "internal": errors.INTERNAL_ERROR,
}


def error_code_for(kind: str) -> int:
    """The spec's error code for a loop error kind (bad_request, auth, payment and
    protocol are all PROVIDER_ERROR)."""
    return _KIND_TO_CODE.get(kind, errors.PROVIDER_ERROR)


class DelegateBridge:
    """The delegate of one session's AILoop."""

    __slots__ = ("session_id", "seq", "_send", "ended", "_validate")

    def __init__(
        self,
        session_id: str,
        send: Callable[[str], None],
        validate: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.seq = 0
        """The seq of the last notification sent (0 before the first)."""
        self._send = send
        self.ended = False
        self._validate = validate

    def __call__(self, event: LoopEvent) -> None:
        if self.ended:
            log.error("event %s after the session ended; dropped", event.name)
            return
        params = self._params(event)
        if params is None:
            return
        self.seq += 1
        params["seq"] = self.seq
        method = params.pop("_method")
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if self._validate is not None:
            self._validate(message)
        self._send(orjson.dumps(message).decode())
        if isinstance(event, SessionEnded):
            self.ended = True

    def _params(self, ev: LoopEvent) -> dict[str, Any] | None:
        sid = self.session_id
        if isinstance(ev, AIChunk):
            p: dict[str, Any] = {
                "_method": "AIMessageChunkNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "messageId": ev.message_id,
                "chunk": ev.text,
                "isFinal": ev.is_final,
            }
            if ev.is_final:
                p["finishReason"] = ev.finish_reason
                if ev.usage is not None:
                    u = ev.usage
                    p["usage"] = {
                        "promptTokens": u.prompt_tokens,
                        "completionTokens": u.completion_tokens,
                        "totalTokens": u.total_tokens,
                    }
            return p
        if isinstance(ev, StatusChanged):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": ev.status, "turnId": ev.turn_id}
        if isinstance(ev, ToolCallGenerated):
            return {
                "_method": "ToolCallNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "messageId": ev.message_id,
                "toolCallId": ev.tool_call_id,
                "name": ev.tool_name,
                "arguments": ev.arguments,
            }
        if isinstance(ev, SessionStarted):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": "started"}
        if isinstance(ev, SessionEnded):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": "ended", "reason": ev.reason}
        if isinstance(ev, LoopError):
            data: dict[str, Any] = {"retryable": ev.retryable, "kind": ev.kind}
            if ev.retry_after_s is not None:
                data["retryAfterMs"] = int(ev.retry_after_s * 1000)
            return {
                "_method": "ErrorNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "code": error_code_for(ev.kind),
                "message": ev.message,
                "data": data,
            }
        if isinstance(ev, ReasoningChunk):
            return None  # protocol v1 has no reasoning notification
        raise TypeError(f"unknown loop event {ev!r}")

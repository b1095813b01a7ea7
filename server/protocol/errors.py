"""JSON-RPC errors: one tree, mapped to the wire in exactly one place.

::

    RpcError                      code, message, data
    ├── ParseError                -32700
    ├── InvalidRequest            -32600
    ├── MethodNotFound            -32601
    ├── InvalidParams             -32602
    ├── InternalError             -32603
    └── application errors        -32001 .. -32099 (see spec x-error-codes):
        SessionNotFound, InvalidSessionState, UnknownToolCall, LimitReached,
        UnsupportedProtocolVersion, ReplayWindowExpiredError, RateLimited,
        IdempotencyConflict, StoreUnavailable

The codes, names and retryability come from ``spec/protocol.schema.json``; a test
checks this module against the spec. Raise these from handlers; the connection
turns them into error responses (``to_error_object``). Any other exception becomes
-32603 with a generic message (details only in the server log).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "INVALID_SESSION_STATE",
    "LIMIT_REACHED",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PROVIDER_ERROR",
    "PROVIDER_RATE_LIMITED",
    "PROVIDER_TIMEOUT",
    "PROVIDER_UNAVAILABLE",
    "SESSION_NOT_FOUND",
    "UNKNOWN_TOOL_CALL",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "REPLAY_WINDOW_EXPIRED",
    "RATE_LIMITED",
    "IDEMPOTENCY_CONFLICT",
    "TOOL_RESULT_TIMEOUT",
    "STORE_UNAVAILABLE",
    "SESSION_OWNER_LOST",
    "IdempotencyConflict",
    "RateLimited",
    "ReplayWindowExpiredError",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "InvalidSessionState",
    "LimitReached",
    "MethodNotFound",
    "ParseError",
    "RpcError",
    "SessionNotFound",
    "StoreUnavailable",
    "UnknownToolCall",
    "UnsupportedProtocolVersion",
]

PARSE_ERROR = -32700
"""The frame is not valid JSON."""
INVALID_REQUEST = -32600
"""The JSON is not a valid request object."""
METHOD_NOT_FOUND = -32601
"""No such method."""
INVALID_PARAMS = -32602
"""Params do not match the method's schema."""
INTERNAL_ERROR = -32603
"""A server bug; details only in the log."""
SESSION_NOT_FOUND = -32001
"""No session with this id is owned by this connection."""
INVALID_SESSION_STATE = -32002
"""The method is not allowed in the session's current status."""
UNKNOWN_TOOL_CALL = -32003
"""No tool call with this id awaits a result."""
LIMIT_REACHED = -32004
"""A configured limit was reached."""
PROVIDER_ERROR = -32005
"""The AI provider failed; retrying will not help."""
PROVIDER_RATE_LIMITED = -32006
"""The AI provider rate-limited the request."""
PROVIDER_UNAVAILABLE = -32007
"""The AI provider is unavailable or its stream broke."""
PROVIDER_TIMEOUT = -32008
"""The AI provider did not answer in time."""
UNSUPPORTED_PROTOCOL_VERSION = -32009
"""initialize asked for a protocol version this server does not speak."""
REPLAY_WINDOW_EXPIRED = -32010
"""attachSession with a cursor older than the replay log."""
RATE_LIMITED = -32011
"""Too many requests on this connection."""
IDEMPOTENCY_CONFLICT = -32012
"""An idempotency key reused with different params."""
TOOL_RESULT_TIMEOUT = -32013
"""Tool results did not arrive in time (ErrorNotification only)."""
STORE_UNAVAILABLE = -32014
"""The shared session store (Redis) or the session's owning process did not answer."""
SESSION_OWNER_LOST = -32015
"""The process running the turn stopped before the turn ended (ErrorNotification only)."""


class RpcError(Exception):
    """An error that becomes a JSON-RPC error object."""

    code: ClassVar[int] = INTERNAL_ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_error_object(self) -> dict[str, Any]:
        data = {"retryable": self.retryable, **(self.data or {})}
        return {"code": self.code, "message": self.message, "data": data}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class ParseError(RpcError):
    code = PARSE_ERROR


class InvalidRequest(RpcError):
    code = INVALID_REQUEST


class MethodNotFound(RpcError):
    code = METHOD_NOT_FOUND


class InvalidParams(RpcError):
    code = INVALID_PARAMS


class InternalError(RpcError):
    code = INTERNAL_ERROR
    retryable = True


class SessionNotFound(RpcError):
    code = SESSION_NOT_FOUND

    def __init__(self, session_id: str) -> None:
        super().__init__("session not found")
        del session_id  # never echoed: it may be another connection's


class InvalidSessionState(RpcError):
    code = INVALID_SESSION_STATE
    retryable = True

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message, {"status": status})


class UnknownToolCall(RpcError):
    code = UNKNOWN_TOOL_CALL

    def __init__(self, tool_call_id: str) -> None:
        super().__init__("no tool call with this id is awaiting a result", {"toolCallId": tool_call_id})


class LimitReached(RpcError):
    code = LIMIT_REACHED
    retryable = True

    def __init__(self, limit: str, value: int) -> None:
        super().__init__(f"limit reached: {limit} ({value})", {"limit": limit, "value": value})


class UnsupportedProtocolVersion(RpcError):
    code = UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, supported: list[int]) -> None:
        super().__init__("unsupported protocol version", {"supported": supported})


class ReplayWindowExpiredError(RpcError):
    code = REPLAY_WINDOW_EXPIRED

    def __init__(self, oldest_seq: int, snapshot: dict[str, Any]) -> None:
        super().__init__("replay window expired", {"oldestSeq": oldest_seq, "snapshot": snapshot})


class RateLimited(RpcError):
    code = RATE_LIMITED
    retryable = True

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__("rate limit exceeded", {"retryAfterMs": retry_after_ms})


class IdempotencyConflict(RpcError):
    code = IDEMPOTENCY_CONFLICT

    def __init__(self) -> None:
        super().__init__("idempotencyKey reused with different params")


class StoreUnavailable(RpcError):
    code = STORE_UNAVAILABLE
    retryable = True

    def __init__(self, detail: str = "the shared session store is unavailable") -> None:
        super().__init__("session store unavailable", {"detail": detail})

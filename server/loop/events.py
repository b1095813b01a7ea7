"""Typed events an :class:`~server.loop.engine.AILoop` emits for its own session.

The event names are the established contract of the original integration plan
(``ai_loop.session_started``, ``ai_loop.message.ai_chunk_received``,
``ai_loop.tool.call_generated``, ``ai_loop.session_ended``, ``ai_loop.error``),
plus ``ai_loop.session_status`` for status changes and
``ai_loop.message.reasoning_chunk_received`` for reasoning deltas. Every event
belongs to exactly one loop (one session): the delegate that receives them never
has to look up "which session sent this".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from server.loop.provider import Usage

__all__ = [
    "AIChunk",
    "LoopError",
    "LoopEvent",
    "ReasoningChunk",
    "SessionEnded",
    "SessionStarted",
    "SessionStatus",
    "StatusChanged",
    "ToolCallGenerated",
]

SessionStatus: TypeAlias = Literal[
    "started", "idle", "streaming", "awaiting_tool_results", "paused", "ended"
]
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    name: ClassVar[str] = "ai_loop.session_started"


@dataclass(frozen=True, slots=True)
class StatusChanged:
    name: ClassVar[str] = "ai_loop.session_status"
    status: SessionStatus
    turn_id: str | None


@dataclass(frozen=True, slots=True)
class AIChunk:
    name: ClassVar[str] = "ai_loop.message.ai_chunk_received"
    turn_id: str
    message_id: str
    text: str
    is_final: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ReasoningChunk:
    name: ClassVar[str] = "ai_loop.message.reasoning_chunk_received"
    turn_id: str
    message_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallGenerated:
    name: ClassVar[str] = "ai_loop.tool.call_generated"
    turn_id: str
    message_id: str
    tool_call_id: str
    tool_name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoopError:
    name: ClassVar[str] = "ai_loop.error"
    turn_id: str | None
    kind: str
    message: str
    retryable: bool
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class SessionEnded:
    name: ClassVar[str] = "ai_loop.session_ended"
    reason: str


LoopEvent: TypeAlias = (
    SessionStarted
    | StatusChanged
    | AIChunk
    | ReasoningChunk
    | ToolCallGenerated
    | LoopError
    | SessionEnded
)

"""Method handlers, one per client → server method of the spec.

A handler receives the calling connection's context and its params already
validated into the generated model, and returns a :class:`Reply`: the result, and
optionally an action to run once the response is queued (that is how a turn's
output is kept behind the response that started it, ORD-2/ORD-3/TOOL-1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


from pydantic import BaseModel

from server.loop.engine import LoopStateError, UnknownToolCallError
from server.loop.jsonutil import dumps
from server.protocol.errors import (
    IdempotencyConflict,
    InvalidParams,
    InvalidSessionState,
    LimitReached,
    UnknownToolCall,
    UnsupportedProtocolVersion,
)
from server.session.manager import InteractiveSessionManager, ServerSession
from server.session.outbox import Outbox
from spec import models as m

__all__ = ["HANDLERS", "Context", "Handler", "Reply", "ServerInfo"]

PROTOCOL_VERSION = 1

log = logging.getLogger("ailoop.handlers")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    version: str
    backend: str
    limits: dict[str, Any]
    """The ``Limits`` object of the spec, advertised by initialize."""
    auth: tuple[str, ...] = ()
    log_content: bool = False


class Context(Protocol):
    """What a handler may use of the connection that called it."""

    connection_id: str
    manager: InteractiveSessionManager
    info: ServerInfo
    outbox: Outbox


@dataclass(frozen=True, slots=True)
class Reply:
    result: dict[str, Any]
    after: Callable[[], None] | None = None


Handler = Callable[[Context, Any], Awaitable[Reply]]


def _session(ctx: Context, session_id: str) -> ServerSession:
    return ctx.manager.get(ctx.connection_id, session_id)


def _state_error(exc: LoopStateError) -> InvalidSessionState:
    return InvalidSessionState(str(exc), exc.status)


_SAMPLING_KEYS = {
    "temperature": "temperature",
    "topP": "top_p",
    "maxTokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


async def initialize(ctx: Context, p: m.InitializeParams) -> Reply:
    if p.protocolVersion is not None and p.protocolVersion != PROTOCOL_VERSION:
        raise UnsupportedProtocolVersion([PROTOCOL_VERSION])
    info = ctx.info
    return Reply({
        "protocolVersion": PROTOCOL_VERSION,
        "serverInfo": {"name": info.name, "version": info.version},
        "capabilities": {
            "batches": True,
            "pauseResume": True,
            "cancelTurn": True,
            "parallelToolCalls": True,
            "backends": [info.backend],
            "resume": True,
            "idempotency": True,
            "auth": list(info.auth),
        },
        "limits": dict(info.limits),
    })


async def start_session(ctx: Context, p: m.StartSessionParams) -> Reply:
    tools = [t.model_dump(mode="json", exclude_unset=True) for t in p.tools or []]
    if len(tools) > ctx.info.limits["maxToolsPerSession"]:
        raise LimitReached("maxToolsPerSession", ctx.info.limits["maxToolsPerSession"])
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise InvalidParams("tool names must be unique", {"errors": [{"loc": "tools", "msg": "duplicate tool name"}]})
    sampling = {}
    if p.sampling is not None:
        given = p.sampling.model_dump(exclude_none=True)
        sampling = {_SAMPLING_KEYS[k]: v for k, v in given.items()}
    metadata = p.metadata.model_dump(mode="json") if p.metadata is not None else {}
    session, token = await ctx.manager.create(
        ctx.connection_id,
        ctx.outbox,
        system_prompt=p.systemPrompt,
        tools=tools,
        model=p.model,
        sampling=sampling,
        metadata=metadata,
    )
    result = {"sessionId": session.id, "status": "started", "model": session.model,
              "tools": session.tool_names, "resumeToken": token}
    return Reply(result, session.loop.start)


async def attach_session(ctx: Context, p: m.AttachSessionParams) -> Reply:
    session, count = await ctx.manager.attach(ctx.connection_id, p.sessionId, p.resumeToken, p.afterSeq)
    result = {"sessionId": session.id, "status": session.loop.status, "lastSeq": session.bridge.seq,
              "replayed": count, "turnId": session.loop.turn_id}

    def complete() -> None:
        ctx.manager.complete_attach(session, ctx.connection_id, ctx.outbox, p.afterSeq)

    return Reply(result, complete)


async def ping(ctx: Context, p: m.PingParams) -> Reply:
    result: dict[str, Any] = {"pong": True, "serverTimeMs": int(time.time() * 1000)}
    if "data" in p.model_fields_set:
        result["data"] = p.data
    return Reply(result)


def _replayed(session: ServerSession, key: str | None, params: Any) -> tuple[str, Reply | None]:
    """IDEM-1: the stored reply of an earlier request with the same key, if any."""
    if key is None:
        return "", None
    # The fields as given (both methods' params are flat: strings, a bool, and the
    # result as plain JSON), not model_dump(), which refuses very deep results (K9).
    fingerprint = dumps({k: getattr(params, k) for k in type(params).model_fields}, sort_keys=True).decode()
    seen = session.idempotency.get(key)
    if seen is None:
        return fingerprint, None
    if seen[0] != fingerprint:
        raise IdempotencyConflict()
    return fingerprint, Reply(seen[1])


async def send_user_message(ctx: Context, p: m.SendUserMessageParams) -> Reply:
    if len(p.content) > ctx.info.limits["maxMessageChars"]:
        raise InvalidParams(
            f"content longer than {ctx.info.limits['maxMessageChars']} characters",
            {"errors": [{"loc": "content", "msg": "too long"}], "limit": "maxMessageChars"},
        )
    session = _session(ctx, p.sessionId)
    fingerprint, earlier = _replayed(session, p.idempotencyKey, p)
    if earlier is not None:
        return earlier
    if ctx.info.log_content:
        log.debug("user message", extra={"sessionId": session.id, "content": p.content})
    try:
        turn_id = session.loop.prepare_turn(p.content)
    except LoopStateError as exc:
        raise _state_error(exc) from None
    result = {"sessionId": session.id, "turnId": turn_id}
    if p.idempotencyKey is not None:
        session.remember(p.idempotencyKey, fingerprint, result)
    return Reply(result, session.loop.begin_turn)


async def provide_tool_result(ctx: Context, p: m.ProvideToolResultParams) -> Reply:
    session = _session(ctx, p.sessionId)
    fingerprint, earlier = _replayed(session, p.idempotencyKey, p)
    if earlier is not None:
        return earlier
    try:
        pending = session.loop.provide_tool_result(p.toolCallId, p.result, bool(p.isError))
    except UnknownToolCallError:
        raise UnknownToolCall(p.toolCallId) from None
    except LoopStateError as exc:
        raise _state_error(exc) from None
    result = {"sessionId": session.id, "toolCallId": p.toolCallId, "pendingToolCalls": pending}
    if p.idempotencyKey is not None:
        session.remember(p.idempotencyKey, fingerprint, result)
    return Reply(result, session.loop.continue_turn if pending == 0 else None)


async def stop_session(ctx: Context, p: m.StopSessionParams) -> Reply:
    session = _session(ctx, p.sessionId)
    await ctx.manager.stop(session, "client_stop")
    return Reply({"sessionId": session.id, "status": "ended"})


def _switch(ctx: Context, session_id: str, pause: bool) -> Reply:
    """pauseSession / resumeSession: both harmless when already in that state."""
    session = _session(ctx, session_id)
    try:
        session.loop.pause() if pause else session.loop.resume()
    except LoopStateError as exc:
        raise _state_error(exc) from None
    return Reply({"sessionId": session.id, "status": session.loop.status})


async def pause_session(ctx: Context, p: m.PauseSessionParams) -> Reply:
    return _switch(ctx, p.sessionId, pause=True)


async def resume_session(ctx: Context, p: m.ResumeSessionParams) -> Reply:
    return _switch(ctx, p.sessionId, pause=False)


async def cancel_turn(ctx: Context, p: m.CancelTurnParams) -> Reply:
    session = _session(ctx, p.sessionId)
    try:
        turn_id = await session.loop.cancel_turn()
    except LoopStateError as exc:
        raise _state_error(exc) from None
    return Reply({"sessionId": session.id, "cancelled": turn_id is not None, "turnId": turn_id})


HANDLERS: dict[str, tuple[type[BaseModel], Handler]] = {
    "initialize": (m.InitializeParams, initialize),
    "ping": (m.PingParams, ping),
    "startSession": (m.StartSessionParams, start_session),
    "attachSession": (m.AttachSessionParams, attach_session),
    "sendUserMessage": (m.SendUserMessageParams, send_user_message),
    "provideToolResult": (m.ProvideToolResultParams, provide_tool_result),
    "stopSession": (m.StopSessionParams, stop_session),
    "pauseSession": (m.PauseSessionParams, pause_session),
    "resumeSession": (m.ResumeSessionParams, resume_session),
    "cancelTurn": (m.CancelTurnParams, cancel_turn),
}
"""Method name → (params model, handler). A test checks it against the spec."""

"""The OpenAI-compatible HTTP face: the simulator speaking OpenRouter's exact wire format.

Routes:

* ``POST /api/v1/chat/completions`` and ``POST /v1/chat/completions`` -- streaming
  (``"stream": true``: SSE, see :mod:`simulator.wire`) or not (one JSON
  ``chat.completion``);
* ``GET /api/v1/models`` and ``GET /v1/models`` -- the model list;
* ``GET /health`` -- ``{"status": "ok", ...}`` once serving.

The request is read like the real API reads it: its ``messages`` (with the
assistant ``tool_calls`` and ``tool`` results of earlier steps), ``tools``,
``model`` and ``seed`` drive the same :class:`~simulator.script.Simulator` plan the
in-process provider plays, so the content is the same over HTTP as in-process.
Malformed requests get a 400 JSON error, as upstream.

A dropped connection (fault ``drop``, mode ``reset``) is made by raising
:class:`SimulatedDrop` from the response: uvicorn then closes the socket in the
middle of the chunked body. :func:`quiet_simulated_drops` keeps that out of the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.loop.provider import ModelRequest
from simulator.clock import Clock, RealClock
from simulator.script import Drop, End, Hang, HttpError, Plan, ReplayPlan, Simulator, StreamError
from simulator.wire import (
    DONE,
    KEEPALIVE,
    completion_body,
    error_body,
    error_chunk,
    finish_chunk,
    http_error_body,
    opening_chunk,
    piece_chunk,
    sse,
    usage_chunk,
)

__all__ = ["SimulatedDrop", "create_app", "quiet_simulated_drops"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_ROLES = {"system", "developer", "user", "assistant", "tool"}
_SAMPLING = ("seed", "max_tokens", "temperature", "top_p", "stop", "presence_penalty", "frequency_penalty")


class SimulatedDrop(Exception):
    """Raised to make the server cut the connection mid-response (fault ``drop``)."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDrop)


def quiet_simulated_drops() -> None:
    """Keep uvicorn from logging a traceback for every simulated dropped connection."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


class _BadRequest(Exception):
    pass


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _check_request(body: Any) -> ModelRequest:
    """Validate a chat-completions body the way the API does; raises _BadRequest."""
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' is required and must be a non-empty array")
    seen_calls: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _BadRequest(f"messages[{i}]: each message needs a role of {', '.join(sorted(_ROLES))}")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _BadRequest(f"messages[{i}].content must be a string, an array of parts or null")
        for j, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(fn, dict)
                or not isinstance(call.get("id"), str)
                or not isinstance(fn.get("name"), str)
                or not isinstance(fn.get("arguments"), str)
            ):
                raise _BadRequest(
                    f"messages[{i}].tool_calls[{j}] needs id, type 'function', function.name and "
                    "function.arguments (a string)"
                )
            seen_calls.add(call["id"])
        if m["role"] == "tool" and m.get("tool_call_id") not in seen_calls:
            raise _BadRequest(
                f"messages[{i}]: tool message with tool_call_id {m.get('tool_call_id')!r} does not answer "
                "a tool call of an earlier assistant message"
            )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _BadRequest("'tools' must be an array")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or t.get("type") != "function" or not isinstance(fn.get("name"), str):
            raise _BadRequest(f"tools[{i}] must be {{type: 'function', function: {{name, parameters}}}}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _BadRequest("'model' must be a string")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _BadRequest("'stream' must be a boolean")
    sampling = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
    return ModelRequest(messages, tools, model, sampling)


def create_app(
    simulator: Simulator,
    *,
    clock: Clock | None = None,
    api_key: str | None = None,
    seed: int | None = None,
) -> Starlette:
    """The HTTP face over one :class:`Simulator` (shared by every request).

    Args:
        simulator: plans the streams.
        clock: the clock streams are paced by (default: real time).
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``
            (else 401, like upstream).
        seed: reported by ``/health`` only.
    """
    clock = clock or RealClock()
    quiet_simulated_drops()

    async def chat(request: Request) -> Response:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return Response(error_body(401, "No auth credentials found"), 401, media_type="application/json")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return Response(error_body(400, "the request body is not valid JSON"), 400, media_type="application/json")
        try:
            model_request = _check_request(body)
        except _BadRequest as exc:
            return Response(error_body(400, str(exc)), 400, media_type="application/json")
        plan = simulator.plan(model_request)
        return _SimResponse(plan, stream=body.get("stream") is True, simulator=simulator, clock=clock)

    async def models(request: Request) -> Response:
        return JSONResponse({"data": [{"id": simulator.model, "object": "model", "owned_by": "simulator"}]})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "scenario": simulator.scenario.name, "seed": simulator.seed if seed is None else seed}
        )

    return Starlette(
        routes=[
            Route("/api/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/api/v1/models", models, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


class _SimResponse(Response):
    """Plays one plan (or recording) onto the ASGI connection."""

    def __init__(self, plan: Plan | ReplayPlan, *, stream: bool, simulator: Simulator, clock: Clock) -> None:
        super().__init__()
        self.plan = plan
        self.stream = stream
        self.sim = simulator
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = asyncio.ensure_future(self._run(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, watch):
                if not task.done():
                    task.cancel()
            await asyncio.gather(run, watch, return_exceptions=True)
        if run in done:
            run.result()  # re-raises SimulatedDrop

    async def _run(self, send: Send) -> None:
        with self.sim.load.streaming():
            if isinstance(self.plan, ReplayPlan):
                await self._replay(self.plan, send)
            elif self.stream:
                await self._stream(self.plan, send)
            else:
                await self._complete(self.plan, send)

    # ------------------------------------------------------------------ helpers
    async def _pause(self, seconds: float, plan: Plan) -> None:
        await self.clock.sleep(self.sim.load.scale(seconds, plan.timing.load))

    @staticmethod
    async def _start(send: Send, status: int, headers: dict[str, str]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )

    @staticmethod
    async def _body(send: Send, data: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})

    async def _http_error(self, err: HttpError, send: Send) -> None:
        headers = {"content-type": "application/json"}
        if err.retry_after_s is not None:
            headers["retry-after"] = _fmt_seconds(err.retry_after_s)
        await self._start(send, err.status, headers)
        await self._body(send, http_error_body(err), more=False)

    async def _keepalive_wait(self, seconds: float, plan: Plan, send: Send) -> None:
        """Wait ``seconds`` sending ``: OPENROUTER PROCESSING`` at once and then every
        keep-alive interval (the first chunk is pending)."""
        total = self.sim.load.scale(seconds, plan.timing.load)
        interval = plan.timing.keepalive_ms / 1000.0
        start = self.clock.now()
        # The count follows from the planned wait, not from how late the event loop
        # wakes us, so the bytes sent do not depend on the machine's load.
        for k in range(max(1, math.ceil(total / interval))):
            if k:
                await self.clock.sleep(max(0.0, start + k * interval - self.clock.now()))
            await self._body(send, KEEPALIVE)
        await self.clock.sleep(max(0.0, start + total - self.clock.now()))

    # ------------------------------------------------------------------ streaming
    async def _stream(self, plan: Plan, send: Send) -> None:
        term = plan.terminal
        if isinstance(term, HttpError):
            await self._pause(term.delay_s, plan)
            await self._http_error(term, send)
            return
        await self._start(
            send,
            200,
            {"content-type": "text/event-stream", "cache-control": "no-cache", "x-generation-id": plan.generation_id},
        )
        if isinstance(term, Hang) and not plan.pieces:
            if term.keepalive:  # keep-alives from the start, at an even pace
                await self._body(send, KEEPALIVE)
            await self._hang(term, plan, send)
        first = plan.pieces[0].delay_s if plan.pieces else term.delay_s
        await self._keepalive_wait(first, plan, send)
        if plan.pieces or isinstance(term, End):
            await self._body(send, sse(opening_chunk(plan)))
        for n, piece in enumerate(plan.pieces):
            if n:
                await self._pause(piece.delay_s, plan)
            await self._body(send, sse(piece_chunk(plan, piece)))
        if plan.pieces:
            await self._pause(term.delay_s, plan)
        if isinstance(term, End):
            out = sse(finish_chunk(plan, term.reason))
            if term.duplicate:
                out += sse(finish_chunk(plan, term.reason))
            await self._body(send, out + sse(usage_chunk(plan, term.reason, term.usage)) + DONE, more=False)
        elif isinstance(term, StreamError):
            await self._body(send, sse(error_chunk(plan, term)), more=False)
        elif isinstance(term, Drop):
            if term.mode == "eof":
                await self._body(send, b"", more=False)
            else:
                raise SimulatedDrop()
        elif isinstance(term, Hang):
            await self._hang(term, plan, send)

    async def _hang(self, term: Hang, plan: Plan, send: Send) -> None:
        """Never answer: only keep-alive comments (or silence) until the client leaves."""
        while True:
            await self.clock.sleep(plan.timing.keepalive_ms / 1000.0 if term.keepalive else 3600.0)
            if term.keepalive:
                await self._body(send, KEEPALIVE)

    # ------------------------------------------------------------------ non-streaming
    async def _complete(self, plan: Plan, send: Send) -> None:
        term = plan.terminal
        if isinstance(term, HttpError):
            await self._pause(term.delay_s, plan)
            await self._http_error(term, send)
            return
        await self._pause(sum(p.delay_s for p in plan.pieces) + term.delay_s, plan)
        json_headers = {"content-type": "application/json"}
        if isinstance(term, End):
            body = orjson.dumps(completion_body(plan, reason=term.reason, usage=term.usage))
            await self._start(send, 200, json_headers)
            await self._body(send, body, more=False)
        elif isinstance(term, StreamError):
            if not plan.pieces:
                status = term.code if isinstance(term.code, int) and 400 <= term.code < 600 else 502
                await self._start(send, status, json_headers)
                await self._body(send, error_body(status, term.message, {"provider_name": plan.provider}), more=False)
                return
            body = orjson.dumps(completion_body(plan, reason="error", usage=None, error=term))
            await self._start(send, 200, json_headers)
            await self._body(send, body, more=False)
        elif isinstance(term, Drop):
            body = orjson.dumps(completion_body(plan, reason="stop", usage=None))
            await self._start(send, 200, json_headers)
            await self._body(send, body[: len(body) // 2])
            if term.mode == "eof":
                await self._body(send, b"", more=False)
            else:
                raise SimulatedDrop()
        elif isinstance(term, Hang):
            while True:
                await self.clock.sleep(3600.0)

    # ------------------------------------------------------------------ replay
    async def _replay(self, plan: ReplayPlan, send: Send) -> None:
        rec = plan.recording
        t0 = self.clock.now()

        async def until(ms: float) -> None:
            await self.clock.sleep(max(0.0, t0 + ms / 1000.0 - self.clock.now()))

        headers = dict(rec.headers)
        if not rec.is_sse:
            await until(rec.end_at_ms)
            await self._start(send, rec.status, headers)
            if rec.end == "dropped":
                raise SimulatedDrop()
            await self._body(send, (rec.body or "").encode(), more=False)
            return
        headers.setdefault("cache-control", "no-cache")
        await self._start(send, rec.status, headers)
        for ev in rec.events:
            await until(ev.at_ms)
            await self._body(send, ev.data.encode() + b"\n\n")
        await until(rec.end_at_ms)
        if rec.end == "dropped":
            raise SimulatedDrop()
        await self._body(send, b"", more=False)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return

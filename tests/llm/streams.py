"""Realistic OpenRouter stream fixtures and a byte stream that delivers them piecemeal.

Chunk shapes follow captured OpenRouter streams (see docs/openrouter.md): ``role``
repeated on every delta, ``content: ""`` on the first and last chunks, ``null``
next to tool calls, ``reasoning``/``reasoning_details`` fields, a usage chunk in one
of three shapes, and ``: OPENROUTER PROCESSING`` keep-alive comments.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from server.llm.openrouter import OpenRouterConfig, OpenRouterProvider
from server.loop.provider import ModelRequest, ProviderError, ProviderEvent

BASE_URL = "http://openrouter.test/api/v1"
URL = BASE_URL + "/chat/completions"
API_KEY = "sk-or-v1-0123456789abcdef0123456789abcdef-test-secret"
GEN_ID = "gen-1771592802-hDlyfTXagKZBer6JQTBv"
KEEPALIVE = ": OPENROUTER PROCESSING"
DONE = "[DONE]"
USAGE = {
    "prompt_tokens": 578,
    "completion_tokens": 52,
    "total_tokens": 630,
    "cost": 0.002514,
    "is_byok": False,
    "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0},
    "cost_details": {"upstream_inference_cost": 0.002514},
    "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
}


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    native: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` as OpenRouter streams it."""
    body: dict[str, Any] = {
        "id": GEN_ID,
        "provider": "OpenAI",
        "model": "openai/gpt-4o-mini-2024-07-18",
        "object": "chat.completion.chunk",
        "created": 1771592802,
        "choices": [],
    }
    if choices:
        d = {"role": "assistant", "content": "", "reasoning": None, "reasoning_details": []}
        d.update(delta or {})
        body["choices"] = [
            {"index": 0, "delta": d, "finish_reason": finish, "native_finish_reason": native, "logprobs": None}
        ]
    if usage is not None:
        body["usage"] = usage
    body.update(extra)
    return body


def text(t: str) -> dict[str, Any]:
    return chunk({"content": t})


def tool_fragment(*fragments: dict[str, Any]) -> dict[str, Any]:
    return chunk({"content": None, "tool_calls": list(fragments)})


def call_start(index: int, call_id: str, name: str, args: str = "") -> dict[str, Any]:
    return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def call_args(index: int, piece: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": piece}, **extra}


def finish(reason: str = "stop", native: str | None = None, **kw: Any) -> dict[str, Any]:
    return chunk({"content": ""}, finish=reason, native=native or reason, **kw)


def usage_chunk(shape: str, reason: str = "stop", usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    """The final usage chunk in one of the shapes seen in the wild."""
    if shape == "empty_choices":
        return chunk(choices=False, usage=usage)
    if shape == "null_finish":
        return chunk({"content": ""}, usage=usage)
    if shape == "repeated_finish":
        return chunk({"content": ""}, finish=reason, native=reason, usage=usage)
    raise ValueError(shape)


def sse(*items: dict[str, Any] | str, crlf: bool = False) -> bytes:
    """Serialise items: dicts as ``data:`` events, ``[DONE]``, ``:`` comments as-is."""
    nl = "\r\n" if crlf else "\n"
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append("data: " + json.dumps(item, ensure_ascii=False) + nl + nl)
        elif item == DONE:
            out.append("data: [DONE]" + nl + nl)
        else:
            out.append(item + nl + nl)
    return "".join(out).encode("utf-8")


def plain_reply(*pieces: str, shape: str = "repeated_finish") -> bytes:
    return sse(KEEPALIVE, KEEPALIVE, text(""), *[text(p) for p in pieces], finish("stop"), usage_chunk(shape), DONE)


class PieceStream(httpx.AsyncByteStream):
    """Delivers ``body`` a few bytes per read, letting the consumer run in between.

    ``then``: ``"eof"`` ends cleanly, ``"drop"`` raises ``RemoteProtocolError`` like a
    cut chunked body, ``"hang"`` blocks until closed (for cancellation tests).
    """

    def __init__(self, body: bytes, piece: int = 5, then: str = "eof") -> None:
        self.body = body
        self.piece = piece
        self.then = then
        self.closed = asyncio.Event()
        self.delivered = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.piece):
            part = self.body[i : i + self.piece]
            self.delivered += len(part)
            yield part
            await asyncio.sleep(0)
        if self.then == "drop":
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (incomplete chunked read)"
            )
        if self.then == "hang":
            await self.closed.wait()

    async def aclose(self) -> None:
        self.closed.set()


def sse_response(body: bytes, piece: int = 5, then: str = "eof") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=PieceStream(body, piece, then))


def error_response(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": error, "user_id": "user_2abc"}
    return httpx.Response(
        status, headers={"content-type": "application/json", **(headers or {})}, content=json.dumps(body).encode()
    )


class SleepRecorder:
    """Injected instead of asyncio.sleep: records the requested delays, waits for none."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def make_provider(
    sleep: Any = None, *, client: httpx.AsyncClient | None = None, **overrides: Any
) -> OpenRouterProvider:
    cfg: dict[str, Any] = dict(
        base_url=BASE_URL,
        model="openai/gpt-4o-mini",
        http_referer="https://app.example",
        x_title="AILoop Tests",
        max_tokens=1024,
        max_retries=2,
        retry_base_delay_s=0.001,
        retry_max_delay_s=1.0,
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
    )
    cfg.update(overrides)
    return OpenRouterProvider(
        OpenRouterConfig(**cfg), API_KEY, client=client, sleep=sleep or SleepRecorder(), jitter=lambda: 0.0
    )


def user_request(content: str = "Hello", tools: Iterable[dict[str, Any]] = (), **kw: Any) -> ModelRequest:
    return ModelRequest([{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}], list(tools), **kw)


async def collect(provider: OpenRouterProvider, request: ModelRequest) -> tuple[list[ProviderEvent], ProviderError | None]:
    """All events of one stream, and the ProviderError that ended it (if any)."""
    events: list[ProviderEvent] = []
    try:
        async with asyncio.timeout(5):
            async for event in provider.stream(request):
                events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}

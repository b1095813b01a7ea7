"""The OpenRouter provider behind the real server: what a WebSocket client receives.

The server runs in-process under uvicorn on 127.0.0.1 (tests/support); the provider
talks to respx through an injected ``httpx.AsyncClient`` (no global patching, so
the harness's own HTTP calls are untouched). Every frame is schema-checked by
``WsClient``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from server.app import build_provider
from server.config import ConfigError
from tests.support import WsClient, make_settings, message_texts, serve

from .streams import (
    API_KEY,
    DONE,
    KEEPALIVE,
    URL,
    WEATHER_TOOL,
    PieceStream,
    SleepRecorder,
    call_args,
    call_start,
    chunk,
    error_response,
    finish,
    make_provider,
    plain_reply,
    sse,
    text,
    tool_fragment,
    usage_chunk,
)

WS_USAGE = {"promptTokens": 578, "completionTokens": 52, "totalTokens": 630}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[respx.Router, Any]]:
    """A respx router, and a server whose OpenRouterProvider sends to it."""
    router = respx.Router(assert_all_called=False)
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    provider = make_provider(SleepRecorder(), client=client)
    settings = make_settings(ai={"backend": "openrouter"})
    async with serve(settings, provider) as srv:
        yield router, srv
    assert client.is_closed  # the server closed the shared client at shutdown


def streamed(body: bytes, piece: int = 5, then: str = "eof", streams: list[PieceStream] | None = None):
    def respond(request: httpx.Request) -> httpx.Response:
        stream = PieceStream(body, piece, then)
        if streams is not None:
            streams.append(stream)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    return respond


def frames_text(c: WsClient) -> str:
    return json.dumps(c.frames)


async def test_streamed_text_reply(upstream) -> None:
    """Text deltas become chunks in order; the final chunk carries stop and usage."""
    router, srv = upstream
    pieces = ["Bonjour", ", ça ", "va — ", "très bien 🌞"]
    route = router.post(URL).mock(side_effect=streamed(plain_reply(*pieces), 3))
    async with WsClient.connect(srv.ws_url) as c:
        init = await c.call("initialize", {})
        assert init["capabilities"]["backends"] == ["openrouter"]
        sid = await c.start_session(systemPrompt="Be brief.", model="anthropic/claude-sonnet-4.5",
                                    sampling={"temperature": 0.2, "maxTokens": 300})
        notes = await c.run_turn(sid, "Salut !")
        chunks = [p for p in notes if "isFinal" in p]
        assert [p["chunk"] for p in chunks] == [*pieces, ""]
        assert chunks[-1]["isFinal"] is True and chunks[-1]["finishReason"] == "stop"
        assert chunks[-1]["usage"] == WS_USAGE
        assert [p["status"] for p in notes if "status" in p] == ["streaming", "idle"]
        assert API_KEY not in frames_text(c)
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "anthropic/claude-sonnet-4.5"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Salut !"}]
    assert (body["temperature"], body["max_tokens"], body["stream"]) == (0.2, 300, True)
    assert "tools" not in body


async def test_tool_call_round_trip(upstream) -> None:
    """A fragmented tool call reaches the client whole; the follow-up request is right."""
    router, srv = upstream
    raw = '{"city": "Zürich"}'
    first = sse(
        KEEPALIVE,
        tool_fragment(call_start(0, "call_zrh", "get_weather")),
        *[tool_fragment(call_args(0, raw[i : i + 4])) for i in range(0, len(raw), 4)],
        finish("tool_calls", "tool_use"), usage_chunk("repeated_finish", "tool_calls"), DONE,
    )
    second = sse(text("It is 4°C in Zürich."), finish("stop"), usage_chunk("empty_choices"), DONE)
    route = router.post(URL).mock(side_effect=[streamed(first, 4)(None), streamed(second, 4)(None)])
    async with WsClient.connect(srv.ws_url) as c:
        sid = await c.start_session(systemPrompt="Use tools.", tools=[WEATHER_TOOL])
        notes = await c.run_turn(sid, "Weather in Zürich?", tool_results=lambda call: {"tempC": 4})
        calls = [p for p in notes if "toolCallId" in p]
        assert [(p["toolCallId"], p["name"], p["arguments"]) for p in calls] == [("call_zrh", "get_weather", {"city": "Zürich"})]
        finals = [p for p in notes if p.get("isFinal")]
        assert [p["finishReason"] for p in finals] == ["tool_calls", "stop"]
        assert message_texts(notes)[finals[1]["messageId"]] == "It is 4°C in Zürich."
        assert [p["status"] for p in notes if "status" in p] == ["streaming", "awaiting_tool_results", "streaming", "idle"]
    assert route.call_count == 2
    follow_up = json.loads(route.calls[1].request.content)
    assert follow_up["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_zrh", "type": "function", "function": {"name": "get_weather", "arguments": raw}}]},
        {"role": "tool", "tool_call_id": "call_zrh", "content": '{"tempC":4}'},
    ]
    assert follow_up["tools"] == [WEATHER_TOOL] and follow_up["tool_choice"] == "auto"


async def test_mid_stream_error(upstream) -> None:
    """An error chunk after output: ErrorNotification (retryable), then the final error chunk."""
    router, srv = upstream
    err = chunk({"content": ""}, finish="error", error={"code": 502, "message": "Upstream provider disconnected"})
    route = router.post(URL).mock(side_effect=streamed(sse(KEEPALIVE, text("Half an "), text("answer"), err), 6))
    async with WsClient.connect(srv.ws_url) as c:
        sid = await c.start_session()
        notes = await c.run_turn(sid, "Go")
        assert [p["chunk"] for p in notes if p.get("chunk")] == ["Half an ", "answer"]
        errors = [p for p in notes if "code" in p]
        assert len(errors) == 1
        assert errors[0]["code"] == -32007 and errors[0]["data"] == {"retryable": True, "kind": "midstream"}
        assert "Upstream provider disconnected" in errors[0]["message"]
        finals = [p for p in notes if p.get("isFinal")]
        assert len(finals) == 1 and finals[0]["finishReason"] == "error"
        assert notes.index(errors[0]) < notes.index(finals[0])
        # The session stays usable and the partial reply is in the history.
        route.mock(side_effect=streamed(plain_reply("Again.")))
        notes = await c.run_turn(sid, "Retry")
        assert [p["finishReason"] for p in notes if p.get("isFinal")] == ["stop"]
    history = json.loads(route.calls.last.request.content)["messages"]
    assert history[-2:] == [{"role": "assistant", "content": "Half an answer"}, {"role": "user", "content": "Retry"}]


@pytest.mark.parametrize(
    ("status", "error", "headers", "code", "retryable"),
    [
        (401, {"code": 401, "message": "No auth credentials found"}, {}, -32005, False),
        (402, {"code": 402, "message": "requires more credits", "metadata": {"limit_source": "openrouter_credits"}}, {}, -32005, False),
        (429, {"code": 429, "message": "Rate limit exceeded"}, {"retry-after": "60"}, -32006, True),
    ],
)
async def test_status_errors_reach_the_client(upstream, status, error, headers, code, retryable) -> None:
    """Pre-stream failures end the turn with the spec's error code and retryable flag."""
    router, srv = upstream
    router.post(URL).mock(side_effect=lambda req: error_response(status, error, headers))
    async with WsClient.connect(srv.ws_url) as c:
        sid = await c.start_session()
        notes = await c.run_turn(sid, "Hi")
        err = next(p for p in notes if "code" in p)
        assert err["code"] == code and err["data"]["retryable"] is retryable
        assert f"HTTP {status}" in err["message"] and error["message"] in err["message"]
        if status == 429:
            assert err["data"]["retryAfterMs"] == 60000
        assert [p["finishReason"] for p in notes if p.get("isFinal")] == ["error"]
        assert API_KEY not in frames_text(c)


async def test_rate_limit_then_success_is_invisible_to_the_client(upstream) -> None:
    """A 429 before the first chunk is retried; the client sees only the reply."""
    router, srv = upstream
    route = router.post(URL).mock(side_effect=[
        error_response(429, {"code": 429, "message": "Rate limit exceeded"}, {"retry-after": "0.5"}),
        streamed(plain_reply("Fine."))(None),
    ])
    async with WsClient.connect(srv.ws_url) as c:
        sid = await c.start_session()
        notes = await c.run_turn(sid, "Hi")
        assert not [p for p in notes if "code" in p]
        assert [p["chunk"] for p in notes if "chunk" in p] == ["Fine.", ""]
    assert route.call_count == 2


async def _start_hanging_turn(router: respx.Router, c: WsClient) -> tuple[str, str, list[PieceStream]]:
    streams: list[PieceStream] = []
    router.post(URL).mock(side_effect=streamed(sse(KEEPALIVE, text("Thinking "), text("very")), 4, "hang", streams))
    sid = await c.start_session()
    turn = await c.call("sendUserMessage", {"sessionId": sid, "content": "Long story please"})
    await c.wait_notification(lambda p: p.get("chunk") == "very")
    assert len(streams) == 1 and not streams[0].closed.is_set()
    return sid, turn["turnId"], streams


async def test_cancel_turn_closes_the_upstream_response_at_once(upstream) -> None:
    """cancelTurn mid-stream: the upstream response is closed before the response arrives."""
    router, srv = upstream
    async with WsClient.connect(srv.ws_url) as c:
        sid, turn_id, streams = await _start_hanging_turn(router, c)
        result = await c.call("cancelTurn", {"sessionId": sid})
        assert result == {"sessionId": sid, "cancelled": True, "turnId": turn_id}
        assert streams[0].closed.is_set()
        finals = [p for p in c.session_notes(sid) if p.get("isFinal")]
        assert [p["finishReason"] for p in finals] == ["cancelled"]
    await srv.wait_idle()


async def test_stop_session_closes_the_upstream_response_at_once(upstream) -> None:
    """stopSession mid-stream closes the upstream response before it is answered."""
    router, srv = upstream
    async with WsClient.connect(srv.ws_url) as c:
        sid, _, streams = await _start_hanging_turn(router, c)
        assert (await c.call("stopSession", {"sessionId": sid}))["status"] == "ended"
        assert streams[0].closed.is_set()
    await srv.wait_idle()


async def test_client_disconnect_closes_the_upstream_response(upstream) -> None:
    """A client vanishing mid-stream closes the upstream once its session is released."""
    router, srv = upstream
    async with WsClient.connect(srv.ws_url) as c:
        _, _, streams = await _start_hanging_turn(router, c)
    async with asyncio.timeout(5):
        await streams[0].closed.wait()
    await srv.wait_idle()


def test_openrouter_backend_without_key_refuses_to_start(monkeypatch) -> None:
    """ai.backend openrouter and no OPENROUTER_API_KEY: a clear configuration error."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        build_provider(make_settings(ai={"backend": "openrouter"}))


class KeepAlivesForever(PieceStream):
    """Only ``: OPENROUTER PROCESSING`` comments, every 20 ms, until closed."""

    async def __aiter__(self):
        while not self.closed.is_set():
            yield (KEEPALIVE + "\n\n").encode()
            await asyncio.sleep(0.02)


async def test_keepalives_do_not_count_as_first_chunk() -> None:
    """A stream of keep-alives only hits the first-chunk timeout; the upstream is closed."""
    router = respx.Router(assert_all_called=False)
    stream = KeepAlivesForever(b"")
    router.post(URL).mock(side_effect=lambda req: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=stream))
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    settings = make_settings(ai={"backend": "openrouter", "first_chunk_timeout_s": 0.2})
    async with serve(settings, make_provider(client=client)) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session()
            notes = await c.run_turn(sid, "Hi")
            err = next(p for p in notes if "code" in p)
            assert err["code"] == -32008 and err["data"] == {"retryable": True, "kind": "timeout"}
            assert [p["finishReason"] for p in notes if p.get("isFinal")] == ["error"]
            assert stream.closed.is_set()

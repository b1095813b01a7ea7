"""The provider over a real loopback socket (no mocks in httpx): chunked transfer
encoding, a connection cut mid-body, refused connections, and abort on close.

A raw asyncio server plays OpenRouter, writing the SSE body as HTTP/1.1 chunks of
a few bytes, so the real httpx/httpcore stack does the reading.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from server.loop.provider import Finish, TextDelta, ToolCall

from .streams import (
    DONE,
    KEEPALIVE,
    WEATHER_TOOL,
    SleepRecorder,
    call_args,
    call_start,
    collect,
    finish,
    make_provider,
    plain_reply,
    sse,
    tool_fragment,
    usage_chunk,
    user_request,
)


class RawUpstream:
    """One-response-per-connection HTTP/1.1 server writing a chunked SSE body."""

    def __init__(self, body: bytes, piece: int = 7, then: str = "end") -> None:
        self.body, self.piece, self.then = body, piece, then
        self.requests: list[tuple[bytes, bytes]] = []
        self.disconnected = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.connections += 1
        try:
            while True:  # keep-alive: one response per request on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.disconnected.set()
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append((head, await reader.readexactly(length)))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
                for i in range(0, len(self.body), self.piece):
                    part = self.body[i : i + self.piece]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0)
                if self.then == "end":
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                if self.then == "hang":
                    await reader.read()  # returns b"" once the client aborts
                    self.disconnected.set()
                return  # "cut": close mid-body
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            writer.close()

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:  # (Server.close_clients is 3.13+)
            writer.close()
        await self.server.wait_closed()


async def test_text_and_tool_call_over_a_real_socket() -> None:
    """Chunked bodies split into 7-byte HTTP chunks decode to the same events."""
    raw = '{"city": "Kraków"}'
    body = sse(KEEPALIVE, tool_fragment(call_start(0, "call_k", "get_weather")),
               *[tool_fragment(call_args(0, raw[i : i + 2])) for i in range(0, len(raw), 2)],
               finish("tool_calls"), usage_chunk("repeated_finish", "tool_calls"), DONE)
    async with RawUpstream(body) as up:
        provider = make_provider(base_url=up.base_url)
        events, err = await collect(provider, user_request(tools=[WEATHER_TOOL]))
        await provider.aclose()
    assert err is None
    assert [e for e in events if not isinstance(e, TextDelta)] == [
        ToolCall("call_k", "get_weather", {"city": "Kraków"}, raw), events[-1]]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    head, sent = up.requests[0]
    assert head.startswith(b"POST /api/v1/chat/completions HTTP/1.1")
    assert json.loads(sent)["tools"] == [WEATHER_TOOL]


async def test_connection_cut_mid_body_is_truncated() -> None:
    """The server closing mid chunked body: the real RemoteProtocolError maps to truncated."""
    body = plain_reply("Once", " upon", " a time")
    cut = body[: body.index(b"upon") + 2]
    async with RawUpstream(cut, then="cut") as up:
        provider = make_provider(base_url=up.base_url)
        events, err = await collect(provider, user_request())
        await provider.aclose()
    assert events == [TextDelta("Once")]
    assert err is not None and (err.kind, err.retryable) == ("truncated", True)


async def test_closing_the_stream_aborts_the_connection_at_once() -> None:
    """Closing the generator mid-stream closes the socket; the server sees EOF."""
    async with RawUpstream(sse(KEEPALIVE, *[{"choices": [{"index": 0, "delta": {"content": "tick "}}]}] * 3),
                           then="hang") as up:
        provider = make_provider(base_url=up.base_url)
        async with asyncio.timeout(3):
            async with aclosing(provider.stream(user_request())) as events:
                assert await anext(events) == TextDelta("tick ")
            await up.disconnected.wait()
        await provider.aclose()


async def test_connection_refused_is_unavailable_and_retried() -> None:
    """Nothing listening: retryable unavailable after max_retries attempts."""
    async with RawUpstream(b"") as up:
        base_url = up.base_url
    sleep = SleepRecorder()
    provider = make_provider(sleep, base_url=base_url, max_retries=1)
    events, err = await collect(provider, user_request())
    await provider.aclose()
    assert events == [] and err is not None and (err.kind, err.retryable) == ("unavailable", True)
    assert len(sleep.calls) == 1


async def test_a_finished_reply_returns_its_connection_to_the_pool() -> None:
    """After Finish the tail ([DONE], last chunk) is drained: the next step reuses the socket."""
    async with RawUpstream(plain_reply("Hi", " there"), piece=11) as up:
        provider = make_provider(base_url=up.base_url)
        for _ in range(3):
            async with aclosing(provider.stream(user_request())) as events:
                async for event in events:
                    if isinstance(event, Finish):
                        break  # what the loop does
        await provider.aclose()
    assert len(up.requests) == 3 and up.connections == 1

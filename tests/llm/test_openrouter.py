"""OpenRouterProvider against realistic streams replayed by respx, a few bytes per read."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx

from server.config import ConfigError, load_settings
from server.llm import OpenRouterConfig, OpenRouterProvider
from server.loop.conversation import Conversation
from server.loop.provider import (
    Finish,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    Usage,
)

from .streams import (
    API_KEY,
    BASE_URL,
    DONE,
    KEEPALIVE,
    TIME_TOOL,
    URL,
    USAGE,
    WEATHER_TOOL,
    PieceStream,
    SleepRecorder,
    call_args,
    call_start,
    chunk,
    collect,
    error_response,
    finish,
    make_provider,
    plain_reply,
    sse,
    sse_response,
    text,
    tool_fragment,
    usage_chunk,
    user_request,
)

FULL_USAGE = Usage(578, 52, 630)


@pytest.fixture
def router():
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def provider():
    p = make_provider()
    yield p
    await p.aclose()


def visible(events: list[Any]) -> list[Any]:
    """Events without the empty progress beats (the loop ignores empty text)."""
    return [e for e in events if not (isinstance(e, TextDelta) and not e.text)]


def sent_body(route: respx.Route, n: int = -1) -> dict[str, Any]:
    return json.loads(route.calls[n].request.content)


# ---------------------------------------------------------------------- success


@pytest.mark.parametrize("piece", [1, 3, 7, 64, 10**6])
async def test_plain_text_with_keepalives_and_multibyte_text(router, provider, piece: int) -> None:
    """Keep-alives before and between tokens are ignored; split UTF-8 survives; one Finish."""
    pieces = ["Het ", "weer: ", "25°C", " — ", "亚", " × 2 🌧"]
    body = sse(
        KEEPALIVE, KEEPALIVE, KEEPALIVE, text(""),
        text(pieces[0]), KEEPALIVE, text(pieces[1]), text(pieces[2]), KEEPALIVE, KEEPALIVE,
        *[text(p) for p in pieces[3:]],
        finish("stop"), usage_chunk("repeated_finish"), DONE,
    )
    route = router.post(URL).mock(side_effect=lambda req: sse_response(body, piece))
    events, err = await collect(provider, user_request())
    assert err is None
    assert events == [*(TextDelta(p) for p in pieces), Finish("stop", FULL_USAGE)]
    assert route.call_count == 1


async def test_request_body_and_headers(router, provider) -> None:
    """Model, messages, stream, usage, max_tokens always; sampling passed; headers set."""
    route = router.post(URL).mock(side_effect=lambda req: sse_response(plain_reply("Hi")))
    request = user_request(sampling={"temperature": 0.3, "seed": 7, "stop": ["\n\n"], "top_k": 5})
    events, err = await collect(provider, request)
    assert err is None and events[-1] == Finish("stop", FULL_USAGE)
    req = route.calls.last.request
    assert req.method == "POST" and str(req.url) == URL
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["http-referer"] == "https://app.example"
    assert req.headers["x-title"] == "AILoop Tests"
    assert req.headers["content-type"] == "application/json"
    assert sent_body(route) == {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "usage": {"include": True},
        "max_tokens": 1024,
        "temperature": 0.3,
        "seed": 7,
        "stop": ["\n\n"],
    }  # no tools declared: neither tools nor tool_choice; unknown top_k dropped


async def test_session_overrides_model_and_max_tokens_and_config_defaults_apply(router) -> None:
    """Config sampling defaults are sent; a session's model and max_tokens win."""
    provider = make_provider(temperature=0.7, top_p=0.9, tool_choice="none")
    route = router.post(URL).mock(side_effect=lambda req: sse_response(plain_reply("Hi")))
    await collect(provider, user_request(tools=[WEATHER_TOOL], model="anthropic/claude-sonnet-4.5",
                                         sampling={"max_tokens": 77, "temperature": None}))
    body = sent_body(route)
    assert body["model"] == "anthropic/claude-sonnet-4.5"
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (77, 0.7, 0.9)
    assert body["tools"] == [WEATHER_TOOL] and body["tool_choice"] == "none"
    await provider.aclose()


async def test_reasoning_deltas_are_separate_events(router, provider) -> None:
    """delta.reasoning becomes ReasoningDelta, never mixed into the text."""
    body = sse(
        KEEPALIVE,
        chunk({"reasoning": "Thinking about ", "reasoning_details": [{"type": "reasoning.text", "text": "Thinking about ", "index": 0}]}),
        chunk({"reasoning": "the answer.", "reasoning_details": [{"type": "reasoning.text", "text": "the answer.", "index": 0}]}),
        chunk({"reasoning_details": [{"type": "reasoning.text", "signature": "abc", "index": 0}]}),
        text("42"), finish("stop"), usage_chunk("repeated_finish"), DONE,
    )
    router.post(URL).mock(side_effect=lambda req: sse_response(body, 4))
    events, err = await collect(provider, user_request())
    assert err is None
    assert events == [ReasoningDelta("Thinking about "), ReasoningDelta("the answer."), TextDelta("42"),
                      Finish("stop", FULL_USAGE)]


async def test_one_tool_call_with_arguments_in_many_fragments(router, provider) -> None:
    """Fragments merge into one complete ToolCall with the exact argument string, once."""
    raw = '{"city": "São Paulo", "units": "°C"}'
    frags = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    body = sse(
        KEEPALIVE, KEEPALIVE,
        tool_fragment(call_start(0, "call_abc123", "get_weather")),
        *[tool_fragment(call_args(0, f)) for f in frags[:5]],
        KEEPALIVE,
        tool_fragment(call_args(0, "")),
        *[tool_fragment(call_args(0, f, type="function", id="")) for f in frags[5:]],
        finish("tool_calls", "tool_use"),
        usage_chunk("repeated_finish", "tool_calls"),  # repeats finish_reason: must not duplicate calls
        DONE,
    )
    route = router.post(URL).mock(side_effect=lambda req: sse_response(body, 5))
    events, err = await collect(provider, user_request(tools=[WEATHER_TOOL]))
    assert err is None
    assert visible(events) == [
        ToolCall("call_abc123", "get_weather", {"city": "São Paulo", "units": "°C"}, raw),
        Finish("tool_calls", FULL_USAGE),
    ]
    # Each fragment-carrying chunk is a progress beat for the loop's idle timeout.
    assert sum(1 for e in events if e == TextDelta("")) == len(frags) + 2
    assert sent_body(route)["tools"] == [WEATHER_TOOL]
    assert sent_body(route)["tool_choice"] == "auto"


async def test_two_parallel_interleaved_tool_calls(router, provider) -> None:
    """Calls interleave and share deltas; merged by index, id/name never overwritten."""
    body = sse(
        text("Let me check both."),
        tool_fragment(call_start(0, "call_w", "get_weather"), call_start(1, "call_t", "get_time")),
        tool_fragment(call_args(1, '{"tz":')),
        tool_fragment(call_args(0, '{"ci')),
        tool_fragment(call_args(0, 'ty":"Oslo"}', id="", function_name="")),
        tool_fragment({"index": 1, "type": "function", "function": {"name": "", "arguments": ' "Europe/Oslo"}'}}),
        finish("tool_calls"), usage_chunk("repeated_finish", "tool_calls"), DONE,
    )
    router.post(URL).mock(side_effect=lambda req: sse_response(body, 3))
    events, err = await collect(provider, user_request(tools=[WEATHER_TOOL, TIME_TOOL]))
    assert err is None
    assert visible(events) == [
        TextDelta("Let me check both."),
        ToolCall("call_w", "get_weather", {"city": "Oslo"}, '{"city":"Oslo"}'),
        ToolCall("call_t", "get_time", {"tz": "Europe/Oslo"}, '{"tz": "Europe/Oslo"}'),
        Finish("tool_calls", FULL_USAGE),
    ]


async def test_parallel_calls_reusing_index_zero_are_split_by_id(router, provider) -> None:
    """Some upstreams reuse index 0 for every call: a new id starts a new call."""
    body = sse(
        tool_fragment(call_start(0, "call_1", "get_weather", '{"city":"Rome"}')),
        tool_fragment(call_start(0, "call_2", "get_weather", '{"city":')),
        tool_fragment(call_args(0, '"Paris"}')),
        finish("tool_calls"), DONE,
    )
    router.post(URL).mock(side_effect=lambda req: sse_response(body, 8))
    events, err = await collect(provider, user_request(tools=[WEATHER_TOOL]))
    assert err is None
    assert visible(events) == [
        ToolCall("call_1", "get_weather", {"city": "Rome"}, '{"city":"Rome"}'),
        ToolCall("call_2", "get_weather", {"city": "Paris"}, '{"city":"Paris"}'),
        Finish("tool_calls", None),
    ]


async def test_tool_call_without_arguments_gets_empty_object(router, provider) -> None:
    """An empty argument string becomes {} (and "{}" in history, which upstreams accept)."""
    body = sse(tool_fragment(call_start(0, "call_n", "get_time")), finish("tool_calls"), DONE)
    router.post(URL).mock(side_effect=lambda req: sse_response(body))
    events, _ = await collect(provider, user_request(tools=[TIME_TOOL]))
    assert visible(events)[0] == ToolCall("call_n", "get_time", {}, "{}")


async def test_invalid_tool_arguments_cut_by_max_tokens_is_an_error(router, provider) -> None:
    """Arguments that are not complete JSON are an error, not a call with junk."""
    body = sse(tool_fragment(call_start(0, "call_x", "get_weather", '{"city": "Os')), finish("length"), DONE)
    router.post(URL).mock(side_effect=lambda req: sse_response(body))
    events, err = await collect(provider, user_request(tools=[WEATHER_TOOL]))
    assert err is not None and err.kind == "protocol" and "max_tokens" in err.message


@pytest.mark.parametrize("shape", ["empty_choices", "null_finish", "repeated_finish", "in_finish_chunk"])
async def test_every_usage_chunk_shape(router, provider, shape: str) -> None:
    """Usage is read from every shape of the final chunk; Finish comes exactly once."""
    if shape == "in_finish_chunk":
        tail: tuple[Any, ...] = (finish("stop", usage=USAGE), DONE)
    else:
        tail = (finish("stop"), usage_chunk(shape), DONE)
    body = sse(KEEPALIVE, text("Hello"), text(" there"), *tail)
    router.post(URL).mock(side_effect=lambda req: sse_response(body, 6))
    events, err = await collect(provider, user_request())
    assert err is None
    assert events == [TextDelta("Hello"), TextDelta(" there"), Finish("stop", FULL_USAGE)]


async def test_no_usage_at_all_still_finishes_on_done(router, provider) -> None:
    """An upstream that never reports usage finishes with usage None."""
    body = sse(text("Hi"), finish("stop"), DONE)
    router.post(URL).mock(side_effect=lambda req: sse_response(body))
    events, err = await collect(provider, user_request())
    assert err is None and events == [TextDelta("Hi"), Finish("stop", None)]


async def test_length_and_content_filter_finish_reasons(router, provider) -> None:
    """length is passed on; content_filter ends the reply as stop."""
    for reason, expected in (("length", "length"), ("content_filter", "stop")):
        body = sse(text("Hi"), finish(reason), usage_chunk("repeated_finish", reason), DONE)
        router.post(URL).mock(side_effect=lambda req, body=body: sse_response(body))
        events, err = await collect(provider, user_request())
        assert err is None and events[-1] == Finish(expected, FULL_USAGE)


async def test_follow_up_request_after_tool_results(router, provider) -> None:
    """History built by the loop's Conversation is what OpenRouter needs, with tools repeated."""
    raw = '{"city":"Oslo"}'
    first = sse(tool_fragment(call_start(0, "call_w", "get_weather", raw)), finish("tool_calls"),
                usage_chunk("repeated_finish", "tool_calls"), DONE)
    second = sse(text("It is 3°C in Oslo."), finish("stop"), usage_chunk("repeated_finish"), DONE)
    route = router.post(URL).mock(side_effect=[sse_response(first), sse_response(second)])
    conv = Conversation("Be brief.", 50)
    conv.add_user("Weather in Oslo?")
    events, _ = await collect(provider, ModelRequest(conv.to_openai(), [WEATHER_TOOL]))
    calls = [e for e in events if isinstance(e, ToolCall)]
    conv.add_assistant("", calls)
    conv.add_tool_result("call_w", {"temp_c": 3})
    events, err = await collect(provider, ModelRequest(conv.to_openai(), [WEATHER_TOOL]))
    assert err is None and events[0] == TextDelta("It is 3°C in Oslo.")
    body = sent_body(route, 1)
    assert body["messages"][2:] == [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": raw}}]},
        {"role": "tool", "tool_call_id": "call_w", "content": '{"temp_c":3}'},
    ]
    assert body["tools"] == [WEATHER_TOOL] and body["tool_choice"] == "auto"


# ---------------------------------------------------------------------- failures in the stream


async def test_mid_stream_error_chunk(router, provider) -> None:
    """A top-level error object after output is a midstream failure; no retry."""
    err_chunk = chunk({"content": ""}, finish="error",
                      error={"code": "server_error", "message": "Provider disconnected unexpectedly"})
    body = sse(text("The answer"), text(" is"), err_chunk, DONE)
    route = router.post(URL).mock(side_effect=lambda req: sse_response(body, 4))
    events, err = await collect(provider, user_request())
    assert events == [TextDelta("The answer"), TextDelta(" is")]
    assert err is not None and (err.kind, err.retryable) == ("midstream", True)
    assert "Provider disconnected unexpectedly" in err.message
    assert route.call_count == 1


async def test_error_chunk_as_first_event_is_retried(router) -> None:
    """An error before any output is mapped by its code and retried like a status."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    rate = chunk({"content": ""}, finish="error",
                 error={"code": 429, "message": "Rate limit exceeded", "metadata": {"error_type": "rate_limit_exceeded"}})
    route = router.post(URL).mock(side_effect=[sse_response(sse(KEEPALIVE, rate)), sse_response(plain_reply("ok"))])
    events, err = await collect(provider, user_request())
    assert err is None and visible(events) == [TextDelta("ok"), Finish("stop", FULL_USAGE)]
    assert route.call_count == 2 and len(sleep.calls) == 1
    await provider.aclose()


async def test_finish_reason_error_without_error_object(router, provider) -> None:
    """finish_reason "error" alone is a failure, even with no error object."""
    body = sse(text("Partial"), finish("error", "MALFORMED_FUNCTION_CALL"), usage_chunk("repeated_finish", "error"), DONE)
    route = router.post(URL).mock(side_effect=lambda req: sse_response(body, 4))
    events, err = await collect(provider, user_request())
    assert events == [TextDelta("Partial")]
    assert err is not None and (err.kind, err.retryable) == ("midstream", True)
    assert "MALFORMED_FUNCTION_CALL" in err.message and route.call_count == 1


@pytest.mark.parametrize("then", ["eof", "drop"])
async def test_truncated_stream_after_output(router, provider, then: str) -> None:
    """No finish_reason and no [DONE]: truncated, whether EOF is clean or the connection drops."""
    body = sse(KEEPALIVE, text("Once upon"), text(" a time")) + b'data: {"id":"gen-1","choi'
    route = router.post(URL).mock(side_effect=lambda req: sse_response(body, 5, then))
    events, err = await collect(provider, user_request())
    assert events == [TextDelta("Once upon"), TextDelta(" a time")]
    assert err is not None and (err.kind, err.retryable) == ("truncated", True)
    assert route.call_count == 1  # output reached the consumer: never retried


async def test_truncated_before_any_output_is_retried_then_reported(router) -> None:
    """A stream cut before its first chunk is retried up to max_retries, then truncated."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=lambda req: sse_response(sse(KEEPALIVE, KEEPALIVE), 4, "drop"))
    events, err = await collect(provider, user_request())
    assert events == [] and err is not None and err.kind == "truncated"
    assert route.call_count == 3 and len(sleep.calls) == 2
    await provider.aclose()


async def test_drop_after_finish_loses_only_usage(router, provider) -> None:
    """A connection cut after finish_reason is still a complete reply."""
    body = sse(text("Done."), finish("stop"))
    router.post(URL).mock(side_effect=lambda req: sse_response(body, 7, "drop"))
    events, err = await collect(provider, user_request())
    assert err is None and events == [TextDelta("Done."), Finish("stop", None)]


async def test_invalid_json_event_is_a_protocol_error(router, provider) -> None:
    """A data payload that is not JSON is never silently skipped."""
    body = b"data: {not json}\n\n"
    router.post(URL).mock(side_effect=lambda req: sse_response(body))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable) == ("protocol", False)


# ---------------------------------------------------------------------- failures before the stream


async def test_429_with_retry_after_then_success(router) -> None:
    """429 is retried after the Retry-After delay (recorded, not slept), same body resent."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=[
        error_response(429, {"code": 429, "message": "Rate limit exceeded"}, {"retry-after": "0.25"}),
        sse_response(plain_reply("Hello")),
    ])
    events, err = await collect(provider, user_request())
    assert err is None and events == [TextDelta("Hello"), Finish("stop", FULL_USAGE)]
    assert route.call_count == 2
    assert sleep.calls == [0.25]
    assert route.calls[0].request.content == route.calls[1].request.content
    await provider.aclose()


async def test_429_with_long_retry_after_is_reported_not_waited(router) -> None:
    """A Retry-After beyond retry_max_delay_s goes to the client as a hint instead."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=lambda req: error_response(
        429, {"code": 429, "message": "Rate limit exceeded"}, {"retry-after": "30"}))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable, err.retry_after_s, err.status) == ("rate_limit", True, 30.0, 429)
    assert route.call_count == 1 and sleep.calls == []
    await provider.aclose()


async def test_402_insufficient_credits_is_not_retried(router) -> None:
    """402 for credits: payment, not retryable, one request only."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=lambda req: error_response(402, {
        "code": 402,
        "message": "This request requires more credits, or fewer max_tokens. You requested up to 1024 tokens, but can only afford 300.",
        "metadata": {"limit_source": "openrouter_credits", "remedy_hint": "lower max_tokens"},
    }))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable, err.status) == ("payment", False, 402)
    assert "requires more credits" in err.message
    assert route.call_count == 1 and sleep.calls == []
    await provider.aclose()


async def test_402_in_flight_budget_is_retried(router) -> None:
    """402 for the in-flight budget honours Retry-After and succeeds on retry."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=[
        error_response(402, {"code": 402, "message": "In-flight budget exhausted", "metadata": {
            "limit_source": "openrouter_in_flight_budget", "reason": "in_flight_budget_exhausted"}},
            {"retry-after": "0.1"}),
        sse_response(plain_reply("ok")),
    ])
    events, err = await collect(provider, user_request())
    assert err is None and events[-1] == Finish("stop", FULL_USAGE)
    assert route.call_count == 2 and sleep.calls == [0.1]
    await provider.aclose()


async def test_503_retried_with_exponential_backoff_then_reported(router) -> None:
    """503 is retried max_retries times with doubling delays, then reported as unavailable."""
    sleep = SleepRecorder()
    provider = make_provider(sleep, max_retries=3, retry_base_delay_s=0.002)
    route = router.post(URL).mock(side_effect=lambda req: error_response(503, {"code": 503, "message": "No instances available"}))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable, err.status) == ("unavailable", True, 503)
    assert route.call_count == 4
    assert sleep.calls == pytest.approx([0.001, 0.002, 0.004])  # equal jitter at its minimum
    await provider.aclose()


async def test_backoff_jitter_and_cap(router) -> None:
    """Jitter spreads each delay over [backoff/2, backoff); the cap bounds it."""
    sleep = SleepRecorder()
    config = OpenRouterConfig(base_url=BASE_URL, max_retries=4, retry_base_delay_s=0.01, retry_max_delay_s=0.02)
    provider = OpenRouterProvider(config, API_KEY, sleep=sleep, jitter=lambda: 0.999)
    router.post(URL).mock(side_effect=lambda req: error_response(502, {"code": 502, "message": "bad gateway"}))
    await collect(provider, user_request())
    assert sleep.calls == pytest.approx([0.009995, 0.01999, 0.01999, 0.01999])
    await provider.aclose()


async def test_401_is_not_retried(router) -> None:
    """401: auth error, not retryable, a single request."""
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    route = router.post(URL).mock(side_effect=lambda req: error_response(401, {"code": 401, "message": "No auth credentials found"}))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable, err.status) == ("auth", False, 401)
    assert "No auth credentials found" in err.message
    assert route.call_count == 1 and sleep.calls == []
    await provider.aclose()


async def test_200_json_error_instead_of_stream(router, provider) -> None:
    """A 200 with a JSON error body (not an event stream) is mapped, not parsed as SSE."""
    router.post(URL).mock(side_effect=lambda req: httpx.Response(
        200, json={"error": {"code": 400, "message": "Invalid model specified"}}))
    events, err = await collect(provider, user_request())
    assert err is not None and err.kind == "bad_request" and "Invalid model" in err.message


async def test_connection_refused_and_connect_timeout(router) -> None:
    """Transport failures before the response are retryable and retried."""
    sleep = SleepRecorder()
    provider = make_provider(sleep, max_retries=1)
    route = router.post(URL).mock(side_effect=[httpx.ConnectError("refused"), sse_response(plain_reply("ok"))])
    events, err = await collect(provider, user_request())
    assert err is None and route.call_count == 2
    router.post(URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    events, err = await collect(provider, user_request())
    assert err is not None and (err.kind, err.retryable) == ("timeout", True)
    assert "within 1s" in err.message
    await provider.aclose()


async def test_read_timeout_mid_stream(router, provider) -> None:
    """A socket read timeout after output is a retryable midstream failure."""
    class Stall(PieceStream):
        async def __aiter__(self):
            yield sse(text("Hi"))
            raise httpx.ReadTimeout("read timed out")

    router.post(URL).mock(side_effect=lambda req: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Stall(b"")))
    events, err = await collect(provider, user_request())
    assert events == [TextDelta("Hi")] and err is not None and (err.kind, err.retryable) == ("midstream", True)


# ---------------------------------------------------------------------- cancellation


async def test_closing_the_generator_closes_the_upstream_response(router, provider) -> None:
    """aclose() of the stream (what the loop does on cancel) closes the response at once."""
    streams: list[PieceStream] = []

    def respond(req: httpx.Request) -> httpx.Response:
        stream = PieceStream(sse(KEEPALIVE, text("Thinking"), text(" hard")), 4, then="hang")
        streams.append(stream)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    router.post(URL).mock(side_effect=respond)
    async with asyncio.timeout(2):
        async with aclosing(provider.stream(user_request())) as events:
            assert await anext(events) == TextDelta("Thinking")
            assert not streams[0].closed.is_set()
        assert streams[0].closed.is_set()


async def test_cancelling_the_consuming_task_closes_the_upstream_response(router, provider) -> None:
    """Task cancellation while waiting on the upstream closes the response too."""
    stream = PieceStream(sse(text("Hello")), 3, then="hang")
    router.post(URL).mock(side_effect=lambda req: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=stream))
    got_text = asyncio.Event()

    async def consume() -> None:
        async with aclosing(provider.stream(user_request())) as events:
            async for _ in events:
                got_text.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(2):
        await got_text.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.closed.is_set()


async def test_cancel_during_retry_backoff_sends_nothing_more(router) -> None:
    """Cancelling while waiting to retry stops at once; no further request is made."""
    started = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        started.set()
        await asyncio.sleep(3600)

    provider = make_provider(slow_sleep)
    route = router.post(URL).mock(side_effect=lambda req: error_response(503, {"code": 503, "message": "down"}))
    task = asyncio.create_task(collect(provider, user_request()))
    async with asyncio.timeout(2):
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert route.call_count == 1
    await provider.aclose()


# ---------------------------------------------------------------------- key hygiene and settings


def _texts(exc: BaseException | None) -> list[str]:
    out: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out += [str(exc), repr(exc), *(str(a) for a in exc.args)]
        exc = exc.__cause__ or exc.__context__
    return out


async def test_api_key_never_in_errors_or_logs(router, caplog) -> None:
    """Across failures -- even an upstream echoing the key -- the key appears nowhere."""
    caplog.set_level(logging.DEBUG)
    sleep = SleepRecorder()
    provider = make_provider(sleep)
    scenarios = [
        error_response(401, {"code": 401, "message": f"Invalid API key {API_KEY}"}),
        error_response(400, {"code": 400, "message": f"bad header Authorization: Bearer {API_KEY}"}),
        sse_response(sse(text("x"), chunk(error={"code": API_KEY, "message": f"upstream saw {API_KEY}"}))),
        sse_response(sse(text("x"), finish("error", f"native {API_KEY}"))),
        httpx.Response(200, headers={"content-type": "text/plain"}, content=f"key {API_KEY}".encode()),
    ]
    errors: list[ProviderError] = []
    for response in scenarios:
        router.post(URL).mock(return_value=response)
        _, err = await collect(provider, user_request())
        assert err is not None
        errors.append(err)
    router.post(URL).mock(side_effect=httpx.ConnectError(f"refused for {API_KEY}"))
    _, err = await collect(provider, user_request())
    assert err is not None
    errors.append(err)
    assert "[redacted]" in errors[0].message
    for err in errors:
        for t in _texts(err):
            assert API_KEY not in t
    assert caplog.records and API_KEY not in caplog.text
    assert API_KEY not in repr(provider) and API_KEY not in repr(provider.config)
    await provider.aclose()


def test_from_settings_requires_the_key(monkeypatch) -> None:
    """No OPENROUTER_API_KEY: a clear ConfigError naming the variable."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        OpenRouterProvider.from_settings(load_settings())
    monkeypatch.setenv("OPENROUTER_API_KEY", "   ")
    with pytest.raises(ConfigError):
        OpenRouterProvider.from_settings(load_settings())


async def test_from_settings_reads_the_section_and_env(monkeypatch) -> None:
    """Settings (file, then AILOOP_OPENROUTER__* overrides) reach the provider."""
    monkeypatch.setenv("OPENROUTER_API_KEY", API_KEY)
    monkeypatch.setenv("AILOOP_OPENROUTER__MAX_RETRIES", "5")
    monkeypatch.setenv("AILOOP_OPENROUTER__HTTP_REFERER", "https://env.example")
    settings = load_settings(openrouter={"base_url": BASE_URL, "model": "m/x", "max_connections": 7})
    provider = OpenRouterProvider.from_settings(settings)
    try:
        assert provider.name == "openrouter" and provider.default_model == "m/x"
        assert provider.config.max_retries == 5 and provider.config.http_referer == "https://env.example"
        assert provider.config.url == BASE_URL + "/chat/completions"
        assert provider.config.limits.max_connections == 7
        assert API_KEY not in str(settings.openrouter_api_key)
    finally:
        await provider.aclose()


async def test_aclose_closes_the_shared_client() -> None:
    """aclose() closes the pooled client the provider was given (or built)."""
    client = httpx.AsyncClient()
    provider = OpenRouterProvider(OpenRouterConfig(), API_KEY, client=client)
    await provider.aclose()
    assert client.is_closed

"""The OpenAI-compatible HTTP face on loopback, consumed with httpx + httpx-sse, and
compared with the in-process provider."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from simulator import SimulatorConfig, SimulatorProvider
from tests.simulator.helpers import Decoded, assistant, calls_of, decode_sse, results, run, text_of, user

IN_PROCESS = SimulatorConfig(scenario="tools", seed=11)


async def sse(client: httpx.AsyncClient, url: str, body: dict[str, Any], path: str = "/api/v1/chat/completions") -> Decoded:
    d = Decoded()
    async with aconnect_sse(client, "POST", url + path, json={**body, "stream": True}) as es:
        assert es.response.status_code == 200
        assert es.response.headers["content-type"] == "text/event-stream"
        async for ev in es.aiter_sse():
            if ev.data == "[DONE]":
                d.done = True
                break
            d.feed(json.loads(ev.data))
    return d


def history_entry(d: Decoded) -> dict[str, Any]:
    """The assistant message for the next request, as issue 4's client builds it."""
    msg: dict[str, Any] = {"role": "assistant", "content": d.content or None}
    if d.calls:
        msg["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in d.call_list()]
    return msg


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def test_streamed_reply_matches_in_process(server_a, client):
    messages = [user("Hello simulator, how are you today?")]
    d = await sse(client, server_a.url, {"model": "sim/any", "messages": messages})
    local = await run(SimulatorProvider(IN_PROCESS), messages)
    assert d.content == text_of(local) == "You said: Hello simulator, how are you today?"
    assert d.chunks == 1 + sum(1 for e in local if type(e).__name__ == "TextDelta") + 2  # opening, text, finish, usage
    assert d.finish == "stop" and d.finish_count == 1 and d.done and len(d.ids) == 1
    assert d.usage["completion_tokens"] == local[-1].usage.completion_tokens
    assert d.usage["total_tokens"] == local[-1].usage.total_tokens


async def test_streamed_parallel_tool_calls_match_in_process(server_a, client):
    """Two parallel calls whose fragments interleave; then the follow-up over HTTP."""
    messages = [user("compare apples and pears")]
    d = await sse(client, server_a.url, {"messages": messages, "tools": []})
    local = await run(SimulatorProvider(IN_PROCESS), messages)
    assert d.call_list() == [(c.id, c.name, c.raw_arguments) for c in calls_of(local)]
    assert [json.loads(a) for _, _, a in d.call_list()] == [{"query": "apples"}, {"query": "pears"}]
    assert d.finish == "tool_calls" and d.done
    convo = [*messages, history_entry(d)]
    convo += [{"role": "tool", "tool_call_id": i, "content": f"{json.loads(a)['query']}: fruit"} for i, _, a in d.call_list()]
    follow = await sse(client, server_a.url, {"messages": convo})
    local_convo = [*messages, assistant(local), *results(calls_of(local), lambda c: f"{c.arguments['query']}: fruit")]
    local_follow = await run(SimulatorProvider(IN_PROCESS), local_convo)
    assert follow.content == text_of(local_follow) == (
        "Compared apples and pears.\nTool lookup returned: apples: fruit\nTool lookup returned: pears: fruit")


async def test_sim_tool_pair_and_non_streaming(server_a, client):
    messages = [user('/sim tool get_a {"n": 1}\n/sim tool get_b {"s": "ü"}')]
    d = await sse(client, server_a.url, {"messages": messages}, path="/v1/chat/completions")
    local = await run(SimulatorProvider(IN_PROCESS), messages)
    assert d.call_list() == [(c.id, c.name, c.raw_arguments) for c in calls_of(local)]
    r = await client.post(server_a.url + "/api/v1/chat/completions", json={"messages": messages})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["content"] is None and body["choices"][0]["finish_reason"] == "tool_calls"
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in msg["tool_calls"]] == d.call_list()


async def test_keepalive_before_first_chunk_and_done(server_a, client):
    r = await client.post(server_a.url + "/api/v1/chat/completions", json={"stream": True, "messages": [user("hi")]})
    raw = r.content
    assert raw.startswith(b": OPENROUTER PROCESSING\n\n") and raw.endswith(b"data: [DONE]\n\n")
    d = decode_sse(raw)
    assert d.comments >= 2 and d.content == "You said: hi"  # 30 ms pending, a comment every 10 ms


@pytest.mark.parametrize("kind,status,retry_after", [("rate_limit", 429, "1"), ("payment", 402, None), ("unavailable", 503, None)])
async def test_http_errors(server_a, client, kind, status, retry_after):
    r = await client.post(server_a.url + "/api/v1/chat/completions",
                          json={"stream": True, "messages": [user(f"x\n/sim error {kind}")]})
    assert r.status_code == status and r.headers.get("retry-after") == retry_after
    assert r.json()["error"]["code"] == status


async def test_midstream_error_chunk(server_a, client):
    messages = [user("a b c d e f\n/sim error midstream")]
    d = await sse(client, server_a.url, {"messages": messages})
    local = await run(SimulatorProvider(IN_PROCESS), messages)
    assert d.content == text_of(local) and d.finish == "error" and d.error["code"] == 502 and not d.done


async def test_dropped_connection(server_a, client):
    chunks = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", server_a.url + "/api/v1/chat/completions",
                                 json={"stream": True, "messages": [user("a b c d\n/sim error drop")]}) as r:
            async for piece in r.aiter_bytes():
                chunks.append(piece)
    raw = b"".join(chunks)
    assert raw.count(b"data: {") == 4 and b"finish_reason\":\"" not in raw and b"[DONE]" not in raw
    # the server is fine afterwards
    assert (await client.get(server_a.url + "/health")).json()["status"] == "ok"


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"messages": []}, "'messages' is required"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [user("x"), {"role": "tool", "tool_call_id": "nope", "content": "r"}]}, "does not answer"),
        ({"messages": [user("x")], "tools": [{"type": "function"}]}, "tools[0]"),
        ({"messages": [user("x")], "stream": "yes"}, "'stream' must be a boolean"),
    ],
)
async def test_bad_requests_are_400(server_a, client, body, fragment):
    r = await client.post(server_a.url + "/api/v1/chat/completions", json=body)
    assert r.status_code == 400 and fragment in r.json()["error"]["message"]


async def test_invalid_json_and_models(server_a, client):
    r = await client.post(server_a.url + "/api/v1/chat/completions", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    models = (await client.get(server_a.url + "/api/v1/models")).json()
    assert models["data"][0]["id"] == "simulator-1"

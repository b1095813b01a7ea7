"""JSON-RPC 2.0 to the letter, over a real socket (issue 2 §3, requirements RPC-1..7)."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.support import WsClient, serve, make_settings


async def _ok_after(c: WsClient) -> None:
    """The connection still works."""
    r = await c.call("initialize", {})
    assert r["protocolVersion"] == 1


@pytest.mark.parametrize("frame", ["{", "not json", '{"jsonrpc": "2.0", "method": "initialize", "id": 1,}', "NaN", '{"a": Infinity}', '"unterminated', "[" * 100000])
async def test_parse_error_has_null_id_and_connection_survives(server, frame):
    async with WsClient.connect(server.ws_url) as c:
        await c.send_raw(frame)
        resp = await c.next_frame()
        assert resp["id"] is None and resp["error"]["code"] in (-32700, -32600)
        await _ok_after(c)


@pytest.mark.parametrize("message, reply_id", [
    ({"jsonrpc": "1.0", "id": 1, "method": "initialize"}, 1),
    ({"id": 2, "method": "initialize"}, 2),
    ({"jsonrpc": "2.0", "id": 3}, 3),
    ({"jsonrpc": "2.0", "id": 4, "method": 7}, 4),
    ({"jsonrpc": "2.0", "id": True, "method": "initialize"}, None),
    ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "initialize"}, None),
    ({"jsonrpc": "2.0", "id": [1], "method": "initialize"}, None),
    ({"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": "x"}, 5),
    ({"jsonrpc": "2.0", "id": 6, "method": "initialize", "extra": 1}, 6),
    (1, None), ("text", None), (None, None),
])
async def test_invalid_request(server, message, reply_id):
    async with WsClient.connect(server.ws_url) as c:
        await c.send_json(message)
        resp = await c.next_frame()
        assert resp == {"jsonrpc": "2.0", "id": reply_id, "error": resp["error"]}
        assert resp["error"]["code"] == -32600
        await _ok_after(c)


async def test_method_not_found_and_invalid_params(server):
    async with WsClient.connect(server.ws_url) as c:
        r = await c.request("noSuchMethod", {}, expect_error=True)
        assert r["error"]["code"] == -32601
        r = await c.request("rpc.discover", None, expect_error=True)
        assert r["error"]["code"] == -32601
        for params in [None, [], ["s_x"], {"sessionId": 1}, {"sessionId": "s"}, {"sessionId": "s", "content": ""},
                       {"sessionId": "s", "content": "x", "extra": True}, {"sessionId": "s", "content": 5}]:
            r = await c.request("sendUserMessage", params, expect_error=True)
            assert r["error"]["code"] == -32602, (params, r)
            assert "errors" in r["error"]["data"]
        r = await c.request("startSession", {"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, expect_error=True)
        assert r["error"]["code"] == -32602
        r = await c.request("startSession", {"sampling": {"temperature": "hot"}}, expect_error=True)
        assert r["error"]["code"] == -32602
        r = await c.request("provideToolResult", {"sessionId": "s", "toolCallId": "t", "result": 1, "isError": "yes"}, expect_error=True)
        assert r["error"]["code"] == -32602
        r = await c.request("initialize", {"protocolVersion": 99}, expect_error=True)
        assert r["error"]["code"] == -32009 and r["error"]["data"]["supported"] == [1]
        r = await c.request("sendUserMessage", {"sessionId": "s_unknown", "content": "x"}, expect_error=True)
        assert r["error"]["code"] == -32001
        await _ok_after(c)


@pytest.mark.parametrize("rid", ["abc", "", 0, -5, 2**70, 1.5, None])
async def test_id_types_are_echoed(server, rid):
    async with WsClient.connect(server.ws_url) as c:
        r = await c.request("initialize", {}, id=rid)
        assert r["id"] == rid and "result" in r


async def test_notifications_get_no_response_but_are_executed(server):
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session()
        await c.send_json({"jsonrpc": "2.0", "method": "initialize"})
        await c.send_json({"jsonrpc": "2.0", "method": "noSuchMethod"})
        await c.send_json({"jsonrpc": "2.0", "method": "sendUserMessage", "params": {"sessionId": sid, "content": "quiet"}})
        await c.wait_status(sid, "idle")
        await _ok_after(c)
        assert all("method" in f or f.get("id") is not None for f in c.frames)
        assert len([f for f in c.frames if "method" not in f]) == 2  # startSession + the last initialize


async def test_batches(server):
    async with WsClient.connect(server.ws_url) as c:
        await c.send_raw("[]")
        r = await c.next_frame()
        assert r["id"] is None and r["error"]["code"] == -32600  # a single response, not an array
        await c.send_raw("[1, 2]")
        r = await c.next_frame()
        assert isinstance(r, list) and [x["error"]["code"] for x in r] == [-32600, -32600]
        await c.send_json([
            {"jsonrpc": "2.0", "id": "a", "method": "initialize"},
            {"jsonrpc": "2.0", "method": "initialize"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            {"foo": "bar"},
            {"jsonrpc": "2.0", "id": "c", "method": "startSession", "params": {}},
        ])
        r = await c.next_frame()
        assert isinstance(r, list) and len(r) == 4
        by_id = {x["id"]: x for x in r}
        assert "result" in by_id["a"] and by_id["b"]["error"]["code"] == -32601 and by_id[None]["error"]["code"] == -32600
        sid = by_id["c"]["result"]["sessionId"]
        await c.wait_status(sid, "started")  # ORD-2 holds for a session started in a batch
        n = len(c.frames)
        await c.send_json([{"jsonrpc": "2.0", "method": "initialize"}, {"jsonrpc": "2.0", "method": "initialize"}])
        await _ok_after(c)
        assert len(c.frames) == n + 1  # the all-notification batch got nothing
        # A batch that starts a turn: the turn's output follows the batch response.
        await c.send_json([{"jsonrpc": "2.0", "id": "m", "method": "sendUserMessage", "params": {"sessionId": sid, "content": "batched"}},
                           {"jsonrpc": "2.0", "id": "m2", "method": "sendUserMessage", "params": {"sessionId": sid, "content": "twice"}}])
        await c.wait_status(sid, "idle")
        batch = next(f for f in c.frames if isinstance(f, list) and f[0].get("id") == "m")
        assert "result" in batch[0] and batch[1]["error"]["code"] == -32002
        i = c.frames.index(batch)
        assert not any(f.get("params", {}).get("turnId") for f in c.frames[n:i] if isinstance(f, dict))


async def test_invalid_utf8_text_frame_closes_with_1007(server):
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', text=True)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd.code == 1007
    await server.wait_idle()


async def test_batch_size_limit(server):
    async with WsClient.connect(server.ws_url) as c:
        await c.send_json([{"jsonrpc": "2.0", "id": i, "method": "initialize"} for i in range(65)])
        r = await c.next_frame()
        assert r["id"] is None and r["error"]["code"] == -32600


async def test_binary_frame_gets_error_and_connection_survives(server):
    async with WsClient.connect(server.ws_url) as c:
        await c.send_raw(b'{"jsonrpc": "2.0", "id": 1, "method": "initialize"}')
        r = await c.next_frame()
        assert r["id"] is None and r["error"]["code"] == -32600
        await _ok_after(c)


async def test_oversize_frame_closes_with_1009():
    async with serve(make_settings(limits={"max_frame_bytes": 4096})) as srv:
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send('{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "' + "x" * 5000 + '"}}}')
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd.code == 1009
        await srv.wait_idle()


async def test_message_length_limit():
    async with serve(make_settings(limits={"max_message_chars": 10})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session()
            r = await c.request("sendUserMessage", {"sessionId": sid, "content": "x" * 11}, expect_error=True)
            assert r["error"]["code"] == -32602 and r["error"]["data"]["limit"] == "maxMessageChars"


async def test_initialize_advertises_limits_and_capabilities(server):
    async with WsClient.connect(server.ws_url) as c:
        r = await c.call("initialize", {"protocolVersion": 1, "clientInfo": {"name": "test", "version": "1"}})
        assert r["capabilities"]["backends"] == ["simulator"]
        assert r["limits"]["maxFrameBytes"] == 1048576 and r["limits"]["maxBatchSize"] == 64


async def test_healthz(server):
    h = await server.health()
    assert h["status"] == "ok" and h["sessions"] == 0 and h["connections"] == 0
    async with WsClient.connect(server.ws_url) as c:
        await c.start_session()
        h = await server.health()
        assert h["sessions"] == 1 and h["connections"] == 1


async def test_json_schema_views_of_numbers_and_nulls(server):
    """RPC-5: 1.0 is an integer; null is not a value of an optional field."""
    async with WsClient.connect(server.ws_url) as c:
        r = await c.call("initialize", {"protocolVersion": 1.0})
        assert r["protocolVersion"] == 1
        await c.call("startSession", {"sampling": {"maxTokens": 5.0, "seed": 3.0}})
        for params in [{"systemPrompt": None}, {"tools": None}, {"sampling": {"temperature": None}}]:
            r = await c.request("startSession", params, expect_error=True)
            assert r["error"]["code"] == -32602, params
        sid = await c.start_session(tools=[{"type": "function", "function": {"name": "t", "parameters": {"type": "object", "default": None}}}])
        notes = await c.run_turn(sid, "/sim tool t {}", tool_results=lambda call: None)  # null results are results
        assert "Tool t returned: null" in "".join(p["chunk"] for p in notes if "chunk" in p)


async def test_unusual_but_valid_json_never_breaks_a_session(server):
    """Ids and methods with lone-surrogate escapes get answers; integers beyond 64 bits
    in tool parameters and results flow through."""
    async with WsClient.connect(server.ws_url) as c:
        await c.send_raw('{"jsonrpc": "2.0", "id": "\\ud800", "method": "initialize"}')
        r = await c.next_frame()
        assert r["id"] == "\ud800" and "result" in r
        await c.send_raw('{"jsonrpc": "2.0", "id": 5, "method": "\\udfff"}')
        r = await c.next_frame()
        assert r["id"] == 5 and r["error"]["code"] == -32601
        big = 2**70
        sid = await c.start_session(tools=[{"type": "function", "function": {"name": "t", "parameters": {"type": "object", "maximum": big}}}])
        notes = await c.run_turn(sid, "/sim tool t {\"n\": %d}" % big, tool_results=lambda call: {"n": call["arguments"]["n"] + 1})
        assert f"Tool t returned: {{\"n\":{big + 1}}}" in "".join(p["chunk"] for p in notes if "chunk" in p)


async def test_batch_with_message_and_cancel_keeps_responses_first(server):
    """ORD-3 over ORD-7 in one batch: the turn's output follows the batch answer, and
    still follows the state machine (streaming, cancelled final, idle)."""
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session()
        await c.run_turn(sid, "first")
        n = len(c.frames)
        await c.send_json([{"jsonrpc": "2.0", "id": "m", "method": "sendUserMessage", "params": {"sessionId": sid, "content": "x"}},
                           {"jsonrpc": "2.0", "id": "c", "method": "cancelTurn", "params": {"sessionId": sid}}])
        await c.wait_for(lambda: len([f for f in c.frames[n:] if isinstance(f, dict) and f["params"].get("status") == "idle"]) == 1)
        after = c.frames[n:]
        assert isinstance(after[0], list) and after[0][1]["result"]["cancelled"] is True
        notes = [f["params"] for f in after[1:]]
        assert [p.get("status") or p.get("finishReason") for p in notes] == ["streaming", "cancelled", "idle"]

"""A complete AI session over one real WebSocket, on the simulator (issue 2).

Every frame received is validated against spec/ with jsonschema and checked for
the ordering invariants (tests/support)."""

from __future__ import annotations

import asyncio
import json

from tests.support import WsClient, message_texts

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


async def test_full_session_start_message_stream_stop(server):
    """start → message → streamed chunks → final → stop, with responses and seq in order."""
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(systemPrompt="Be brief.")
        notes = await c.run_turn(sid, "hello world, how are you?")
        chunks = [p for p in notes if "isFinal" in p]
        assert len(chunks) >= 3
        assert [p["isFinal"] for p in chunks] == [False] * (len(chunks) - 1) + [True]
        assert chunks[-1]["finishReason"] == "stop" and chunks[-1]["usage"]["totalTokens"] > 0
        assert "".join(p["chunk"] for p in chunks) == "You said: hello world, how are you?"
        assert [p["status"] for p in notes if "status" in p] == ["streaming", "idle"]
        result = await c.call("stopSession", {"sessionId": sid})
        assert result == {"sessionId": sid, "status": "ended"}
        seqs = [p["seq"] for p in c.session_notes(sid)]
        assert seqs == list(range(1, len(seqs) + 1))
        # ORD-6: ended came before the stopSession response, and is the session's last notification.
        ended_at = next(i for i, f in enumerate(c.frames) if f.get("params", {}).get("status") == "ended")
        resp_at = next(i for i, f in enumerate(c.frames) if f.get("result", {}).get("status") == "ended")
        assert ended_at < resp_at
        assert c.session_notes(sid)[-1]["status"] == "ended" and c.session_notes(sid)[-1]["reason"] == "client_stop"
    await server.wait_idle()


async def test_two_parallel_tool_calls_continue_by_themselves(server):
    """A step with two tool calls; provideToolResult for both; the turn goes on."""
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(tools=[WEATHER, TIME])
        content = '/sim tool get_weather {"city": "Paris"}\n/sim tool get_time {"tz": "UTC"}'
        results = {"get_weather": {"tempC": 21, "sky": "clear"}, "get_time": "12:00"}
        notes = await c.run_turn(sid, content, tool_results=lambda call: results[call["name"]])
        calls = [p for p in notes if "toolCallId" in p and "name" in p]
        assert [(p["name"], p["arguments"]) for p in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]
        assert calls[0]["messageId"] == calls[1]["messageId"]
        finals = [p for p in notes if p.get("isFinal")]
        assert [p["finishReason"] for p in finals] == ["tool_calls", "stop"]
        # ORD-5: the step's tool calls precede its final chunk.
        assert notes.index(calls[1]) < notes.index(finals[0])
        assert [p["status"] for p in notes if "status" in p] == ["streaming", "awaiting_tool_results", "streaming", "idle"]
        reply = message_texts(notes)[finals[1]["messageId"]]
        assert reply == 'Tool get_weather returned: {"tempC":21,"sky":"clear"}\nTool get_time returned: 12:00'
        # TOOL-1: the continuation came after the last provideToolResult response.
        last_resp = max(i for i, f in enumerate(c.frames) if "pendingToolCalls" in f.get("result", {}))
        assert c.frames[last_resp]["result"]["pendingToolCalls"] == 0
        cont = next(i for i, f in enumerate(c.frames) if f.get("params", {}).get("messageId") == finals[1]["messageId"])
        assert last_resp < cont


async def test_tool_result_errors_and_partial_results(server):
    """Unknown, duplicate and late tool results get UNKNOWN_TOOL_CALL; one of two doesn't continue."""
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(tools=[WEATHER, TIME])
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool get_weather {}\n/sim tool get_time {}"})
        await c.wait_status(sid, "awaiting_tool_results")
        ids = [p["toolCallId"] for p in c.session_notes(sid) if "toolCallId" in p]
        wrong = await c.request("provideToolResult", {"sessionId": sid, "toolCallId": "call_nope", "result": "x"}, expect_error=True)
        assert wrong["error"]["code"] == -32003
        first = await c.call("provideToolResult", {"sessionId": sid, "toolCallId": ids[0], "result": "sunny", "isError": False})
        assert first["pendingToolCalls"] == 1
        dup = await c.request("provideToolResult", {"sessionId": sid, "toolCallId": ids[0], "result": "again"}, expect_error=True)
        assert dup["error"]["code"] == -32003
        await asyncio.sleep(0.05)
        assert c.session_notes(sid)[-1]["status"] == "awaiting_tool_results"  # still waiting for the second
        await c.call("provideToolResult", {"sessionId": sid, "toolCallId": ids[1], "result": "broken", "isError": True})
        await c.wait_status(sid, "idle")
        text = "".join(p["chunk"] for p in c.session_notes(sid) if "chunk" in p)
        assert "Tool get_time returned: Error: broken" in text
        late = await c.request("provideToolResult", {"sessionId": sid, "toolCallId": ids[1], "result": "late"}, expect_error=True)
        assert late["error"]["code"] == -32003


async def test_pause_holds_output_and_resume_delivers_it_in_order(slow_server):
    async with WsClient.connect(slow_server.ws_url) as c:
        sid = await c.start_session()
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 40\nsome text to stream"})
        await c.wait_notification(lambda p: p.get("chunk"))
        paused = await c.call("pauseSession", {"sessionId": sid})
        assert paused["status"] == "paused"
        # The paused status precedes the pause response.
        notes_at_pause = len(c.session_notes(sid))
        assert c.session_notes(sid)[-1]["status"] == "paused"
        await asyncio.sleep(0.2)  # 20 chunk intervals: nothing may arrive
        assert len(c.session_notes(sid)) == notes_at_pause
        refused = await c.request("sendUserMessage", {"sessionId": sid, "content": "hi"}, expect_error=True)
        assert refused["error"]["code"] == -32002 and refused["error"]["data"]["status"] == "paused"
        again = await c.call("pauseSession", {"sessionId": sid})
        assert again["status"] == "paused" and len(c.session_notes(sid)) == notes_at_pause
        resumed = await c.call("resumeSession", {"sessionId": sid})
        assert resumed["status"] == "streaming"
        await c.wait_status(sid, "idle")
        chunks = [p for p in c.session_notes(sid) if "chunk" in p]
        assert len(chunks) == 41 and chunks[-1]["finishReason"] == "stop"
        statuses = [p["status"] for p in c.session_notes(sid) if "status" in p]
        assert statuses == ["started", "streaming", "paused", "streaming", "idle"]
        not_paused = await c.call("resumeSession", {"sessionId": sid})
        assert not_paused["status"] == "idle"


async def test_cancel_turn_mid_stream(slow_server):
    async with WsClient.connect(slow_server.ws_url) as c:
        sid = await c.start_session()
        turn = await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 200\nlong"})
        await c.wait_notification(lambda p: p.get("chunk"))
        rid = c.new_id()
        c._pending[json.dumps(rid)] = "cancelTurn"
        await c.send_json({"jsonrpc": "2.0", "id": rid, "method": "cancelTurn", "params": {"sessionId": sid}})
        resp = await c.response(rid)
        assert resp["result"] == {"sessionId": sid, "cancelled": True, "turnId": turn["turnId"]}
        resp_at = c.frames.index(resp)
        before = [f["params"] for f in c.frames[:resp_at] if "method" in f]
        final = [p for p in before if p.get("isFinal")]
        assert len(final) == 1 and final[0]["finishReason"] == "cancelled"  # ORD-7
        assert before[-1]["status"] == "idle"
        chunks = [p for p in c.session_notes(sid) if "chunk" in p]
        assert len(chunks) < 201
        # Nothing in flight: harmless, nothing sent.
        n = len(c.frames)
        nothing = await c.call("cancelTurn", {"sessionId": sid})
        assert nothing == {"sessionId": sid, "cancelled": False, "turnId": None}
        assert len(c.frames) == n + 1
        # The session is still usable.
        notes = await c.run_turn(sid, "after cancel")
        assert "".join(p["chunk"] for p in notes if "chunk" in p) == "You said: after cancel"


async def test_cancel_while_awaiting_tool_results(server):
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(tools=[WEATHER])
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool get_weather {}"})
        await c.wait_status(sid, "awaiting_tool_results")
        call_id = next(p["toolCallId"] for p in c.session_notes(sid) if "toolCallId" in p)
        res = await c.call("cancelTurn", {"sessionId": sid})
        assert res["cancelled"] is True
        finals = [p for p in c.session_notes(sid) if p.get("isFinal")]
        assert [p["finishReason"] for p in finals] == ["tool_calls", "cancelled"]
        late = await c.request("provideToolResult", {"sessionId": sid, "toolCallId": call_id, "result": "x"}, expect_error=True)
        assert late["error"]["code"] == -32003
        notes = await c.run_turn(sid, "next")  # history stays valid for the provider
        assert notes[-1]["status"] == "idle"


async def test_send_while_turn_in_flight_is_refused(slow_server):
    async with WsClient.connect(slow_server.ws_url) as c:
        sid = await c.start_session()
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 30\nx"})
        busy = await c.request("sendUserMessage", {"sessionId": sid, "content": "again"}, expect_error=True)
        assert busy["error"]["code"] == -32002 and busy["error"]["data"]["retryable"] is True
        await c.wait_status(sid, "idle")


async def test_provider_errors_end_the_turn_with_error_notification(server):
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session()
        for kind, code in [("rate_limit", -32006), ("unavailable", -32007), ("midstream", -32007)]:
            notes = await c.run_turn(sid, f"/sim error {kind}\nhello there my friend")
            errs = [p for p in notes if "code" in p]
            assert len(errs) == 1 and errs[0]["code"] == code and errs[0]["data"]["retryable"] is True
            if kind == "rate_limit":
                assert errs[0]["data"]["retryAfterMs"] == 1000
            final = [p for p in notes if p.get("isFinal")]
            assert len(final) == 1 and final[0]["finishReason"] == "error"
            assert notes.index(errs[0]) < notes.index(final[0])  # ORD-9
            if kind == "midstream":
                assert any(p.get("chunk") for p in notes)


async def test_hang_ends_by_timeout():
    from tests.support import serve, make_settings

    async with serve(make_settings(ai={"first_chunk_timeout_s": 0.2})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session()
            notes = await c.run_turn(sid, "/sim error hang")
            err = next(p for p in notes if "code" in p)
            assert err["code"] == -32008 and err["data"]["retryable"] is True
            assert [p["finishReason"] for p in notes if p.get("isFinal")] == ["error"]
        await srv.wait_idle()


async def test_sessions_are_isolated_on_one_and_across_connections(slow_server):
    async with WsClient.connect(slow_server.ws_url) as a, WsClient.connect(slow_server.ws_url) as b:
        a1 = await a.start_session()
        a2 = await a.start_session()
        b1 = await b.start_session()
        turns = await asyncio.gather(
            a.run_turn(a1, "/sim chunks 15\nfirst"), a.run_turn(a2, "/sim chunks 12\nsecond"),
            b.run_turn(b1, "/sim chunks 9\nthird"))
        assert [len([p for p in t if "chunk" in p]) for t in turns] == [16, 13, 10]
        assert {p["sessionId"] for p in turns[0]} == {a1} and {p["sessionId"] for p in turns[1]} == {a2}
        # ISO-1: no notification of a's sessions reached b, nor the reverse.
        assert {n["params"]["sessionId"] for n in b.notifications} == {b1}
        assert {n["params"]["sessionId"] for n in a.notifications} == {a1, a2}
        # ISO-2: b cannot act on a's session.
        for method, params in [("sendUserMessage", {"sessionId": a1, "content": "x"}), ("stopSession", {"sessionId": a1}),
                               ("pauseSession", {"sessionId": a1}), ("cancelTurn", {"sessionId": a1}),
                               ("provideToolResult", {"sessionId": a1, "toolCallId": "c", "result": 1})]:
            r = await b.request(method, params, expect_error=True)
            assert r["error"]["code"] == -32001
        assert (await slow_server.health())["sessions"] == 3


async def test_disconnect_mid_stream_and_mid_tool_wait_releases_everything(slow_server):
    async with WsClient.connect(slow_server.ws_url) as c:
        sid = await c.start_session()
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 500\nx"})
        await c.wait_notification(lambda p: p.get("chunk"))
    async with WsClient.connect(slow_server.ws_url) as c:
        sid = await c.start_session(tools=[WEATHER])
        await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool get_weather {}"})
        await c.wait_status(sid, "awaiting_tool_results")
        paused = await c.start_session()
        await c.call("pauseSession", {"sessionId": paused})
        assert (await slow_server.health())["sessions"] == 2
    health = await slow_server.wait_idle()
    assert health["sessions"] == 0 and health["connections"] == 0 and health["runningTurns"] == 0


async def test_same_seed_same_notifications(server):
    """The same scenario run twice with the same seed yields identical notifications."""

    async def scenario() -> list[dict]:
        async with WsClient.connect(server.ws_url) as c:
            sid = await c.start_session(tools=[WEATHER, TIME])
            await c.run_turn(sid, "tell me something")
            await c.run_turn(sid, "/sim tool get_weather {\"city\": \"Oslo\"}\n/sim tool get_time {}", tool_results=lambda p: p["name"])
            await c.run_turn(sid, "/sim chunks 7")
            await c.call("stopSession", {"sessionId": sid})
            return [{**n["params"], "sessionId": "S"} for n in c.notifications]

    first, second = await scenario(), await scenario()
    assert first == second
    assert len(first) > 20


async def test_many_sessions_per_connection_limit():
    from tests.support import serve, make_settings

    async with serve(make_settings(limits={"max_sessions_per_connection": 2})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            await c.start_session()
            await c.start_session()
            r = await c.request("startSession", {}, expect_error=True)
            assert r["error"]["code"] == -32004 and r["error"]["data"]["limit"] == "maxSessionsPerConnection"


async def test_debug_validation_of_outgoing_frames_accepts_a_full_session():
    """server.validate_outgoing checks every notification with the generated models."""
    from tests.support import make_settings, serve

    async with serve(make_settings(server={"validate_outgoing": True})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session(tools=[WEATHER])
            await c.run_turn(sid, "/sim tool get_weather {}", tool_results=lambda call: "sunny")
            await c.run_turn(sid, "/sim error midstream\nsome words to stream first")
            await c.call("stopSession", {"sessionId": sid})

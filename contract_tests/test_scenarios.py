"""One deterministic scenario per promise of the spec, on the simulator.

Each scenario acts through the harness; the oracle checks every frame (schema, seq,
ordering, state machine, scripted text) and the explicit asserts pin the outcome the
scenario is about. The stateful test (test_stateful.py) explores the same promises in
random interleavings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contract_tests.harness import Harness, Target, run_scenario
from contract_tests.protocol import CODE

req = pytest.mark.requirement


@pytest.fixture
def sim(target: Target) -> Target:
    if not target.simulator:
        pytest.skip("needs the simulator backend (/sim directives)")
    return target


def texts(h: Harness, sid: str, turn_id: str) -> list[tuple[str, str | None]]:
    """(text, finishReason) of each message of a turn, as the client assembled them."""
    s = h.observer.sessions[sid]
    t = s.turns[turn_id]
    return [("".join(s.messages[m].chunks), (s.messages[m].final or {}).get("finishReason")) for m in t.messages]


def code(resp: dict[str, Any] | None) -> int | None:
    assert resp is not None, "no response"
    return resp["error"]["code"] if "error" in resp else None


@req("ORD-1", "ORD-2", "SEQ-1", "STATE-1")
def test_start_session_then_started_notification(target: Target) -> None:
    """The startSession response comes first; the first notification is `started`, seq 1."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c, systemPrompt="You are a test.", metadata={"k": [1, 2]})
        assert sid
        await h.settle()
        s = h.observer.sessions[sid]
        assert (s.status, s.seq) == ("started", 1)

    run_scenario(target, "start_session", body)


@req("ORD-3", "ORD-4", "ORD-8", "SEQ-1")
def test_plain_turn_streams_the_scripted_reply(sim: Target) -> None:
    """A plain message: response, streaming, chunks of `You said: <text>`, one final, idle."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        r = await h.send_message(c, sid, "  hello contract\nworld  ")
        await h.settle()
        assert texts(h, sid, r["result"]["turnId"]) == [("You said: hello contract\nworld", "stop")]
        assert h.observer.sessions[sid].status == "idle"
        r2 = await h.send_message(c, sid, "second turn")
        await h.settle()
        assert r2["result"]["turnId"] != r["result"]["turnId"]
        assert texts(h, sid, r2["result"]["turnId"]) == [("You said: second turn", "stop")]

    run_scenario(sim, "plain_turn", body)


@req("ORD-4")
@pytest.mark.parametrize("n", [0, 1, 7, 60])
def test_chunks_directive_gives_exactly_n_chunks(sim: Target, n: int) -> None:
    """`/sim chunks N`: exactly N non-final chunks, then one final chunk."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        text = " ".join(f"w{i}" for i in range(40))
        r = await h.send_message(c, sid, f"/sim chunks {n}\n{text}")
        await h.settle()
        s = h.observer.sessions[sid]
        (mid,) = s.turns[r["result"]["turnId"]].messages
        assert len(s.messages[mid].chunks) == n
        assert s.messages[mid].final is not None

    run_scenario(sim, f"chunks_{n}", body)


@req("ORD-5", "TOOL-1", "STATE-1")
def test_parallel_tool_calls_continue_after_the_last_result(sim: Target) -> None:
    """Two parallel tool calls: both before the tool_calls final; the turn waits for
    both results and then continues by itself, quoting them in the order given."""

    async def body(h: Harness) -> None:
        c = await h.open()
        tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("lookup", "calc")]
        sid = await h.start_session(c, tools=tools)
        r = await h.send_message(c, sid, '/sim tool lookup {"q": "weather", "n": [1, 2]}\n/sim tool calc {"expr": "6*7"}\nplease')
        await h.settle()
        tid = r["result"]["turnId"]
        s = h.observer.sessions[sid]
        assert s.status == "awaiting_tool_results"
        assert texts(h, sid, tid) == [("Calling lookup, calc.", "tool_calls")]
        first, second = s.turns[tid].step_calls
        r1 = await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": second, "result": {"answer": 42, "ok": True}})
        assert r1["result"]["pendingToolCalls"] == 1
        await h.settle()
        assert s.status == "awaiting_tool_results", "the turn must wait for every result"
        r2 = await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": first, "result": "sunny", "isError": True})
        assert r2["result"]["pendingToolCalls"] == 0
        await h.settle()
        text, reason = texts(h, sid, tid)[1]
        assert reason == "stop"
        assert sorted(text.split("\n")) == ['Tool calc returned: {"answer":42,"ok":true}', "Tool lookup returned: Error: sunny"]
        assert s.status == "idle"

    run_scenario(sim, "parallel_tools", body)


@req("TOOL-2")
def test_wrong_duplicate_and_late_tool_results_are_refused(sim: Target) -> None:
    """Unknown, duplicate and late tool call ids get UNKNOWN_TOOL_CALL and change nothing."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c, tools=[{"type": "function", "function": {"name": "t"}}])
        r = await h.send_message(c, sid, "/sim tool t {}\n/sim tool t {\"x\": 1}")
        await h.settle()
        a, b = h.observer.sessions[sid].turns[r["result"]["turnId"]].step_calls
        unknown = CODE["UNKNOWN_TOOL_CALL"]
        assert code(await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": "call_nope", "result": 1})) == unknown
        assert code(await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": a, "result": "ok"})) is None
        assert code(await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": a, "result": "again"})) == unknown
        await h.settle()
        assert h.observer.sessions[sid].status == "awaiting_tool_results"
        cancel = await h.request(c, "cancelTurn", {"sessionId": sid})
        assert cancel["result"]["cancelled"] is True
        assert code(await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": b, "result": "late"})) == unknown
        await h.settle()
        assert h.observer.sessions[sid].status == "idle"

    run_scenario(sim, "tool_results_refused", body)


@req("ORD-6", "ORD-8")
@pytest.mark.parametrize("script", ["/sim chunks 300\nlong reply please", "/sim error hang", "/sim tool t {}"])
def test_stop_session_mid_turn(sim: Target, script: str) -> None:
    """stopSession during a turn: cancelled final, `ended`, then the response; nothing after."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        send = await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": script})
        stop = await h.send_request(c, "stopSession", {"sessionId": sid})
        await h.settle()
        assert "result" in send.result() and stop.result()["result"] == {"sessionId": sid, "status": "ended"}
        assert code(await h.request(c, "stopSession", {"sessionId": sid})) == CODE["SESSION_NOT_FOUND"]
        assert code(await h.send_message(c, sid, "after")) == CODE["SESSION_NOT_FOUND"]

    run_scenario(sim, "stop_mid_turn", body)


@req("ORD-7", "ORD-8")
@pytest.mark.parametrize("script", ["/sim chunks 400\nstream for a while", "/sim error hang", "/sim tool t {}"])
def test_cancel_turn_in_flight(sim: Target, script: str) -> None:
    """cancelTurn: final chunk `cancelled` and status idle before the response."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        send = await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": script})
        if "tool" in script:
            await h.settle()
        cancel = await h.send_request(c, "cancelTurn", {"sessionId": sid})
        await h.settle()
        tid = send.result()["result"]["turnId"]
        res = cancel.result()["result"]
        final = texts(h, sid, tid)[-1][1]
        if res["cancelled"]:
            assert (res["turnId"], final) == (tid, "cancelled")
        else:  # the turn ended on its own before the cancel was read
            assert final in ("stop", "error")
        assert h.observer.sessions[sid].status == "idle"
        r = await h.send_message(c, sid, "next")
        assert code(r) is None

    run_scenario(sim, "cancel_in_flight", body)


@req("ORD-7")
def test_cancel_with_nothing_in_flight_is_harmless(target: Target) -> None:
    """cancelTurn with no turn: cancelled false, turnId null, no notification."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.settle()
        before = h.observer.sessions[sid].notes
        r = await h.request(c, "cancelTurn", {"sessionId": sid})
        await h.settle()
        assert r["result"] == {"sessionId": sid, "cancelled": False, "turnId": None}
        assert h.observer.sessions[sid].notes == before

    run_scenario(target, "cancel_nothing", body)


@req("ORD-9", "ORD-8")
@pytest.mark.parametrize("kind", ["rate_limit", "unavailable", "midstream", "hang"])
def test_provider_faults_end_the_turn_with_an_error(sim: Target, kind: str) -> None:
    """A provider fault: ErrorNotification (documented code, retryable), then the final
    chunk `error`, then idle; the session stays usable."""
    if kind == "hang" and (sim.first_chunk_timeout_s is None or sim.first_chunk_timeout_s > 5):
        pytest.skip("`/sim error hang` needs a known first-chunk timeout <= 5 s (--first-chunk-timeout)")

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        r = await h.send_message(c, sid, f"/sim error {kind}\nsome words to stream first")
        await h.settle()
        t = h.observer.sessions[sid].turns[r["result"]["turnId"]]
        want = {"rate_limit": "PROVIDER_RATE_LIMITED", "unavailable": "PROVIDER_UNAVAILABLE", "midstream": "PROVIDER_UNAVAILABLE", "hang": "PROVIDER_TIMEOUT"}[kind]
        assert (t.error_code, t.end_reason) == (CODE[want], "error")
        assert code(await h.send_message(c, sid, "still there?")) is None

    run_scenario(sim, f"fault_{kind}", body)


@req("ISO-1", "ISO-2")
def test_sessions_are_isolated_between_connections(sim: Target) -> None:
    """Two connections stream at once; neither sees the other's notifications, and
    every method on the other's session gets SESSION_NOT_FOUND."""

    async def body(h: Harness) -> None:
        a, b = await h.open(), await h.open()
        sa = await h.start_session(a, tools=[{"type": "function", "function": {"name": "t"}}])
        sb = await h.start_session(b)
        await h.send_request(a, "sendUserMessage", {"sessionId": sa, "content": "/sim chunks 50\nfrom connection a"})
        await h.send_request(b, "sendUserMessage", {"sessionId": sb, "content": "/sim chunks 50\nfrom connection b"})
        await h.settle()
        for method, extra in [
            ("sendUserMessage", {"content": "intruder"}),
            ("provideToolResult", {"toolCallId": "call_x", "result": "x"}),
            ("pauseSession", {}),
            ("resumeSession", {}),
            ("cancelTurn", {}),
            ("stopSession", {}),
        ]:
            r = await h.request(b, method, {"sessionId": sa, **extra})
            assert code(r) == CODE["SESSION_NOT_FOUND"], method
        await h.settle()
        assert h.observer.sessions[sa].live and h.observer.sessions[sa].status == "idle"

    run_scenario(sim, "isolation", body)


@req("PAUSE-1", "STATE-1")
@pytest.mark.parametrize("script", ["/sim chunks 150\n" + "held and then delivered " * 15, "/sim tool t {}"])
def test_pause_holds_output_and_resume_delivers_it(sim: Target, script: str) -> None:
    """Paused: nothing of the turn is delivered; resume delivers the rest in order."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        send = await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": script})
        pause = await h.send_request(c, "pauseSession", {"sessionId": sid})
        await h.settle()
        assert pause.result()["result"]["status"] == "paused"
        n = len(h.transcript.entries)
        await asyncio.sleep(0.15)
        assert len(h.transcript.entries) == n, "frames arrived while paused"
        again = await h.request(c, "pauseSession", {"sessionId": sid})
        assert again["result"]["status"] == "paused"
        resume = await h.request(c, "resumeSession", {"sessionId": sid})
        assert resume["result"]["status"] != "paused"
        await h.settle()
        s = h.observer.sessions[sid]
        tid = send.result()["result"]["turnId"]
        if "tool" in script:
            (call,) = s.turns[tid].step_calls
            await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": call, "result": [1, "two", None]})
            await h.settle()
            assert texts(h, sid, tid)[-1] == ('Tool t returned: [1,"two",null]', "stop")
        else:
            assert texts(h, sid, tid) == [("You said: " + script.split("\n", 1)[1].strip(), "stop")]

    run_scenario(sim, "pause_resume", body)


@req("PAUSE-2", "STATE-1")
def test_send_while_paused_is_refused(target: Target) -> None:
    """Pausing a fresh session works; sendUserMessage is then INVALID_SESSION_STATE."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.request(c, "pauseSession", {"sessionId": sid})
        r = await h.send_message(c, sid, "hello?")
        assert code(r) == CODE["INVALID_SESSION_STATE"] and r["error"]["data"]["status"] == "paused"
        assert code(await h.request(c, "cancelTurn", {"sessionId": sid})) is None
        res = await h.request(c, "resumeSession", {"sessionId": sid})
        assert res["result"]["status"] == "idle"
        again = await h.request(c, "resumeSession", {"sessionId": sid})
        assert again["result"]["status"] == "idle"
        assert code(await h.send_message(c, sid, "now it works")) is None

    run_scenario(target, "send_while_paused", body)


@req("LIFE-1")
@pytest.mark.parametrize("abrupt", [False, True], ids=["close", "abort"])
@pytest.mark.parametrize("phase", ["streaming", "awaiting_tool_results", "paused", "hanging"])
def test_disconnect_releases_every_session(sim: Target, phase: str, abrupt: bool) -> None:
    """Whatever the sessions are doing, closing the connection releases them all:
    /healthz goes back to zero sessions and zero running turns."""
    content = {
        "streaming": "/sim chunks 2000\nkeep streaming",
        "awaiting_tool_results": "/sim tool t {}",
        "paused": "/sim chunks 300\npaused mid-stream",
        "hanging": "/sim error hang",
    }[phase]

    async def body(h: Harness) -> None:
        c = await h.open()
        for _ in range(2):
            sid = await h.start_session(c)
            await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": content})
            if phase == "paused":
                await h.send_request(c, "pauseSession", {"sessionId": sid})
        if phase in ("awaiting_tool_results", "paused"):
            await h.settle()
        await h.check_health()
        await h.close(c, abrupt=abrupt)
        await h.check_health(final=True)

    run_scenario(sim, f"disconnect_{phase}", body)


@req("RPC-1")
def test_initialize_any_time_and_version_check(target: Target) -> None:
    """initialize works with or without params and repeatedly; a wrong version gets
    UNSUPPORTED_PROTOCOL_VERSION with the supported list."""

    async def body(h: Harness) -> None:
        c = await h.open()
        r1 = await h.request(c, "initialize")
        r2 = await h.request(c, "initialize", {"protocolVersion": 1, "clientInfo": {"name": "contract", "version": "1"}})
        assert r1["result"] == r2["result"]
        bad = await h.request(c, "initialize", {"protocolVersion": 99})
        assert code(bad) == CODE["UNSUPPORTED_PROTOCOL_VERSION"] and 1 in bad["error"]["data"]["supported"]

    run_scenario(target, "initialize", body)

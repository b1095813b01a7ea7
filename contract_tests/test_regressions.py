"""Regression tests for the spec violations this suite found (see known.py).

Each test states the spec's promise in the exact situation where the server broke it.
Fixed ones are plain tests; open ones carry ``known(...)``, a non-strict xfail (an
XPASS in the summary means fixed: move the entry to known.FIXED, drop the marker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from contract_tests.harness import Harness, Target, run_scenario
from contract_tests.known import FIXED, KNOWN

req = pytest.mark.requirement
F = TypeVar("F", bound=Callable[..., Any])
tolerate_server_errors = pytest.mark.server_log_allows(r".")


def known(key: str) -> pytest.MarkDecorator:
    """Open violation: xfail, not strict (the server is fixed while the suite runs)."""
    assert key in KNOWN
    return pytest.mark.xfail(strict=False, reason=f"known violation {key} (contract_tests/known.py)")


def fixed(key: str) -> Callable[[F], F]:
    """Found by this suite and fixed: a plain regression test (the decorator only names
    the finding)."""
    assert key in FIXED

    def mark(test: F) -> F:
        return test

    return mark


@pytest.fixture
def sim(target: Target) -> Target:
    if not target.simulator:
        pytest.skip("needs the simulator backend (/sim directives)")
    return target


async def _still_works(h: Harness, conn: str) -> None:
    r = await h.request(conn, "ping")
    assert r is not None and "result" in r, "the connection stopped working"


@req("RPC-1", "RPC-2", "RPC-3")
@fixed("K1-surrogate")
@pytest.mark.parametrize(
    "frame",
    [
        '{"jsonrpc":"2.0","method":"ping","id":"\\ud800"}',
        '{"jsonrpc":"2.0","method":"\\udfff","id":1}',
    ],
    ids=["id", "method"],
)
def test_lone_surrogate_escapes_get_an_answer(target: Target, frame: str) -> None:
    """`"\\ud800"` is valid JSON text: the request gets its response (an error at
    worst) and the connection keeps working."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.send_raw(c, frame.replace("SID", sid or ""))
        await h.settle()
        await _still_works(h, c)

    run_scenario(target, "known_surrogate", body)


@req("ORD-3")
@fixed("K2-batch-order")
@pytest.mark.parametrize("then", ["cancelTurn", "stopSession"])
def test_batch_keeps_the_send_response_before_the_turn(sim: Target, then: str) -> None:
    """[sendUserMessage S, cancelTurn S] in one batch: the response to sendUserMessage
    (in the batch's array) must precede every notification of its turn."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.settle()
        await h.batch(c, [("sendUserMessage", {"sessionId": sid, "content": "hello"}), (then, {"sessionId": sid})])
        await h.settle()

    run_scenario(sim, "known_batch_order", body)


@req("STATE-1")
@fixed("K7-idle-to-idle")
def test_cancelling_a_turn_before_it_streams_keeps_the_state_machine(sim: Target) -> None:
    """A turn cancelled before it reported `streaming` (here: in the same batch as the
    message): the status notifications must still follow x-state-machine."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.send_message(c, sid, "a first turn, to leave `started`")
        await h.settle()
        await h.batch(c, [("sendUserMessage", {"sessionId": sid, "content": "hello"}), ("cancelTurn", {"sessionId": sid})])
        await h.settle()

    run_scenario(sim, "known_idle_to_idle", body, only={"STATE-1"})


@req("PAUSE-1")
@fixed("K8-resume-pause-race")
@tolerate_server_errors
def test_resume_then_pause_at_once_holds_the_output(sim: Target) -> None:
    """A held turn, then resumeSession and pauseSession in one batch: once `paused` is
    sent again, nothing of the turn may be delivered until the next resume."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        await h.settle()
        text = " ".join(f"w{i}" for i in range(300))
        # In one batch the pause is handled before the turn starts: it is held at once.
        await h.batch(c, [("sendUserMessage", {"sessionId": sid, "content": f"/sim chunks 300\n{text}"}), ("pauseSession", {"sessionId": sid})])
        await h.settle()
        for _ in range(3):
            await h.batch(c, [("resumeSession", {"sessionId": sid}), ("pauseSession", {"sessionId": sid})])
            await h.settle(timeout=0.5)
        await h.request(c, "resumeSession", {"sessionId": sid})
        await h.settle(timeout=0.5)

    run_scenario(sim, "known_resume_pause_race", body)


@req("RPC-5")
@fixed("K4-integral-float")
@pytest.mark.parametrize(
    "method, params",
    [("initialize", {"protocolVersion": 1.0}), ("startSession", {"sampling": {"maxTokens": 5.0, "seed": 3.0}})],
)
def test_integral_floats_are_integers(target: Target, method: str, params: dict[str, Any]) -> None:
    """JSON Schema 2020-12: 1.0 is an integer, so these params match the schema."""

    async def body(h: Harness) -> None:
        c = await h.open()
        r = await h.request(c, method, params)
        assert r is not None and "result" in r, r
        await h.settle()

    run_scenario(target, "known_integral_float", body)


@req("RPC-1", "ORD-9")
@fixed("K5-unencodable-json")
@pytest.mark.parametrize("where", ["tool parameters", "tool result"])
def test_big_integers_in_free_form_json_work(sim: Target, where: str) -> None:
    """A JsonObject may hold any JSON number: the session must keep working."""
    big = 2**70

    async def body(h: Harness) -> None:
        c = await h.open()
        params = {"type": "object", "default": big} if where == "tool parameters" else {"type": "object"}
        sid = await h.start_session(c, tools=[{"type": "function", "function": {"name": "t", "parameters": params}}])
        content = "hello" if where == "tool parameters" else "/sim tool t {}"
        await h.send_message(c, sid, content)
        await h.settle()
        if where == "tool result":
            (call,) = h.observer.pending_tool_calls(sid)
            await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": call, "result": {"n": big}})
            await h.settle()

    run_scenario(sim, "known_big_int", body)


@req("RPC-5")
@fixed("K6-null-optional")
@pytest.mark.parametrize(
    "method, params",
    [
        ("initialize", {"protocolVersion": None}),
        ("startSession", {"systemPrompt": None}),
        ("startSession", {"tools": None}),
        ("startSession", {"sampling": {"temperature": None}}),
        ("sendUserMessage", {"content": "x", "idempotencyKey": None}),
        # found by test_params on a random run: ('wrong_type', {'metadata': None})
        ("startSession", {"metadata": None}),
        ("startSession", {"tools": [{"type": "function", "function": {"name": "t", "parameters": None}}]}),
    ],
)
def test_null_is_not_a_value_of_an_optional_field(target: Target, method: str, params: dict[str, Any]) -> None:
    """The schema types these fields without null: null does not match it (-32602)."""

    async def body(h: Harness) -> None:
        c = await h.open()
        p = dict(params)
        if method == "sendUserMessage":
            p["sessionId"] = await h.start_session(c)
        await h.request(c, method, p)
        await h.settle()

    run_scenario(target, "known_null_optional", body)


@req("TOOL-2", "RPC-1", "IDEM-1")
@pytest.mark.parametrize(
    "key",
    [
        pytest.param(False, id="no key"),
        pytest.param(True, id="idempotency key"),  # K9, fixed
    ],
)
def test_deeply_nested_tool_result_is_accepted(sim: Target, key: bool) -> None:
    """A tool result may be any JSON value: 300 levels deep (a few kB) it is accepted,
    with or without an idempotency key, and the turn goes on."""
    value: Any = "bottom"
    for i in range(300):
        value = [value] if i % 2 else {"k": value}

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c, tools=[{"type": "function", "function": {"name": "t"}}])
        await h.send_message(c, sid, "/sim tool t {}")
        await h.settle()
        (call,) = h.observer.pending_tool_calls(sid)
        params = {"sessionId": sid, "toolCallId": call, "result": value}
        if key:
            params["idempotencyKey"] = "deep-1"
        r = await h.request(c, "provideToolResult", params)
        assert r is not None and "result" in r, r
        await h.settle()

    run_scenario(sim, "deep_tool_result", body)


@req("TOOL-1", "ORD-5")
@fixed("K3-early-tool-result")
def test_results_given_before_the_step_ends_do_not_cut_the_step_short(sim: Target, extra_server: Any) -> None:
    """With time between a step's events, answer the first ToolCallNotification at
    once: every call of the step must have a result before the turn continues, and
    pendingToolCalls must count them all."""
    t = extra_server("slow-chunks", {"simulator": {"chunk_interval_ms": 80}})

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c, tools=[{"type": "function", "function": {"name": n}} for n in ("a", "b")])
        await h.settle()
        send = await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": "/sim tool a {}\n/sim tool b {}\nboth please"})
        tid = (await asyncio.wait_for(send, 5))["result"]["turnId"]
        s = h.observer.sessions[sid]
        deadline = asyncio.get_running_loop().time() + 5
        while not s.turns[tid].step_calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.001)
        first = s.turns[tid].step_calls[0]
        await h.send_request(c, "provideToolResult", {"sessionId": sid, "toolCallId": first, "result": "early"})
        await h.settle()
        rest = h.observer.pending_tool_calls(sid)
        assert rest, "the step's other tool call is no longer awaited"
        for call in rest:
            await h.request(c, "provideToolResult", {"sessionId": sid, "toolCallId": call, "result": "later"})
        await h.settle()
        assert s.status == "idle"

    run_scenario(t, "early_tool_result", body)

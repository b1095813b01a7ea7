"""Faults: each one's documented effect, in-process and on the wire (virtual time)."""

from __future__ import annotations

import json

import pytest

from server.loop.provider import Finish, ProviderError, TextDelta, ToolCall
from simulator import SimulatorConfig, SimulatorProvider, VirtualClock
from simulator.http import SimulatedDrop, create_app
from simulator.scenario import load_scenario, load_scenario_data
from simulator.script import Simulator
from tests.simulator.helpers import decode_sse, drive, run, text_of, user

TIMING = SimulatorConfig(first_chunk_ms=100, chunk_interval_ms=10, keepalive_ms=40).timing()


@pytest.fixture
def faults() -> SimulatorProvider:
    return SimulatorProvider(SimulatorConfig(scenario="faults", seed=1))


async def wire(message: str, *, stream: bool = True, limit: float | None = None):
    with VirtualClock() as clock:
        app = create_app(Simulator(load_scenario("faults"), seed=1, timing=TIMING), clock=clock)
        return await drive(app, {"stream": stream, "messages": [user(message)]}, clock, limit=limit)


# ---------------------------------------------------------------------- before the stream
@pytest.mark.parametrize(
    "name,kind,status,retryable,retry_after",
    [
        ("rate_limit", "rate_limit", 429, True, 3.0),
        ("unavailable", "unavailable", 503, True, 5.0),
        ("bad_gateway", "unavailable", 502, True, None),
        ("payment", "payment", 402, False, None),
        ("in_flight_budget", "payment", 402, True, 10.0),
    ],
)
async def test_http_status_faults(faults, name, kind, status, retryable, retry_after):
    (err,) = await run(faults, [user(f"fault {name}")])
    assert isinstance(err, ProviderError)
    assert (err.kind, err.status, err.retryable, err.retry_after_s) == (kind, status, retryable, retry_after)
    for stream in (True, False):
        cap = await wire(f"fault {name}", stream=stream)
        assert cap.status == status and cap.headers["content-type"] == "application/json"
        assert cap.headers.get("retry-after") == (None if retry_after is None else str(int(retry_after)))
        body = json.loads(cap.body)
        assert body["error"]["code"] == status and body["error"]["message"]
        assert [t for t, _ in cap.parts] == [0.1]  # answered after the time to first chunk
    if kind == "payment":
        assert json.loads(cap.body)["error"]["metadata"]["limit_source"] == (
            "openrouter_in_flight_budget" if retryable else "openrouter_credits")


async def test_error_before_first_chunk(faults):
    (err,) = await run(faults, [user("fault error_before_first_chunk")])
    assert (err.kind, err.retryable) == ("unavailable", True)
    cap = await wire("fault error_before_first_chunk")
    assert cap.status == 200
    d = decode_sse(cap.body)
    assert d.chunks == 1 and d.error["code"] == 502 and d.finish == "error" and not d.done and d.content == ""
    cap = await wire("fault error_before_first_chunk", stream=False)
    assert cap.status == 502 and json.loads(cap.body)["error"]["code"] == 502


# ---------------------------------------------------------------------- during the stream
async def test_midstream_error(faults):
    events = await run(faults, [user("fault midstream")])
    assert [type(e) for e in events] == [TextDelta] * 3 + [ProviderError]
    assert events[-1].kind == "midstream"
    cap = await wire("fault midstream")
    d = decode_sse(cap.body)
    assert d.content == text_of(events) and d.error == {
        "code": "server_error", "message": "Provider disconnected unexpectedly (simulated)",
        "metadata": {"provider_name": "Simulator"}}
    assert d.finish == "error" and not d.done and cap.complete
    body = json.loads((await wire("fault midstream", stream=False)).body)
    assert body["choices"][0]["finish_reason"] == "error" and body["choices"][0]["error"]["code"] == "server_error"


async def test_dropped_connection(faults):
    events = await run(faults, [user("fault drop")])
    assert [type(e) for e in events] == [TextDelta, TextDelta]  # no Finish: the loop sees a truncation
    cap = await wire("fault drop")
    assert isinstance(cap.raised, SimulatedDrop) and not cap.complete
    d = decode_sse(cap.body)
    assert d.content == text_of(events) and d.finish is None and not d.done


async def test_clean_eof_without_finish(faults):
    events = await run(faults, [user("fault eof")])
    assert [type(e) for e in events] == [TextDelta, TextDelta]
    cap = await wire("fault eof")
    assert cap.raised is None and cap.complete
    d = decode_sse(cap.body)
    assert d.content == text_of(events) and d.finish is None and not d.done


async def test_hang_sends_only_keepalives_until_the_client_leaves():
    cap = await wire("fault hang", limit=1.02)
    assert cap.status == 200 and not cap.complete
    assert all(part == b": OPENROUTER PROCESSING\n\n" for _, part in cap.parts)
    # at once, then every 40 ms until the client left
    assert [t for t, _ in cap.parts] == pytest.approx([0.04 * i for i in range(26)])


async def test_hang_midstream_is_silent_after_two_chunks():
    cap = await wire("fault hang_midstream", limit=5.0)
    d = decode_sse(cap.body)
    assert d.chunks == 3 and d.comments == 3 and d.finish is None  # opening + 2 pieces
    assert max(t for t, _ in cap.parts) == 0.11


async def test_malformed_tool_arguments(faults):
    events = await run(faults, [user("fault malformed_args")])
    assert isinstance(events[-1], ProviderError) and events[-1].kind == "protocol" and not events[-1].retryable
    assert not any(isinstance(e, ToolCall) for e in events)
    d = decode_sse((await wire("fault malformed_args")).body)
    ((_, name, raw),) = d.call_list()
    assert name == "lookup" and d.finish == "tool_calls" and d.done
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_duplicated_finish(faults):
    events = await run(faults, [user("fault duplicate_finish")])
    finishes = [e for e in events if isinstance(e, Finish)]
    assert len(finishes) == 2 and finishes[0] == finishes[1] and finishes[0].reason == "tool_calls"
    d = decode_sse((await wire("fault duplicate_finish")).body)
    assert d.finish_count == 2 and d.done and len(d.call_list()) == 1


async def test_sim_error_directive_accepts_every_fault():
    p = SimulatorProvider(SimulatorConfig())
    (err,) = await run(p, [user("x\n/sim error payment")])
    assert err.kind == "payment"
    events = await run(p, [user("x\n/sim error drop")])
    assert [type(e) for e in events] == [TextDelta] * 3
    events = await run(p, [user('x\n/sim error malformed_args\n/sim tool t {"a": 1}')])
    assert events[-1].kind == "protocol"


async def test_seeded_fault_probability():
    """A fault with probability p hits about p of the requests, always the same ones."""
    scenario = load_scenario_data({"faults": [{"kind": "rate_limit", "probability": 0.25}], "rules": [{"builtin": "echo"}]})
    p = SimulatorProvider(simulator=Simulator(scenario, seed=3))
    outcomes = [isinstance((await run(p, [user(f"message {i}")]))[-1], ProviderError) for i in range(400)]
    assert 0.18 < sum(outcomes) / len(outcomes) < 0.32
    again = [isinstance((await run(p, [user(f"message {i}")]))[-1], ProviderError) for i in range(40)]
    assert again == outcomes[:40]
    other_seed = SimulatorProvider(simulator=Simulator(scenario, seed=4))
    assert [isinstance((await run(other_seed, [user(f"message {i}")]))[-1], ProviderError) for i in range(40)] != again


async def test_rule_fault_wins_over_scenario_faults():
    scenario = load_scenario_data({
        "faults": [{"kind": "unavailable"}],
        "rules": [{"match": {"text": "safe"}, "respond": {"text": "fine", "fault": {"kind": "duplicate_finish", "probability": 0}}},
                  {"builtin": "echo"}],
    })
    p = SimulatorProvider(simulator=Simulator(scenario))
    assert (await run(p, [user("other")]))[-1].kind == "unavailable"
    events = await run(p, [user("safe")])
    assert text_of(events) == "fine" and sum(isinstance(e, Finish) for e in events) == 1

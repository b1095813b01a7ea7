"""One seed controls everything: same seed, scenario and inputs give the same output,
in-process, across concurrent sessions, and byte for byte across processes."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx

from server.loop.provider import ModelRequest
from simulator import SimulatorConfig, SimulatorProvider, VirtualClock
from tests.simulator.helpers import assistant, calls_of, decode_sse, describe, results, run, timed, user

JITTER = random.Random(0)
MESSAGES = [
    "hello there, this is a plain message",
    'two tools\n/sim tool a {"x": 1}\n/sim tool b {"y": [1, 2]}',
    "What is the weather in Lisbon?",
    "compare cats with dogs",
    "search for simulators",
    "/sim chunks 9",
    "boom\n/sim error midstream",
]


async def test_same_seed_same_events_different_seed_different_splits():
    with VirtualClock() as clock:  # chatty paces its long replies: run them on virtual time
        for scenario in ("default", "tools", "chatty", "faults"):
            a = SimulatorProvider(SimulatorConfig(seed=21, scenario=scenario), clock)
            b = SimulatorProvider(SimulatorConfig(seed=21, scenario=scenario), clock)
            for text in MESSAGES:
                ea = [e for _, e in await timed(a, clock, [user(text)])]
                eb = [e for _, e in await timed(b, clock, [user(text)])]
                assert describe(ea) == describe(eb)
    one = SimulatorProvider(SimulatorConfig(seed=1))
    two = SimulatorProvider(SimulatorConfig(seed=2))
    long = [user("one two three four five six seven eight nine ten eleven twelve")]
    outcomes = {tuple(describe(await run(p, long))) for p in (one, two)}
    assert len(outcomes) == 2


async def test_request_seed_is_mixed_in():
    p = SimulatorProvider(SimulatorConfig(seed=1))
    msgs = [user("one two three four five six seven eight nine ten eleven twelve")]
    assert describe(await run(p, msgs, seed=5)) == describe(await run(p, msgs, seed=5))
    assert describe(await run(p, msgs, seed=5)) != describe(await run(p, msgs, seed=6))


async def test_client_formatting_differences_do_not_change_the_stream():
    p = SimulatorProvider(SimulatorConfig(seed=3))
    first = await run(p, [user('/sim tool a {"x": 1}')])
    (call,) = calls_of(first)
    plain = [user('/sim tool a {"x": 1}'), assistant(first), *results([call], lambda c: "ok")]
    fancy = [
        {"role": "user", "content": [{"type": "text", "text": '/sim tool a {"x": 1}'}]},
        {"role": "assistant", "content": "", "refusal": None, "tool_calls": [
            {"index": 0, "id": call.id, "type": "function", "function": {"name": "a", "arguments": call.raw_arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "name": "a", "content": "ok"},
    ]
    assert describe(await run(p, plain)) == describe(await run(p, fancy))


async def converse(provider: SimulatorProvider, clock: Any, text: str) -> list[Any]:
    """A whole turn (tool steps answered) on one provider shared with other sessions."""
    convo = [user(text)]
    steps = []
    for _ in range(4):
        events = [e for _, e in await timed(provider, clock, convo)]
        steps.append(describe(events))
        calls = calls_of(events)
        if not calls:
            break
        await asyncio.sleep(JITTER.random() / 10)  # tool results arrive at random times
        convo += [assistant(events), *results(calls, lambda c: f"result of {c.name}")]
    return steps


async def test_concurrent_sessions_are_independent_of_scheduling():
    """Sessions running at once, started in random order with random tool latency and
    a load-dependent slowdown, see exactly what they see when run alone."""
    cfg = SimulatorConfig(scenario="tools", seed=8, first_chunk_ms=40, first_chunk_p99_ms=400,
                          chunk_interval_ms=5, chunk_interval_p99_ms=50, load_slowdown=0.3)
    texts = [f"{m} #{i}" for i in range(4) for m in MESSAGES]
    with VirtualClock() as clock:
        alone = {t: await converse(SimulatorProvider(cfg, clock), clock, t) for t in texts}
        for order_seed in (1, 2):
            shared = SimulatorProvider(cfg, clock)
            order = texts[:]
            random.Random(order_seed).shuffle(order)
            together = await asyncio.gather(*(converse(shared, clock, t) for t in order))
            assert dict(zip(order, together)) == alone
            assert shared.simulator.load.active == 0


async def test_plans_are_pure():
    p = SimulatorProvider(SimulatorConfig(scenario="tools", seed=2))
    req = ModelRequest([user("What is the weather in Rome?")])
    assert p.plan(req) == p.plan(req)


async def _session(url: str) -> bytes:
    """A scripted session against one server: every response's raw bytes."""
    out = []
    async with httpx.AsyncClient(timeout=10) as client:
        for text in MESSAGES:
            convo: list[dict[str, Any]] = [user(text)]
            for _ in range(4):
                r = await client.post(url + "/api/v1/chat/completions", json={"stream": True, "messages": convo})
                out.append(r.content)
                d = decode_sse(r.content)
                if not d.calls:
                    break
                convo.append({"role": "assistant", "content": d.content or None, "tool_calls": [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in d.call_list()]})
                convo += [{"role": "tool", "tool_call_id": i, "content": json.dumps({"ok": n})} for i, n, _ in d.call_list()]
            r = await client.post(url + "/v1/chat/completions", json={"messages": [user(text)]})
            out.append(r.content)
    return b"\n---\n".join(out)


async def test_two_processes_give_byte_identical_output(server_a, server_b):
    """The same scenario and seed in two processes (different hash seeds): same bytes,
    run after run."""
    a, b = await asyncio.gather(_session(server_a.url), _session(server_b.url))
    assert a == b and len(a) > 10_000
    assert await _session(server_a.url) == a


class LateClock:
    """A clock whose sleeps overrun, like an event loop on a busy machine."""

    def __init__(self, inner: VirtualClock) -> None:
        self.inner = inner

    def now(self) -> float:
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds * 3 + 0.007)


async def test_bytes_do_not_depend_on_how_late_the_loop_wakes():
    from simulator.http import create_app
    from simulator.scenario import load_scenario
    from simulator.script import Simulator
    from tests.simulator.helpers import drive

    timing = SimulatorConfig(first_chunk_ms=95, chunk_interval_ms=3, keepalive_ms=10).timing()
    body = {"stream": True, "messages": [user("What is the weather in Oslo?")]}
    with VirtualClock() as clock:
        on_time = await drive(create_app(Simulator(load_scenario("tools"), timing=timing), clock=clock), body, clock)
        late = await drive(create_app(Simulator(load_scenario("tools"), timing=timing), clock=LateClock(clock)), body, clock)
    assert on_time.body == late.body and on_time.body.count(b": OPENROUTER PROCESSING") == 10
    assert late.parts[-1][0] - late.parts[0][0] > on_time.parts[-1][0] - on_time.parts[0][0]

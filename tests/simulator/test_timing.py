"""Timing models and the virtual clock: exact assertions on virtual time, no waiting."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time

import pytest

from server.loop.engine import AILoop, LoopConfig
from server.loop.events import AIChunk, LoopError, StatusChanged
from server.loop.provider import ModelRequest, TextDelta
from simulator import SimulatorConfig, SimulatorProvider, VirtualClock
from simulator.http import create_app
from simulator.scenario import load_scenario_data
from simulator.script import Simulator
from simulator.timing import Fixed, LoadModel, LogNormal, Uniform, estimate_tokens, parse_distribution
from tests.simulator.helpers import decode_sse, describe, drive, run, timed, user


# ---------------------------------------------------------------------- the clock
async def test_virtual_clock_is_exact_and_instant():
    wall = time.perf_counter()
    with VirtualClock() as clock:
        await clock.sleep(0.25)
        assert clock.now() == 0.25

        async def at(delay: float) -> float:
            await asyncio.sleep(delay)
            return clock.now()

        assert await asyncio.gather(at(3.0), at(1.5), at(0.5)) == [3.25, 1.75, 0.75]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.sleep(3600)
        assert clock.now() == 63.25
        assert asyncio.get_running_loop().time() == clock.now()
    assert time.perf_counter() - wall < 1.0


async def test_virtual_clock_needs_installing():
    clock = VirtualClock()
    with pytest.raises(RuntimeError):
        await clock.sleep(1)
    with clock:
        with pytest.raises(RuntimeError):
            clock.install()
    real = asyncio.get_running_loop().time()
    assert real != 0.0 and asyncio.get_running_loop().time() >= real  # the real clock is back


# ---------------------------------------------------------------------- distributions
def test_distribution_shapes():
    assert parse_distribution(250) == Fixed(250.0)
    assert parse_distribution({"fixed": 5}) == Fixed(5.0)
    assert parse_distribution({"min": 1, "max": 3}) == Uniform(1.0, 3.0)
    assert parse_distribution({"median": 300, "p99": 2000, "max": 5000}) == LogNormal(300.0, 2000.0, 5000.0)
    for bad in ({"median": 10}, {"min": 3, "max": 1}, -1, "fast", {"median": 0, "p99": 1}):
        with pytest.raises(ValueError):
            parse_distribution(bad)


def test_lognormal_has_the_given_median_and_p99():
    dist = LogNormal(300.0, 2000.0)
    rng = random.Random(42)
    draws = sorted(dist.sample(rng) for _ in range(20_000))
    assert statistics.median(draws) == pytest.approx(300, rel=0.04)
    assert draws[int(0.99 * len(draws))] == pytest.approx(2000, rel=0.12)
    assert max(LogNormal(300.0, 2000.0, 900.0).sample(rng) for _ in range(1000)) == 900.0


def test_token_estimate():
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 40)] == [1, 1, 1, 2, 10]


def test_load_formula():
    model = LoadModel(threshold=4, slowdown=0.25, max_factor=2.0)
    assert [model.factor(n) for n in (0, 4, 5, 6, 8, 100)] == [1.0, 1.0, 1.25, 1.5, 2.0, 2.0]


# ---------------------------------------------------------------------- streams on virtual time
async def test_fixed_timing_exact_event_times():
    """250 ms to the first chunk, then 62.5 ms per chunk (the Finish included)."""
    with VirtualClock() as clock:
        sim = SimulatorProvider(SimulatorConfig(first_chunk_ms=250, chunk_interval_ms=62.5), clock)
        events = await timed(sim, clock, [user("hello\n/sim chunks 4")])
    assert [t for t, _ in events] == [0.25, 0.3125, 0.375, 0.4375, 0.5]


async def test_tokens_per_second_pacing():
    """Each later chunk waits interval + ceil(len/4) / tokens_per_second."""
    with VirtualClock() as clock:
        cfg = SimulatorConfig(first_chunk_ms=100, chunk_interval_ms=10, tokens_per_second=8)
        sim = SimulatorProvider(cfg, clock)
        msgs = [user("a rather long message to make several chunks of text\n/sim chunks 5")]
        plan = sim.plan(ModelRequest(msgs))
        events = await timed(sim, clock, msgs)
    texts = [p.text for p in plan.pieces]
    expected, t = [], 0.0
    for i, text in enumerate([*texts, ""]):
        t += 0.1 if i == 0 else (10 + 1000 * estimate_tokens(text) / 8) / 1000
        expected.append(t)
    assert [e.text for _, e in events if isinstance(e, TextDelta)] == texts
    assert [t for t, _ in events] == pytest.approx(expected, abs=1e-12)


async def test_lognormal_first_chunk_is_seeded_per_request():
    cfg = SimulatorConfig(seed=1, first_chunk_ms=300, first_chunk_p99_ms=2000)
    firsts = []
    with VirtualClock() as clock:
        sim = SimulatorProvider(cfg, clock)
        for i in range(3):
            start = clock.now()
            events = await timed(sim, clock, [user(f"message {i}")])
            firsts.append(events[0][0] - start)
        start = clock.now()
        again = await timed(SimulatorProvider(cfg, clock), clock, [user("message 0")])
    assert len(set(firsts)) == 3  # drawn, not fixed
    assert again[0][0] - start == pytest.approx(firsts[0], abs=1e-12)  # same request, same draw
    plan = sim.plan(ModelRequest([user("message 0")]))
    assert plan.pieces[0].delay_s == pytest.approx(firsts[0], abs=1e-12)


async def test_load_dependent_slowdown():
    """Three streams at once, threshold 1, slowdown 0.5: first chunks at 1, 1.5, 2 s."""
    cfg = SimulatorConfig(first_chunk_ms=1000, load_threshold=1, load_slowdown=0.5)
    with VirtualClock() as clock:
        sim = SimulatorProvider(cfg, clock)
        runs = await asyncio.gather(*(timed(sim, clock, [user(f"m{i}\n/sim chunks 1")]) for i in range(3)))
        assert [r[0][0] for r in runs] == [1.0, 1.5, 2.0]
        assert sim.simulator.load.active == 0
        alone = await timed(sim, clock, [user("alone\n/sim chunks 1")])
        assert alone[0][0] - 2.0 == 1.0


async def test_timing_never_changes_content():
    msgs = [user("same words every time, whatever the pace")]
    fast = await run(SimulatorProvider(SimulatorConfig(seed=9)), msgs)
    with VirtualClock():
        slow_cfg = SimulatorConfig(seed=9, first_chunk_ms=500, first_chunk_p99_ms=4000, chunk_interval_ms=40,
                                   chunk_interval_p99_ms=300, tokens_per_second=20)
        slow = await run(SimulatorProvider(slow_cfg), msgs)
    assert describe(fast) == describe(slow)


async def test_rule_and_step_timing_override_the_scenario():
    scenario = load_scenario_data({
        "timing": {"first_chunk": 1000, "chunk_interval": 0},
        "rules": [
            {"name": "quick", "match": {"text": "quick"}, "timing": {"first_chunk": 125}, "respond": {"text": "ok", "chunks": 1}},
            {"name": "steps", "match": {"text": "steps"}, "respond": {"text": "ok", "chunks": 1, "timing": {"first_chunk": 375}}},
            {"builtin": "echo"},
        ],
    })
    with VirtualClock() as clock:
        sim = SimulatorProvider(simulator=Simulator(scenario), clock=clock)
        for text, first in (("quick", 0.125), ("steps", 0.375), ("other\n/sim chunks 1", 1.0)):
            start = clock.now()
            events = await timed(sim, clock, [user(text)])
            assert events[0][0] - start == first


async def test_hang_is_ended_by_the_loops_timeout_on_virtual_time():
    """The loop's first-chunk timeout ends a hang at exactly the configured second."""
    with VirtualClock() as clock:
        sim = SimulatorProvider(SimulatorConfig(first_chunk_ms=100), clock)
        seen: list[tuple[float, object]] = []
        loop = AILoop(sim, lambda ev: seen.append((clock.now(), ev)),
                      config=LoopConfig(first_chunk_timeout_s=7.5, idle_timeout_s=2, turn_timeout_s=60))
        loop.start()
        loop.prepare_turn("wait\n/sim error hang")
        loop.begin_turn()
        async with asyncio.timeout(100):
            while not any(isinstance(e, StatusChanged) and e.status == "idle" for _, e in seen):
                await asyncio.sleep(0.5)
    (t, err), = [(t, e) for t, e in seen if isinstance(e, LoopError)]
    assert (t, err.kind, err.retryable) == (7.5, "timeout", True)
    assert any(isinstance(e, AIChunk) and e.finish_reason == "error" for _, e in seen)


async def test_idle_timeout_after_a_midstream_hang():
    scenario = load_scenario_data({"rules": [{"respond": {"text": "one two three four", "chunks": 4,
                                   "fault": {"kind": "hang", "after_chunks": 2}}}]})
    with VirtualClock() as clock:
        timing = SimulatorConfig(first_chunk_ms=62.5, chunk_interval_ms=31.25).timing()
        sim = SimulatorProvider(clock=clock, simulator=Simulator(scenario, timing=timing))
        seen: list[tuple[float, object]] = []
        loop = AILoop(sim, lambda ev: seen.append((clock.now(), ev)),
                      config=LoopConfig(first_chunk_timeout_s=5, idle_timeout_s=3, turn_timeout_s=60))
        loop.start()
        loop.prepare_turn("go")
        loop.begin_turn()
        async with asyncio.timeout(100):
            while not any(isinstance(e, LoopError) for _, e in seen):
                await asyncio.sleep(1)
    chunks = [t for t, e in seen if isinstance(e, AIChunk) and e.text]
    errors = [t for t, e in seen if isinstance(e, LoopError)]
    assert chunks == [0.0625, 0.09375] and errors == [3.09375]


# ---------------------------------------------------------------------- HTTP face on virtual time
async def test_keepalive_comments_while_the_first_chunk_is_pending():
    """': OPENROUTER PROCESSING' at once and every keep-alive interval, then the chunks."""
    timing = SimulatorConfig(first_chunk_ms=2500, chunk_interval_ms=125, keepalive_ms=1000).timing()
    with VirtualClock() as clock:
        sim = Simulator(load_scenario_data({"rules": [{"builtin": "echo"}]}), timing=timing)
        app = create_app(sim, clock=clock)
        cap = await drive(app, {"stream": True, "messages": [user("hi there\n/sim chunks 2")]}, clock)
    comments = [t for t, part in cap.parts if part.startswith(b":")]
    data = [t for t, part in cap.parts if part.startswith(b"data:")]
    assert comments == [0.0, 1.0, 2.0]
    assert data == [2.5, 2.5, 2.625, 2.75]  # opening chunk + first piece, second piece, finish+usage+[DONE]
    decoded = decode_sse(cap.body)
    assert decoded.content == "You said: hi there" and decoded.done and decoded.comments == 3


async def test_non_streaming_waits_the_whole_generation():
    timing = SimulatorConfig(first_chunk_ms=500, chunk_interval_ms=250).timing()
    with VirtualClock() as clock:
        app = create_app(Simulator(load_scenario_data({"rules": [{"builtin": "echo"}]}), timing=timing), clock=clock)
        cap = await drive(app, {"messages": [user("hello\n/sim chunks 3")]}, clock)
    assert cap.status == 200 and [t for t, _ in cap.parts] == [1.25]
    assert math.isclose(cap.parts[0][0], 0.5 + 3 * 0.25)

"""The default scenario keeps the behaviour of the basics (issue 2, section 5) exactly."""

from __future__ import annotations

import pytest

from server.config import load_settings
from server.loop.provider import Finish, ProviderError, TextDelta, ToolCall
from simulator import SimulatorConfig, SimulatorProvider
from tests.simulator.helpers import assistant, calls_of, results, run, text_of, user


@pytest.fixture
def sim() -> SimulatorProvider:
    return SimulatorProvider(SimulatorConfig(seed=5))


async def test_plain_message_is_echoed_in_several_chunks(sim):
    """A plain message gets 'You said: <text>' in several chunks, then Finish(stop)."""
    events = await run(sim, [user("  the quick brown fox jumps over the lazy dog  ")])
    assert text_of(events) == "You said: the quick brown fox jumps over the lazy dog"
    assert sum(isinstance(e, TextDelta) for e in events) >= 3
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert all(e.text for e in events if isinstance(e, TextDelta))


async def test_directive_lines_are_not_part_of_the_text(sim):
    events = await run(sim, [user("hello\n/sim chunks 2\nworld")])
    assert text_of(events) == "You said: hello\nworld"


async def test_parallel_tool_calls_then_quoted_results(sim):
    """/sim tool lines: parallel calls in one step; the follow-up quotes each result."""
    first = user('look\n/sim tool get_weather {"city": "Paris"}\n/sim tool get_time {"tz": "CET"}')
    events = await run(sim, [first])
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert len({c.id for c in calls}) == 2
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    history = [first, assistant(events), *results(calls, lambda c: f"{c.name}-ok")]
    follow = await run(sim, history)
    assert text_of(follow) == "Tool get_weather returned: get_weather-ok\nTool get_time returned: get_time-ok"
    assert isinstance(follow[-1], Finish) and follow[-1].reason == "stop"


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40])
async def test_chunks_n_gives_exactly_n_chunks(sim, n):
    events = await run(sim, [user(f"hi\n/sim chunks {n}")])
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == n and all(d.text for d in deltas)
    assert isinstance(events[-1], Finish) and len(events) == n + 1


@pytest.mark.parametrize("kind,status", [("rate_limit", 429), ("unavailable", 503)])
async def test_errors_before_any_output(sim, kind, status):
    events = await run(sim, [user(f"x\n/sim error {kind}")])
    assert len(events) == 1 and isinstance(events[0], ProviderError)
    assert (events[0].kind, events[0].retryable, events[0].status) == (kind, True, status)
    if kind == "rate_limit":
        assert events[0].retry_after_s == 1.0


async def test_midstream_error_after_some_text(sim):
    events = await run(sim, [user("x\n/sim error midstream")])
    assert isinstance(events[-1], ProviderError) and events[-1].kind == "midstream"
    assert [type(e) for e in events[:-1]] == [TextDelta] * 3


async def test_unreadable_directive_is_answered(sim):
    events = await run(sim, [user("/sim tool x [1]")])
    assert text_of(events).startswith("Simulator could not read: ")


async def test_from_settings_keeps_the_defaults():
    settings = load_settings(None, simulator={"seed": 3, "first_chunk_ms": 0, "chunk_interval_ms": 0})
    provider = SimulatorProvider.from_settings(settings)
    assert provider.name == "simulator" and provider.default_model == "simulator-1"
    assert provider.simulator.scenario.name == "default" and provider.simulator.seed == 3
    events = await run(provider, [user("hi there")])
    assert text_of(events) == "You said: hi there"


async def test_from_settings_reads_the_new_keys():
    settings = load_settings(
        None,
        simulator={"scenario": "tools", "first_chunk_ms": 100, "first_chunk_p99_ms": 900, "tokens_per_second": 50,
                   "load_threshold": 2, "load_slowdown": 0.5, "load_max_factor": 3, "keepalive_ms": 250},
    )
    provider = SimulatorProvider.from_settings(settings)
    c = provider.config
    assert (c.scenario, c.first_chunk_p99_ms, c.tokens_per_second, c.load_slowdown, c.keepalive_ms) == (
        "tools", 900, 50, 0.5, 250)
    timing = c.timing()
    assert timing.first_chunk.median_ms == 100 and timing.first_chunk.p99_ms == 900
    assert timing.load.model().factor(5) == 2.5


def test_repository_config_yaml_is_valid():
    """config.yaml's simulator section loads and names a real scenario."""
    from tests.simulator.helpers import ROOT

    settings = load_settings(ROOT / "config.yaml")
    provider = SimulatorProvider.from_settings(settings)
    assert provider.simulator.scenario.name == settings.simulator.scenario


async def test_tool_call_events_are_complete(sim):
    events = await run(sim, [user('/sim tool t {"a": [1, 2, {"b": "é"}]}')])
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.arguments == {"a": [1, 2, {"b": "é"}]}
    import json

    assert json.loads(call.raw_arguments) == call.arguments

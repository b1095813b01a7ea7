"""Scenario files: schema, validation errors, matching, steps, built-in scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from server.loop.provider import Finish, ModelRequest, ReasoningDelta, TextDelta, Usage
from simulator import ScenarioError, SimulatorConfig, SimulatorProvider, load_scenario
from simulator.generate import WORDS
from simulator.scenario import builtin_scenarios, load_scenario_data
from simulator.script import Simulator
from tests.simulator.helpers import TOOLS, assistant, calls_of, results, run, text_of, timed, user


def provider(data: dict | str, seed: int = 0) -> SimulatorProvider:
    scenario = load_scenario(data) if isinstance(data, str) else load_scenario_data(data)
    return SimulatorProvider(SimulatorConfig(seed=seed), simulator=Simulator(scenario, seed=seed))


def test_builtin_scenarios_load():
    assert builtin_scenarios() == ["chatty", "default", "faults", "tools"]
    for name in builtin_scenarios():
        sc = load_scenario(name)
        assert sc.name == name and sc.rules and sc.description


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "yaml_text,expected",
    [
        ("rules:\n  - name: greet\n    match: {txt: hi}\n    respond: {text: hello}\n",
         "rule #1 'greet': key match.txt: unknown key"),
        ("rules:\n  - builtin: echo\n  - name: w\n    match: {regex: 'in (?P<city>\\w+)'}\n    respond: {text: 'in {town}'}\n",
         "rule #2 'w': respond.text: unknown placeholder {town}"),
        ("rules:\n  - respond: {tool_calls: [{arguments: {}}]}\n",
         "rule #1: key respond.tool_calls[0].name: required key is missing"),
        ("rules:\n  - respond: {fault: {kind: explode}}\n",
         "rule #1: key respond.fault[0].kind: Input should be"),
        ("rules:\n  - respond: {fault: {kind: midstream, retry_after_s: 2}}\n",
         "rule #1: key respond.fault[0]: 'retry_after_s' is not a parameter of fault 'midstream'"),
        ("rules:\n  - name: r\n    match: {regex: '(unclosed'}\n    respond: {text: x}\n",
         "rule #1 'r': key match.regex: invalid regular expression"),
        ("timing:\n  first_chunk: {median: 100}\nrules: []\n",
         "key timing.first_chunk: a delay is a number of ms"),
        ("rules:\n  - name: both\n    respond: {text: a}\n    steps: [{text: b}]\n",
         "rule #1 'both': a rule needs exactly one of 'respond' or 'steps'"),
        ("rules:\n  - builtin: echo\n    respond: {text: a}\n", "rule #1: a builtin rule takes no respond"),
        ("rules:\n  - respond: {replay: missing.json}\n", "rule #1: key respond.replay: cannot read"),
        ("colour: blue\n", "key colour: unknown key"),
        ("rules: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "a scenario must be a mapping"),
    ],
)
def test_validation_errors_name_file_rule_and_key(tmp_path: Path, yaml_text: str, expected: str):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(str(path))
    assert str(err.value).startswith(str(path) + ":")
    assert expected in str(err.value)


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(ScenarioError, match="built-in: chatty, default, faults, tools"):
        load_scenario("nonesuch")


def test_extends_puts_own_rules_first(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("rules:\n  - name: base\n    respond: {text: from base, chunks: 1}\n")
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nrules:\n  - name: child\n    match: {text: child}\n    respond: {text: from child, chunks: 1}\n")
    sc = load_scenario(str(tmp_path / "child.yaml"))
    assert [r.name for r in sc.rules] == ["child", "base"]
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\nrules: []\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\nrules: []\n")
    with pytest.raises(ScenarioError, match="circular extends"):
        load_scenario(str(tmp_path / "loop.yaml"))


async def test_extending_default_keeps_the_sim_directives(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: default\nrules:\n  - match: {text: ping}\n    respond: {text: pong, chunks: 1}\n")
    p = SimulatorProvider(SimulatorConfig(scenario=str(path)))
    assert text_of(await run(p, [user("ping")])) == "pong"
    assert text_of(await run(p, [user("other")])) == "You said: other"
    assert len(calls_of(await run(p, [user('/sim tool t {"a": 1}')]))) == 1


# ---------------------------------------------------------------------- matching
async def test_match_conditions():
    p = provider({
        "rules": [
            {"name": "exact", "match": {"text": "hello"}, "respond": {"text": "exact"}},
            {"name": "regex", "match": {"regex": r"(?i)my name is (?P<name>\w+)"}, "respond": {"text": "Hi {name}!"}},
            {"name": "second", "match": {"turn": [2, 3]}, "respond": {"text": "turn {turn}"}},
            {"name": "contains", "match": {"contains": "needle"}, "respond": {"text": "found it in: {text}"}},
            {"builtin": "echo"},
        ]
    })
    assert text_of(await run(p, [user("  hello ")])) == "exact"
    assert text_of(await run(p, [user("My name is Ada")])) == "Hi Ada!"
    two = [user("a"), {"role": "assistant", "content": "b"}, user("c")]
    assert text_of(await run(p, two)) == "turn 2"
    assert text_of(await run(p, [user("a needle here")])) == "found it in: a needle here"
    assert text_of(await run(p, [user("nothing")])) == "You said: nothing"


async def test_steps_tool_results_and_fallbacks():
    p = provider({
        "rules": [
            {"name": "after get_a", "match": {"tool": "get_a"}, "respond": {"text": "A said {last_result}"}},
            {"name": "two steps", "match": {"contains": "go"},
             "steps": [{"tool_calls": [{"name": "get_b", "arguments": {"x": "{text}"}}]}]},
        ],
        "fallback": {"text": "no rule for: {text}"},
    })
    first = await run(p, [user("go now")])
    (call,) = calls_of(first)
    assert call.arguments == {"x": "go now"}
    # past the last step: the results are quoted
    after = await run(p, [user("go now"), assistant(first), *results([call], lambda c: "B!")])
    assert text_of(after) == "Tool get_b returned: B!"
    # a rule matching on the tool that answered
    history = [user("x"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_a", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert text_of(await run(p, history)) == "A said 42"
    assert text_of(await run(p, [user("unmatched")])) == "no rule for: unmatched"


async def test_a_replacing_scenario_without_fallback_generates_filler():
    p = provider({"rules": [{"match": {"text": "only"}, "respond": {"text": "yes"}}]})
    words = text_of(await run(p, [user("/sim chunks 3")])).split()
    assert len(words) == 12 and set(words) <= set(WORDS)  # no /sim directives here


async def test_step_options_reasoning_usage_finish_chunking():
    p = provider({"rules": [{"respond": {
        "reasoning": "Let me think.", "reasoning_words": 4, "text": "Answer:", "words": {"min": 30, "max": 30},
        "chunk_words": {"min": 2, "max": 2}, "finish_reason": "length",
        "usage": {"prompt_tokens": 7, "completion_tokens": 99},
    }}]})
    events = await run(p, [user("q")])
    thoughts = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert thoughts.startswith("Let me think. ") and len(thoughts.split()) == 3 + 4
    text = text_of(events)
    assert text.startswith("Answer: ") and len(text.split()) == 31
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(len(d.split()) <= 2 for d in deltas) and len(deltas) == 16
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    assert events[-1] == Finish("length", Usage(7, 99, 106))


# ---------------------------------------------------------------------- built-in scenarios
async def test_tools_scenario_multi_step_weather():
    p = SimulatorProvider(SimulatorConfig(scenario="tools", seed=4))
    convo = [user("What is the weather in New York?")]
    step1 = await run(p, convo)
    assert text_of(step1) == "Let me look up the weather in New York."
    (c1,) = calls_of(step1)
    assert (c1.name, c1.arguments) == ("get_weather", {"city": "New York", "unit": "celsius"})
    convo += [assistant(step1), *results([c1], lambda c: "18 C, cloudy")]
    step2 = await run(p, convo)
    (c2,) = calls_of(step2)
    assert (c2.name, c2.arguments) == ("get_forecast", {"city": "New York", "days": 3})
    assert step2[-1].reason == "tool_calls"
    convo += [assistant(step2), *results([c2], lambda c: "rain tomorrow")]
    step3 = await run(p, convo)
    assert text_of(step3) == "Here is what I found for New York:\nTool get_forecast returned: rain tomorrow"
    assert step3[-1].reason == "stop"


async def test_tools_scenario_parallel_and_generated_arguments():
    p = SimulatorProvider(SimulatorConfig(scenario="tools", seed=4))
    calls = calls_of(await run(p, [user("compare apples and pears")]))
    assert [(c.name, c.arguments) for c in calls] == [("lookup", {"query": "apples"}), ("lookup", {"query": "pears"})]
    plan = p.plan(ModelRequest([user("compare apples and pears")]))
    order = [piece.index for piece in plan.pieces if piece.kind == "tool"]
    assert order[:4] == [0, 1, 0, 1]  # interleaved on the wire
    schema = TOOLS[0]["function"]["parameters"]
    for seed in range(20):
        p = SimulatorProvider(SimulatorConfig(scenario="tools", seed=seed))
        (call,) = calls_of(await run(p, [user("search the archives")], TOOLS))
        jsonschema.validate(call.arguments, schema)
        assert json.loads(call.raw_arguments) == call.arguments


async def test_chatty_scenario_gives_long_replies_in_small_chunks():
    from simulator import VirtualClock

    with VirtualClock() as clock:
        p = SimulatorProvider(SimulatorConfig(scenario="chatty", seed=2), clock)
        events = [e for _, e in await timed(p, clock, [user("tell me everything")])]
    text = text_of(events)
    assert text.startswith("You said: tell me everything\n\n")
    assert 150 <= len(text.split()) - 5 <= 400
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 50 and all(1 <= len(d.text.split()) <= 3 for d in deltas[3:])
    assert clock.now() > 1.0  # paced at ~60 tokens/s, on virtual time

"""docs/simulator.md's examples are run: scenario blocks (with their transcripts),
the config.yaml block, the Python blocks; its tables list every key and fault."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import yaml

from server.config import SimulatorSettings, load_settings
from server.loop.provider import ProviderError
from simulator import SimulatorProvider, VirtualClock
from simulator.faults import FAULT_KINDS
from simulator.scenario import load_scenario_data
from simulator.script import Simulator
from tests.simulator.helpers import ROOT, assistant, calls_of, results, text_of, timed, user

DOC = ROOT / "docs" / "simulator.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(DOC.read_text()) if kind == lang]


def scenario_blocks() -> dict[str, str]:
    out = {}
    for body in blocks("yaml"):
        first = body.splitlines()[0]
        if first.startswith("# scenario:"):
            out[first.split(":", 1)[1].strip()] = body
    return out


def test_the_doc_has_examples():
    assert set(scenario_blocks()) >= {"weather", "greeter", "flaky", "timed", "replayed"}
    assert blocks("python")


def check(events: list, expected: list[str], where: str) -> None:
    texts = [e for e in expected if not e.startswith(("call ", "error "))]
    calls = [e[5:].split(" ", 1) for e in expected if e.startswith("call ")]
    errors = [e[6:] for e in expected if e.startswith("error ")]
    if errors:
        assert isinstance(events[-1], ProviderError) and events[-1].kind == errors[0], where
        return
    assert not any(isinstance(e, ProviderError) for e in events), where
    assert text_of(events) == "\n".join(texts), where
    assert [(c.name, c.arguments) for c in calls_of(events)] == [(n, json.loads(a)) for n, a in calls], where


@pytest.mark.parametrize("name", sorted(scenario_blocks()))
async def test_scenario_example_plays_its_transcript(name):
    body = scenario_blocks()[name]
    scenario = load_scenario_data(yaml.safe_load(body), source=f"{DOC}#{name}", base_dir=DOC.parent)
    lines = [ln[2:] for ln in body.splitlines() if ln.startswith(("# > ", "# < ", "# ! "))]
    with VirtualClock() as clock:
        provider = SimulatorProvider(simulator=Simulator(scenario, seed=1), clock=clock)
        convo: list[dict] = []
        events: list | None = None
        expected: list[str] = []
        for line in lines:
            mark, text = line[0], line[2:]
            if mark == "<":
                expected.append(text)
                continue
            if events is not None:
                check(events, expected, f"{name}: before {line!r}")
            if mark == ">":
                if events is not None:
                    convo.append(assistant(events))
                convo.append(user(text))
            else:
                calls = calls_of(events or [])
                assert calls, f"{name}: tool result {text!r} but no tool call"
                convo += [assistant(events or []), *results(calls, lambda c: text)]
            events, expected = [e for _, e in await timed(provider, clock, convo)], []
        if events is not None:
            check(events, expected, f"{name}: at the end")


def test_config_example_is_valid(tmp_path):
    (body,) = [b for b in blocks("yaml") if b.startswith("# config.yaml")]
    path = tmp_path / "config.yaml"
    path.write_text(body)
    settings = load_settings(path)
    provider = SimulatorProvider.from_settings(settings)
    assert provider.simulator.scenario.name == settings.simulator.scenario


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs(index):
    namespace: dict = {}
    exec(compile(blocks("python")[index], f"{DOC}:python[{index}]", "exec"), namespace)
    if "main" in namespace:
        asyncio.run(namespace["main"]())


def test_tables_list_every_setting_and_fault():
    text = DOC.read_text()
    config_section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", config_section, re.M))
    assert documented == set(SimulatorSettings.model_fields)
    faults_section = text.split("## Faults", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", faults_section, re.M)) == set(FAULT_KINDS)


def test_builtin_scenario_files_are_linked():
    for name in ("default", "tools", "faults", "chatty"):
        assert f"(../simulator/scenarios/{name}.yaml)" in DOC.read_text()
        assert (ROOT / "simulator" / "scenarios" / f"{name}.yaml").exists()

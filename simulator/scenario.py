"""Scenario files: what the simulated model says, when, and how it fails.

A scenario is a YAML mapping (the schema is documented in docs/simulator.md)::

    name: tools                  # optional
    description: ...             # optional
    extends: default             # optional: a built-in name or a path; its rules come after ours
    timing: {...}                # optional: see simulator.timing
    faults: [...]                # optional: faults for steps that define none (see simulator.faults)
    wire: {provider: Simulator, usage_chunk: repeat_finish}
    fallback: {...}              # optional: the step used when no rule matches
    rules:
      - name: weather
        match: {regex: "weather in (?P<city>\\w+)"}
        steps:
          - tool_calls: [{name: get_weather, arguments: {city: "{city}"}}]
          - text: "It is sunny in {city}."
      - builtin: sim_directives  # the /sim lines
      - builtin: echo            # "You said: ..."

Loading validates everything; a :class:`ScenarioError` names the file, the rule and
the key. Built-in scenarios live in ``simulator/scenarios/*.yaml`` and are loaded by
name (``default``, ``tools``, ``faults``, ``chatty``).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from simulator.faults import FaultSpec
from simulator.timing import Distribution, LoadModel, parse_distribution

__all__ = [
    "BUILTIN_DIR",
    "Match",
    "Range",
    "Rule",
    "Scenario",
    "ScenarioError",
    "Step",
    "TimingSpec",
    "ToolCallSpec",
    "builtin_scenarios",
    "load_scenario",
    "load_scenario_data",
    "render_template",
    "template_fields",
]

BUILTIN_DIR = Path(__file__).with_name("scenarios")
TEMPLATE_VARS = frozenset({"text", "turn", "step", "tool_results", "last_result"})
"""Placeholders every template may use, besides the rule's regex groups."""


class ScenarioError(ValueError):
    """A scenario could not be loaded; the message names the file, the rule and the key."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------- templates
def template_fields(template: str) -> list[str]:
    """The placeholder names of a template (``{name}``; ``{{`` and ``}}`` are literal braces).

    Raises:
        ValueError: a placeholder is not a plain name, or braces are unbalanced.
    """
    names = []
    for _, field, spec, conv in string.Formatter().parse(template):
        if field is None:
            continue
        if spec or conv or not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} must be a plain name like {{text}}")
        names.append(field)
    return names


def render_template(template: str, values: dict[str, Any]) -> str:
    """Fill a template's placeholders (a missing value renders as empty)."""
    return string.Formatter().vformat(template, (), _Blank(values))


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    return []


# ---------------------------------------------------------------------- pieces
class Range(_M):
    """A count drawn uniformly from ``min`` to ``max`` (write ``N`` for exactly N)."""

    min: int = Field(ge=0)
    max: int = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"min": value, "max": value}
        return value

    @model_validator(mode="after")
    def _order(self) -> Range:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class TimingSpec(_M):
    """Timing of a scenario, rule or step; unset keys inherit (see :mod:`simulator.timing`)."""

    first_chunk: Any = None
    chunk_interval: Any = None
    tokens_per_second: float | None = Field(None, gt=0)
    load: LoadModelSpec | None = None
    keepalive_interval: float | None = Field(None, gt=0)
    """Milliseconds between ``: OPENROUTER PROCESSING`` comments (HTTP face)."""

    @field_validator("first_chunk", "chunk_interval")
    @classmethod
    def _dist(cls, value: Any) -> Distribution | None:
        return None if value is None else parse_distribution(value)

    def over(self, base: TimingSpec | None) -> TimingSpec:
        """This spec, with its unset keys taken from ``base``."""
        if base is None:
            return self
        mine = {k: v for k, v in self.__dict__.items() if v is not None}
        return base.model_copy(update=mine)


class LoadModelSpec(_M):
    """Load-dependent slowdown: ``min(max_factor, 1 + slowdown * max(0, active - threshold))``."""

    threshold: int = Field(0, ge=0)
    slowdown: float = Field(ge=0)
    max_factor: float | None = Field(None, ge=1)

    def model(self) -> LoadModel:
        return LoadModel(self.threshold, self.slowdown, self.max_factor)


TimingSpec.model_rebuild()


class UsageSpec(_M):
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)


class ToolCallSpec(_M):
    name: str = Field(min_length=1)
    arguments: Any = Field(default_factory=dict)
    """A mapping (string values are templates), or ``generate`` to draw arguments from
    the tool's JSON schema declared in the request."""
    id: str | None = None

    @field_validator("arguments")
    @classmethod
    def _args(cls, value: Any) -> Any:
        if value == "generate" or isinstance(value, dict):
            return value
        raise ValueError("arguments must be a mapping or the word 'generate'")


def _faults(value: Any) -> Any:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else value


class Step(_M):
    """One model step: what the model streams in answer to one request."""

    text: str | None = None
    """The reply text (a template)."""
    words: Range | None = None
    """Generated filler words appended to the text (deterministic from the seed)."""
    reasoning: str | None = None
    reasoning_words: Range | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    interleave: bool = False
    """Interleave the argument fragments of parallel tool calls on the wire."""
    chunks: int | None = Field(None, ge=0, le=100_000)
    """Exactly this many text chunks."""
    chunk_words: Range | None = None
    """Words per text chunk (default: the text in 3 to 8 chunks)."""
    finish_reason: Literal["stop", "length"] | None = None
    usage: UsageSpec | None = None
    fault: list[FaultSpec] = Field(default_factory=list)
    timing: TimingSpec | None = None
    replay: str | None = None
    """A recorded stream (a fixture file, relative to the scenario) to play back."""

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_list(cls, value: Any) -> Any:
        return _faults(value)

    @model_validator(mode="after")
    def _replay_alone(self) -> Step:
        if self.replay is not None:
            others = [k for k in self.model_fields_set if k not in ("replay", "timing")]
            if others:
                raise ValueError(f"replay cannot be combined with {', '.join(sorted(others))}")
        if self.chunks is not None and self.chunk_words is not None:
            raise ValueError("give chunks or chunk_words, not both")
        if self.chunk_words is not None and self.chunk_words.min < 1:
            raise ValueError("chunk_words must be at least 1")
        return self

    def templates(self) -> list[tuple[str, str]]:
        """(key, template) pairs, for placeholder checks."""
        out = [(k, v) for k in ("text", "reasoning") if isinstance(v := getattr(self, k), str)]
        for i, call in enumerate(self.tool_calls):
            out += [(f"tool_calls[{i}].arguments", t) for t in _templates(call.arguments)]
        return out


class Match(_M):
    """When a rule applies. Every condition given must hold; none given: always."""

    text: str | None = None
    """The message text equals this (``/sim`` lines removed, whitespace stripped)."""
    contains: str | None = None
    regex: str | None = None
    """``re.search`` on the message text; named groups become template placeholders."""
    turn: list[int] | None = None
    """The message is the N-th user message of the conversation (1-based; a list: any)."""
    step: int | None = Field(None, ge=0)
    """The model step within the turn: 0 on the user message, 1 after the first tool results..."""
    tool_results: bool | None = None
    """The request ends with tool results (true) or not (false)."""
    tool: str | None = None
    """The request ends with a result of this tool."""

    @field_validator("turn", mode="before")
    @classmethod
    def _turns(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError("turn must be an integer or a list of integers")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    def groups(self) -> set[str]:
        return set(re.compile(self.regex).groupindex) if self.regex else set()


class Rule(_M):
    """A matcher and the steps it scripts, or a built-in behaviour."""

    name: str | None = None
    builtin: Literal["sim_directives", "echo"] | None = None
    """``sim_directives``: messages with ``/sim`` lines; ``echo``: "You said: ..." (any message)."""
    match: Match = Field(default_factory=Match)
    respond: Step | None = None
    steps: list[Step] | None = None
    fault: list[FaultSpec] = Field(default_factory=list)
    timing: TimingSpec | None = None

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_list(cls, value: Any) -> Any:
        return _faults(value)

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if self.builtin is not None:
            extra = [k for k in ("respond", "steps", "match") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"a builtin rule takes no {', '.join(extra)}")
            return self
        if (self.respond is None) == (self.steps is None):
            raise ValueError("a rule needs exactly one of 'respond' or 'steps' (or 'builtin')")
        if self.steps is not None and not self.steps:
            raise ValueError("steps must not be empty")
        allowed = TEMPLATE_VARS | self.match.groups()
        for i, step in enumerate(self.scripted_steps()):
            where = "respond" if self.respond is not None else f"steps[{i}]"
            for key, template in step.templates():
                try:
                    names = template_fields(template)
                except ValueError as exc:
                    raise ValueError(f"{where}.{key}: {exc}") from None
                for name in names:
                    if name not in allowed:
                        raise ValueError(
                            f"{where}.{key}: unknown placeholder {{{name}}} "
                            f"(known: {', '.join(sorted(allowed))})"
                        )
        return self

    def scripted_steps(self) -> list[Step]:
        return [self.respond] if self.respond is not None else list(self.steps or [])


class WireSpec(_M):
    provider: str = "Simulator"
    """The ``provider`` field of every chunk."""
    usage_chunk: Literal["repeat_finish", "null_finish", "empty_choices"] = "repeat_finish"
    """Shape of the final usage chunk: the current OpenRouter one (one choice repeating
    the finish_reason), the 2026-01 one (finish_reason null) or the OpenAI one
    (``choices: []``)."""


class Scenario(_M):
    name: str | None = None
    description: str | None = None
    extends: str | None = None
    timing: TimingSpec | None = None
    faults: list[FaultSpec] = Field(default_factory=list)
    wire: WireSpec = Field(default_factory=WireSpec)
    fallback: Step | None = None
    rules: list[Rule] = Field(default_factory=list)

    _source: str = PrivateAttr("<scenario>")
    _recordings: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    def recording(self, path: str) -> Any:
        """The loaded fixture of a ``replay`` step."""
        return self._recordings[path]


# ---------------------------------------------------------------------- loading
def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``simulator/scenarios``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def _resolve(ref: str, base_dir: Path | None) -> Path:
    if "/" not in ref and "\\" not in ref and not ref.endswith((".yaml", ".yml")):
        path = BUILTIN_DIR / f"{ref}.yaml"
        if not path.exists():
            raise ScenarioError(
                f"no built-in scenario {ref!r} (built-in: {', '.join(builtin_scenarios())})"
            )
        return path
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def load_scenario(ref: str | Path, *, _chain: tuple[str, ...] = ()) -> Scenario:
    """Load a scenario by built-in name (``tools``) or file path, resolving ``extends``.

    Raises:
        ScenarioError: unreadable file, invalid YAML, or an invalid key (the message
            names the file, the rule and the key).
    """
    path = _resolve(str(ref), None) if not isinstance(ref, Path) else ref
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read scenario: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    return load_scenario_data(data, source=source, base_dir=path.parent, _chain=_chain)


def load_scenario_data(
    data: Any,
    *,
    source: str = "<scenario>",
    base_dir: Path | None = None,
    _chain: tuple[str, ...] = (),
) -> Scenario:
    """Validate an already-parsed scenario mapping (see :func:`load_scenario`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping with a 'rules' list")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format(exc, data, source)) from None
    if scenario.extends is not None:
        parent_path = _resolve(scenario.extends, base_dir)
        key = str(parent_path.resolve())
        if key in _chain or str(Path(source).resolve()) == key:
            raise ScenarioError(f"{source}: key extends: circular extends via {scenario.extends!r}")
        parent = load_scenario(parent_path, _chain=(*_chain, str(Path(source).resolve())))
        merged = scenario.model_copy(
            update={
                "rules": [*scenario.rules, *parent.rules],
                "faults": [*scenario.faults, *parent.faults],
                "timing": scenario.timing.over(parent.timing) if scenario.timing else parent.timing,
                "wire": scenario.wire if "wire" in scenario.model_fields_set else parent.wire,
                "fallback": scenario.fallback or parent.fallback,
            }
        )
        merged._recordings.update(parent._recordings)
        scenario = merged
    scenario._source = source
    _load_recordings(scenario, data, source, base_dir)
    return scenario


def _load_recordings(scenario: Scenario, data: dict[str, Any], source: str, base_dir: Path | None) -> None:
    from simulator.record import Recording, RecordingError

    own_rules = len(data.get("rules") or [])
    for i, rule in enumerate(scenario.rules[:own_rules]):
        for j, step in enumerate(rule.scripted_steps()):
            if step.replay is None:
                continue
            path = Path(step.replay)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                scenario._recordings[step.replay] = Recording.load(path)
            except RecordingError as exc:
                where = "respond" if rule.respond is not None else f"steps[{j}]"
                raise ScenarioError(f"{source}: {_rule_label(data, i)}: key {where}.replay: {exc}") from None
    if scenario.fallback is not None and scenario.fallback.replay is not None:
        raise ScenarioError(f"{source}: key fallback.replay: the fallback cannot replay a recording")


def _rule_label(data: dict[str, Any], index: int) -> str:
    rules = data.get("rules")
    name = None
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        name = rules[index].get("name")
    return f"rule #{index + 1}" + (f" {name!r}" if isinstance(name, str) else "")


def _format(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            where = _rule_label(data, loc[1]) + ": "
            loc = loc[2:]
        key = ""
        for part in loc:
            if isinstance(part, int):
                key += f"[{part}]"
            elif part.startswith(("function-", "union[")) or part in ("int", "str"):
                continue  # validator-internal steps pydantic adds to the location
            else:
                key += ("." if key else "") + part
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        if key:
            lines.append(f"{source}: {where}key {key}: {msg}")
        else:
            lines.append(f"{source}: {where or 'key (top level): '}{msg}")
    return "\n".join(dict.fromkeys(lines))

"""The planner: one request in, one complete script of the stream out.

:meth:`Simulator.plan` is pure -- no clock, no I/O, no state shared between
requests -- so both faces (the in-process provider and the HTTP face) play the very
same :class:`Plan`, and concurrent sessions cannot disturb one another.

Determinism: a request is reduced to a canonical form (each message's role, text,
tool calls and tool_call_id; each declared tool's name and parameters; the
request's own ``seed`` if any), hashed with the configured seed, and every random
choice is drawn from generators seeded by that hash: one for the content, one for
the timing, one for the faults, one for ids. Changing the timing model therefore
never changes what is said, and formatting differences between clients (``content:
null`` vs ``""``, extra keys) never change the stream.

Which rule answers: the rules are tried in order against the turn's user message
(the last one) and the request's position in the turn (``step``: the number of
assistant messages after it). A rule with ``steps`` answers step N with its N-th
step; a rule with ``respond`` answers the first step only, unless its match has a
``step``, ``tool_results`` or ``tool`` condition. Past a rule's last step -- and
whenever nothing matches a request that ends with tool results -- the reply quotes
the results, one ``Tool NAME returned: RESULT`` line each.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from server.loop.jsonutil import dumps

from server.loop.provider import ModelRequest, ProviderErrorKind, Usage
from simulator.directives import Directives, parse_directives
from simulator.faults import FaultSpec
from simulator.generate import (
    arguments_from_schema,
    count_words,
    split_text,
    split_words,
    tokens,
    words,
)
from simulator.record import Recording
from simulator.scenario import Range, Rule, Scenario, Step, TimingSpec, render_template
from simulator.timing import Fixed, LoadMeter, Timing

__all__ = [
    "Drop",
    "End",
    "Hang",
    "HttpError",
    "Piece",
    "Plan",
    "PlannedCall",
    "ReplayPlan",
    "Simulator",
    "StreamError",
    "canonical_request",
]

DEFAULT_CREATED = 1767225600
"""The ``created`` timestamp of every response (2026-01-01T00:00:00Z): fixed, so that
the same request gives the same bytes whenever it is made."""


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True, slots=True)
class Piece:
    """One content chunk on the wire, after ``delay_s`` seconds."""

    delay_s: float
    kind: Literal["text", "reasoning", "tool"]
    text: str = ""
    """The text, the reasoning, or a piece of a tool call's arguments."""
    index: int = 0
    """The tool call's index (kind ``tool``)."""
    call_id: str | None = None
    """Set on the first fragment of a tool call only, with ``name``."""
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedCall:
    index: int
    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None
    """None when the raw arguments are malformed (fault ``malformed_args``)."""
    fragments: int


@dataclass(frozen=True, slots=True)
class End:
    delay_s: float
    reason: Literal["stop", "length", "tool_calls"]
    usage: Usage
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StreamError:
    delay_s: float
    code: int | str
    message: str
    kind: ProviderErrorKind


@dataclass(frozen=True, slots=True)
class Drop:
    delay_s: float
    mode: Literal["reset", "eof"] = "reset"


@dataclass(frozen=True, slots=True)
class Hang:
    delay_s: float
    keepalive: bool = True


@dataclass(frozen=True, slots=True)
class HttpError:
    delay_s: float
    status: int
    message: str
    kind: ProviderErrorKind
    retryable: bool
    retry_after_s: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


Terminal = End | StreamError | Drop | Hang | HttpError


@dataclass(frozen=True)
class Plan:
    """Everything one model step will stream, with its timing."""

    pieces: tuple[Piece, ...]
    calls: tuple[PlannedCall, ...]
    terminal: Terminal
    timing: Timing
    generation_id: str
    created: int
    model: str
    provider: str = "Simulator"
    usage_chunk: str = "repeat_finish"
    rule: str | None = None
    """Which rule answered (its name, ``builtin:NAME``, ``rule #N`` or ``fallback``)."""
    fault: str | None = None


@dataclass(frozen=True)
class ReplayPlan:
    """A recorded stream to play back as it was."""

    recording: Recording
    model: str
    rule: str | None = None


# ---------------------------------------------------------------------- context
def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content
        )
    return str(content)


def _canonical_message(m: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"role": m.get("role"), "content": _content_text(m.get("content"))}
    if m.get("tool_calls"):
        item["tool_calls"] = [
            [c.get("id"), (c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments")]
            for c in m["tool_calls"]
        ]
    if m.get("tool_call_id") is not None:
        item["tool_call_id"] = m.get("tool_call_id")
    return item


# A session's history is sent again with every step, as the same message objects:
# their canonical JSON and word counts are kept by identity (the entry holds the
# message, so its id cannot be reused while cached). Bounded; cleared when full.
_MESSAGE_CACHE: dict[int, tuple[Mapping[str, Any], bytes, int]] = {}
_MESSAGE_CACHE_MAX = 50_000


def _message_facts(m: Mapping[str, Any]) -> tuple[bytes, int]:
    """(canonical JSON with sorted keys, word count) of one message."""
    hit = _MESSAGE_CACHE.get(id(m))
    if hit is not None and hit[0] is m:
        return hit[1], hit[2]
    facts = (dumps(_canonical_message(m), sort_keys=True),
             count_words(_content_text(m.get("content"))))
    if len(_MESSAGE_CACHE) >= _MESSAGE_CACHE_MAX:
        _MESSAGE_CACHE.clear()
    _MESSAGE_CACHE[id(m)] = (m, *facts)
    return facts


def request_digest(seed: int, request: ModelRequest) -> bytes:
    """SHA-256 of ``{"seed": seed, **canonical_request(request)}`` serialized with
    sorted keys -- built from the cached per-message JSON, byte for byte the same."""
    tools = canonical_request(request, messages=False)
    blob = b"".join([
        b'{"messages":[', b",".join(_message_facts(m)[0] for m in request.messages),
        b'],"request_seed":', dumps(tools["request_seed"]),
        b',"seed":', dumps(seed),
        b',"tools":', dumps(tools["tools"], sort_keys=True), b"}",
    ])
    return hashlib.sha256(blob).digest()


def canonical_request(request: ModelRequest, *, messages: bool = True) -> dict[str, Any]:
    """The parts of a request that decide the stream (see the module docstring)."""
    canon = [_canonical_message(m) for m in request.messages] if messages else []
    tools = [
        [(t.get("function") or {}).get("name"), (t.get("function") or {}).get("parameters")]
        for t in request.tools
    ]
    return {"messages": canon, "tools": tools, "request_seed": request.sampling.get("seed")}


@dataclass
class _Context:
    messages: Sequence[Mapping[str, Any]]
    tools: dict[str, Any]
    directives: Directives
    turn: int
    step: int
    results: list[tuple[str, str]]
    """The trailing tool results: (tool name, content)."""
    last_is_tool: bool
    prompt_tokens: int

    @property
    def text(self) -> str:
        return self.directives.text

    def quote(self) -> str:
        return "\n".join(f"Tool {name} returned: {content}" for name, content in self.results)


def _context(request: ModelRequest) -> _Context:
    msgs = request.messages
    user_idx = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
    prompt = _content_text(msgs[user_idx].get("content")) if user_idx >= 0 else ""
    step = sum(1 for m in msgs[user_idx + 1 :] if m.get("role") == "assistant")
    i = len(msgs)
    while i > 0 and msgs[i - 1].get("role") == "tool":
        i -= 1
    names: dict[str, str] = {}
    if 0 < i < len(msgs):
        for call in msgs[i - 1].get("tool_calls") or []:
            names[str(call.get("id"))] = (call.get("function") or {}).get("name", "unknown")
    results = [
        (names.get(str(m.get("tool_call_id")), "unknown"), _content_text(m.get("content"))) for m in msgs[i:]
    ]
    tools = {
        (t.get("function") or {}).get("name"): (t.get("function") or {}).get("parameters")
        for t in request.tools
    }
    return _Context(
        messages=msgs,
        tools=tools,
        directives=parse_directives(prompt),
        turn=sum(1 for m in msgs if m.get("role") == "user"),
        step=step,
        results=results,
        last_is_tool=bool(msgs) and msgs[-1].get("role") == "tool",
        prompt_tokens=sum(_message_facts(m)[1] for m in msgs),
    )


# ---------------------------------------------------------------------- content
@dataclass
class _Content:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(id, name, arguments)."""
    finish: Literal["stop", "length", "tool_calls"] = "stop"
    usage: Usage = Usage(0, 0, 0)
    interleave: bool = False


class _Streams:
    """The independent random generators of one request."""

    def __init__(self, seed: int, request: ModelRequest) -> None:
        self.digest = request_digest(seed, request)
        self.content = self._make(b"content")
        self.timing = self._make(b"timing")
        self.faults = self._make(b"faults")
        self.ids = self._make(b"ids")

    def _make(self, salt: bytes) -> random.Random:
        return random.Random(hashlib.sha256(self.digest + salt).digest())


def _call_id(ids: random.Random, i: int) -> str:
    return f"call_{ids.getrandbits(48):012x}{i}"


def _reply(text: str, chunks: int | None, rng: random.Random, prompt_tokens: int) -> _Content:
    """The built-in reply: ``text`` in ``chunks`` chunks (default 3 to 8)."""
    if chunks is None:
        if not text:
            text = words(rng, 8)
        chunks = min(len(tokens(text)), rng.randint(3, 8)) or 1
    if len(text) < chunks:
        text = (text + " " if text else "") + words(rng, chunks)
    completion = count_words(text)
    return _Content(
        text=split_text(text, chunks, rng),
        usage=Usage(prompt_tokens, completion, prompt_tokens + completion),
    )


def _count(r: Range | None, rng: random.Random) -> int:
    return 0 if r is None else rng.randint(r.min, r.max)


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render_template(value, values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


# ---------------------------------------------------------------------- simulator
class Simulator:
    """Plans streams for a scenario and a seed. Shared by all sessions of a process;
    holds no per-request state apart from the load meter (timing only).

    Args:
        scenario: the loaded scenario.
        seed: the one seed behind everything random.
        model: the model name reported when a request names none.
        timing: timing for scenarios (rules, steps) that leave keys unset.
        created: the ``created`` timestamp of every response.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 0,
        model: str = "simulator-1",
        timing: TimingSpec | None = None,
        created: int = DEFAULT_CREATED,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.model = model
        self.base_timing = timing
        self.created = created
        self.load = LoadMeter()
        self._regex = {r.match.regex: re.compile(r.match.regex) for r in scenario.rules if r.match.regex}

    # -------------------------------------------------------------- matching
    def _match(self, rule: Rule, ctx: _Context) -> dict[str, str] | None:
        if rule.builtin == "sim_directives":
            return {} if ctx.directives.present else None
        if rule.builtin == "echo":
            return {}
        m = rule.match
        text = ctx.text
        if m.text is not None and text != m.text.strip():
            return None
        if m.contains is not None and m.contains not in text:
            return None
        if m.turn is not None and ctx.turn not in m.turn:
            return None
        if m.step is not None and ctx.step != m.step:
            return None
        if rule.respond is not None and m.step is None and m.tool_results is None and m.tool is None:
            if ctx.step != 0:  # a plain `respond` answers the turn's first step only
                return None
        if m.tool_results is not None and bool(ctx.last_is_tool) != m.tool_results:
            return None
        if m.tool is not None and not any(name == m.tool for name, _ in ctx.results):
            return None
        groups: dict[str, str] = {}
        if m.regex is not None:
            found = self._regex[m.regex].search(text)
            if found is None:
                return None
            groups = {k: v or "" for k, v in found.groupdict().items()}
        return groups

    # -------------------------------------------------------------- planning
    def plan(self, request: ModelRequest) -> Plan | ReplayPlan:
        """Script the stream answering ``request`` (pure and deterministic)."""
        ctx = _context(request)
        rng = _Streams(self.seed, request)
        model = request.model or self.model
        chosen: Rule | None = None
        groups: dict[str, str] = {}
        label = "fallback"
        for n, rule in enumerate(self.scenario.rules):
            found = self._match(rule, ctx)
            if found is not None:
                chosen, groups = rule, found
                label = rule.name or (f"builtin:{rule.builtin}" if rule.builtin else f"rule #{n + 1}")
                break

        step: Step | None = None
        faults: list[FaultSpec] = []
        timing = self.base_timing
        if self.scenario.timing:
            timing = self.scenario.timing.over(timing)
        interleave = False
        if chosen is not None and chosen.timing:
            timing = chosen.timing.over(timing)

        if chosen is not None and chosen.builtin:
            content, faults = self._builtin(ctx, rng)
            faults = faults or list(chosen.fault)
        elif chosen is not None:
            steps = chosen.scripted_steps()
            index = 0 if chosen.respond is not None else ctx.step
            if index < len(steps):
                step = steps[index]
                if step.replay is not None:
                    return ReplayPlan(self.scenario.recording(step.replay), model, label)
                content = self._scripted(step, ctx, rng, groups)
                interleave = step.interleave
                faults = list(step.fault)
                if step.timing:
                    timing = step.timing.over(timing)
            else:
                content = _reply(ctx.quote(), None, rng.content, ctx.prompt_tokens)
            faults = faults or list(chosen.fault)
        elif ctx.last_is_tool:
            content = _reply(ctx.quote(), None, rng.content, ctx.prompt_tokens)
        else:
            fallback = self.scenario.fallback or Step(words=Range(min=12, max=12))
            content = self._scripted(fallback, ctx, rng, {})
            faults = list(fallback.fault)
            if fallback.timing:
                timing = fallback.timing.over(timing)
        content.interleave = interleave
        faults = faults or list(self.scenario.faults)
        fault = next((f for f in faults if rng.faults.random() < f.probability), None)
        return self._assemble(content, fault, self._timing(timing), rng, model, label)

    def _builtin(self, ctx: _Context, rng: _Streams) -> tuple[_Content, list[FaultSpec]]:
        """The ``/sim`` directives and the echo (the behaviour of the basics)."""
        crng = rng.content
        if ctx.last_is_tool:
            return _reply(ctx.quote(), None, crng, ctx.prompt_tokens), []
        d = ctx.directives
        if d.problems:
            return _reply("Simulator could not read: " + "; ".join(d.problems), None, crng, ctx.prompt_tokens), []
        faults = []
        if d.error:
            params = {"after_chunks": 3} if d.error in ("midstream", "drop") else {}
            faults = [FaultSpec(kind=d.error, **params)]  # type: ignore[arg-type]
        if d.tools:
            calls = [(_call_id(rng.ids, i), name, args) for i, (name, args) in enumerate(d.tools)]
            preface = f"Calling {', '.join(n for n, _ in d.tools)}." if d.text else ""
            content = _reply(preface, None, crng, ctx.prompt_tokens) if preface else _Content()
            content.calls = calls
            content.finish = "tool_calls"
            p = ctx.prompt_tokens
            content.usage = Usage(p, 10 * len(calls), p + 10 * len(calls))
            return content, faults
        text = f"You said: {d.text}" if d.text else ""
        if d.error in ("midstream", "drop"):
            return _reply(text or words(crng, 12), 4, crng, ctx.prompt_tokens), faults
        return _reply(text, d.chunks, crng, ctx.prompt_tokens), faults

    def _scripted(self, step: Step, ctx: _Context, rng: _Streams, groups: dict[str, str]) -> _Content:
        crng = rng.content
        values: dict[str, Any] = {
            "text": ctx.text,
            "turn": ctx.turn,
            "step": ctx.step,
            "tool_results": ctx.quote(),
            "last_result": ctx.results[-1][1] if ctx.results else "",
            **groups,
        }
        reasoning = render_template(step.reasoning, values) if step.reasoning else ""
        if step.reasoning_words:
            reasoning = " ".join(filter(None, [reasoning, words(crng, _count(step.reasoning_words, crng))]))
        text = render_template(step.text, values) if step.text else ""
        if step.words:
            extra = words(crng, _count(step.words, crng))
            text = text + (" " if text and extra and not text.endswith((" ", "\n")) else "") + extra
        calls = []
        for i, spec in enumerate(step.tool_calls):
            if spec.arguments == "generate":
                args = arguments_from_schema(ctx.tools.get(spec.name), crng)
            else:
                args = _fill(spec.arguments, values)
            calls.append((spec.id or _call_id(rng.ids, i), spec.name, args))
        if step.chunks is not None:
            if len(text) < step.chunks:
                text = (text + " " if text else "") + words(crng, step.chunks)
            pieces = split_text(text, step.chunks, crng)
        elif step.chunk_words is not None:
            pieces = split_words(text, step.chunk_words.min, step.chunk_words.max, crng)
        elif text:
            pieces = split_text(text, min(len(tokens(text)), crng.randint(3, 8)) or 1, crng)
        else:
            pieces = []
        thoughts = split_words(reasoning, 1, 3, crng) if reasoning else []
        p = ctx.prompt_tokens
        completion = count_words(text) + count_words(reasoning) + 10 * len(calls)
        if step.usage is not None:
            p = step.usage.prompt_tokens if step.usage.prompt_tokens is not None else p
            if step.usage.completion_tokens is not None:
                completion = step.usage.completion_tokens
        finish = "tool_calls" if calls else (step.finish_reason or "stop")
        return _Content(pieces, thoughts, calls, finish, Usage(p, completion, p + completion))  # type: ignore[arg-type]

    def _timing(self, spec: TimingSpec | None) -> Timing:
        if spec is None:
            return Timing()
        return Timing(
            first_chunk=spec.first_chunk or Fixed(0.0),
            chunk_interval=spec.chunk_interval or Fixed(0.0),
            tokens_per_second=spec.tokens_per_second,
            load=spec.load.model() if spec.load else None,
            keepalive_ms=spec.keepalive_interval or 1000.0,
        )

    # -------------------------------------------------------------- assembly
    def _assemble(
        self,
        content: _Content,
        fault: FaultSpec | None,
        timing: Timing,
        rng: _Streams,
        model: str,
        label: str,
    ) -> Plan:
        crng, trng = rng.content, rng.timing
        gen_id = f"gen-{self.created}-" + "".join(
            rng.ids.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20)
        )
        calls: list[PlannedCall] = []
        fragments: list[list[tuple[str, int, str | None, str | None, str]]] = []
        for i, (call_id, name, args) in enumerate(content.calls):
            raw = dumps(args).decode()
            parsed: dict[str, Any] | None = args
            if fault is not None and fault.kind == "malformed_args" and i == (fault.call or 0):
                raw, parsed = raw[:-1], None
            k = crng.randint(1, max(1, min(4, len(raw))))
            parts = split_text(raw, k, crng) if raw else [""]
            frags = [("tool", i, call_id, name, "")] + [("tool", i, None, None, p) for p in parts]
            fragments.append(frags)  # type: ignore[arg-type]
            calls.append(PlannedCall(i, call_id, name, raw, parsed, len(frags)))
        wire: list[tuple[str, int, str | None, str | None, str]] = [
            *(("reasoning", 0, None, None, t) for t in content.reasoning),
            *(("text", 0, None, None, t) for t in content.text),
        ]
        if content.interleave:
            for j in range(max((len(f) for f in fragments), default=0)):
                wire += [f[j] for f in fragments if j < len(f)]
        else:
            wire += [frag for f in fragments for frag in f]

        kind = fault.kind if fault else None
        if kind in ("midstream", "drop", "hang"):
            assert fault is not None
            default = 0 if kind == "hang" else (max(1, len(wire) // 2) if wire else 0)
            after = fault.after_chunks if fault.after_chunks is not None else default
            wire = wire[: min(after, len(wire))]
        elif kind in ("rate_limit", "unavailable", "payment", "error_before_first_chunk"):
            wire = []

        pieces: list[Piece] = []
        for n, (k_, idx, cid, name, text) in enumerate(wire):
            delay = timing.first_delay(trng) if n == 0 else timing.next_delay(trng, text or name or "")
            pieces.append(Piece(delay, k_, text, idx, cid, name))  # type: ignore[arg-type]
        last_delay = timing.first_delay(trng) if not pieces else timing.next_delay(trng, "")

        terminal: Terminal
        msg = fault.message if fault and fault.message else None
        if fault is None or kind in ("malformed_args", "duplicate_finish"):
            terminal = End(last_delay, content.finish, content.usage, duplicate=kind == "duplicate_finish")
        elif kind == "rate_limit":
            terminal = HttpError(
                last_delay, 429, msg or "Rate limit exceeded (simulated)", "rate_limit", True,
                fault.retry_after_s if fault.retry_after_s is not None else 1.0,
                {"provider_name": self.scenario.wire.provider, "limit_source": "upstream_provider_shared_pool",
                 "raw": "simulated: temporarily rate-limited upstream"},
            )
        elif kind == "unavailable":
            status = fault.status or 503
            default_msg = "No provider available (simulated outage)" if status == 503 else "Provider returned error"
            terminal = HttpError(
                last_delay, status, msg or default_msg, "unavailable", True, fault.retry_after_s,
                {"provider_name": self.scenario.wire.provider, "raw": "simulated outage"},
            )
        elif kind == "payment":
            budget = fault.retry_after_s is not None
            terminal = HttpError(
                last_delay, 402,
                msg or ("In-flight budget exhausted (simulated)" if budget
                        else "This request requires more credits, or fewer max_tokens (simulated)"),
                "payment", budget, fault.retry_after_s,
                {"limit_source": "openrouter_in_flight_budget", "reason": "in_flight_budget_exhausted"}
                if budget else {"limit_source": "openrouter_credits"},
            )
        elif kind in ("error_before_first_chunk", "midstream"):
            code = fault.code if fault.code is not None else 502
            terminal = StreamError(
                last_delay, code, msg or "Provider disconnected unexpectedly (simulated)",
                "unavailable" if kind == "error_before_first_chunk" else "midstream",
            )
        elif kind == "drop":
            terminal = Drop(last_delay, fault.mode or "reset")
        else:  # hang
            terminal = Hang(last_delay, fault.keepalive if fault.keepalive is not None else True)
        return Plan(
            tuple(pieces), tuple(calls), terminal, timing, gen_id, self.created, model,
            self.scenario.wire.provider, self.scenario.wire.usage_chunk, label, kind,
        )

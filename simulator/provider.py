"""The deterministic simulated AI provider (in-process).

Same seed and same request (messages, tools) give the same stream of events,
whatever the timing or the number of concurrent sessions: each stream's random
generator is seeded from the configured seed and a hash of the request itself.

Default behaviour (see :mod:`simulator.directives` for the ``/sim`` lines):

* a plain message gets ``You said: <text>`` split into several chunks;
* after tool results, the reply quotes each result: ``Tool NAME returned: RESULT``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from server.loop.provider import (
    Finish,
    ModelRequest,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ToolCall,
    Usage,
)
from simulator.clock import Clock, RealClock
from simulator.directives import parse_directives

__all__ = ["SimulatorConfig", "SimulatorProvider", "split_text"]

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_TOKEN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    seed: int = 0
    first_chunk_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    model: str = "simulator-1"


def split_text(text: str, n: int, rng: random.Random) -> list[str]:
    """Split ``text`` into exactly ``n`` non-empty pieces (``n <= len(text)``), at word
    boundaries where there are enough words, else at characters."""
    if n <= 0:
        return []
    tokens = _TOKEN.findall(text)
    if len(tokens) < n:
        tokens = list(text)
    cuts = sorted(rng.sample(range(1, len(tokens)), n - 1)) if n > 1 else []
    bounds = [0, *cuts, len(tokens)]
    return ["".join(tokens[a:b]) for a, b in zip(bounds, bounds[1:])]


def _count_tokens(text: str) -> int:
    return len(text.split())


class SimulatorProvider:
    """A :class:`~server.loop.provider.ModelProvider` that needs no network."""

    name = "simulator"

    def __init__(self, config: SimulatorConfig = SimulatorConfig(), clock: Clock | None = None) -> None:
        self.config = config
        self.default_model = config.model
        self.clock = clock or RealClock()

    @classmethod
    def from_settings(cls, settings: Any) -> SimulatorProvider:
        """Build from the server's ``Settings`` (its ``simulator`` section)."""
        sim = settings.simulator
        return cls(SimulatorConfig(sim.seed, sim.first_chunk_ms, sim.chunk_interval_ms, sim.model))

    async def aclose(self) -> None:
        return None

    def _rng(self, request: ModelRequest) -> random.Random:
        blob = orjson.dumps(
            {"seed": self.config.seed, "messages": list(request.messages), "tools": list(request.tools)},
            option=orjson.OPT_SORT_KEYS,
        )
        return random.Random(hashlib.sha256(blob).digest())

    def script(self, request: ModelRequest) -> tuple[list[ProviderEvent], str | None]:
        """Return the events this request streams, and the fault to raise (if any)
        after them. Pure: no timing, no I/O."""
        rng = self._rng(request)
        messages = request.messages
        prompt_tokens = sum(_count_tokens(str(m.get("content") or "")) for m in messages)
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last.get("role") == "tool":
            return self._tool_followup(messages, rng, prompt_tokens), None
        d = parse_directives(str(last.get("content") or ""))
        if d.problems:
            text = "Simulator could not read: " + "; ".join(d.problems)
            return self._reply(text, None, rng, prompt_tokens), None
        if d.error in ("rate_limit", "unavailable", "hang"):
            return [], d.error
        if d.tools:
            calls: list[ProviderEvent] = []
            for i, (name, args) in enumerate(d.tools):
                call_id = f"call_{rng.getrandbits(48):012x}{i}"
                calls.append(ToolCall(call_id, name, args, orjson.dumps(args).decode()))
            preface = d.text and f"Calling {', '.join(n for n, _ in d.tools)}."
            events = self._reply(preface, None, rng, prompt_tokens) if preface else []
            if events:
                events.pop()  # drop the text step's Finish
            usage = Usage(prompt_tokens, 10 * len(calls), prompt_tokens + 10 * len(calls))
            return [*events, *calls, Finish("tool_calls", usage)], None
        text = f"You said: {d.text}" if d.text else ""
        if d.error == "midstream":
            events = self._reply(text or " ".join(rng.choices(_WORDS, k=12)), 4, rng, prompt_tokens)
            return events[:-1][:3], "midstream"
        return self._reply(text, d.chunks, rng, prompt_tokens), None

    def _reply(self, text: str, chunks: int | None, rng: random.Random, prompt_tokens: int) -> list[ProviderEvent]:
        if chunks is None:
            if not text:
                text = " ".join(rng.choices(_WORDS, k=8))
            chunks = min(len(_TOKEN.findall(text)), rng.randint(3, 8)) or 1
        if len(text) < chunks:
            words = rng.choices(_WORDS, k=chunks)
            text = (text + " " if text else "") + " ".join(words)
        pieces = split_text(text, chunks, rng)
        completion = _count_tokens(text)
        usage = Usage(prompt_tokens, completion, prompt_tokens + completion)
        return [*(TextDelta(p) for p in pieces), Finish("stop", usage)]

    def _tool_followup(
        self, messages: Sequence[Mapping[str, Any]], rng: random.Random, prompt_tokens: int
    ) -> list[ProviderEvent]:
        i = len(messages)
        while i > 0 and messages[i - 1].get("role") == "tool":
            i -= 1
        names: dict[str, str] = {}
        if i > 0:
            for call in messages[i - 1].get("tool_calls") or []:
                names[call["id"]] = call["function"]["name"]
        lines = [
            f"Tool {names.get(str(m.get('tool_call_id')), 'unknown')} returned: {m.get('content')}"
            for m in messages[i:]
        ]
        return self._reply("\n".join(lines), None, rng, prompt_tokens)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        events, fault = self.script(request)
        cfg = self.config
        await self._pause(cfg.first_chunk_ms)
        if fault == "rate_limit":
            raise ProviderError("simulated rate limit", kind="rate_limit", retryable=True, retry_after_s=1.0, status=429)
        if fault == "unavailable":
            raise ProviderError("simulated provider outage", kind="unavailable", retryable=True, status=503)
        if fault == "hang":
            await self.clock.sleep(10**9)
        for n, ev in enumerate(events):
            if n:
                await self._pause(cfg.chunk_interval_ms)
            yield ev
        if fault == "midstream":
            await self._pause(cfg.chunk_interval_ms)
            raise ProviderError("simulated failure mid-stream", kind="midstream", retryable=True)

    async def _pause(self, ms: float) -> None:
        # Always yield to the event loop, so a zero-latency stream cannot starve others.
        await self.clock.sleep(ms / 1000.0)

"""The deterministic simulated AI provider (in-process).

Same seed and same request (messages, tools) give the same stream of events,
whatever the timing or the number of concurrent sessions: each stream's random
generators are seeded from the configured seed and a hash of the request itself
(see :mod:`simulator.script`).

Default behaviour -- the ``default`` scenario (see :mod:`simulator.directives` for
the ``/sim`` lines):

* a plain message gets ``You said: <text>`` split into several chunks;
* after tool results, the reply quotes each result: ``Tool NAME returned: RESULT``.

Other scenarios (``tools``, ``faults``, ``chatty`` or a file) are chosen with
``SimulatorConfig.scenario`` / the ``simulator.scenario`` setting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.loop.provider import (
    Finish,
    ModelRequest,
    ProviderError,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from simulator.clock import Clock, RealClock
from simulator.generate import split_text
from simulator.record import provider_events
from simulator.scenario import LoadModelSpec, Scenario, TimingSpec, load_scenario
from simulator.script import (
    Drop,
    End,
    Hang,
    HttpError,
    Plan,
    ReplayPlan,
    Simulator,
    StreamError,
)
from simulator.timing import Fixed, LogNormal

__all__ = ["SimulatorConfig", "SimulatorProvider", "split_text"]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    seed: int = 0
    first_chunk_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    model: str = "simulator-1"
    scenario: str | Scenario = "default"
    """A built-in scenario name, a YAML file path, or a loaded :class:`Scenario`."""
    first_chunk_p99_ms: float | None = None
    """With this set, the time to first chunk is lognormal (median ``first_chunk_ms``)."""
    chunk_interval_p99_ms: float | None = None
    """With this set, the interval is lognormal (median ``chunk_interval_ms``)."""
    tokens_per_second: float | None = None
    load_threshold: int = 0
    load_slowdown: float = 0.0
    """0 disables the load-dependent slowdown."""
    load_max_factor: float | None = None
    keepalive_ms: float = 1000.0

    def timing(self) -> TimingSpec:
        """The timing for scenarios that set none (the flat settings keys)."""

        def dist(median: float, p99: float | None) -> Fixed | LogNormal:
            if p99 is None or median <= 0:
                return Fixed(median)
            return LogNormal(median, max(p99, median))

        load = None
        if self.load_slowdown > 0:
            load = LoadModelSpec(
                threshold=self.load_threshold, slowdown=self.load_slowdown, max_factor=self.load_max_factor
            )
        return TimingSpec(
            first_chunk=dist(self.first_chunk_ms, self.first_chunk_p99_ms),
            chunk_interval=dist(self.chunk_interval_ms, self.chunk_interval_p99_ms),
            tokens_per_second=self.tokens_per_second,
            load=load,
            keepalive_interval=self.keepalive_ms,
        )

    def simulator(self) -> Simulator:
        scenario = self.scenario if isinstance(self.scenario, Scenario) else load_scenario(self.scenario)
        return Simulator(scenario, seed=self.seed, model=self.model, timing=self.timing())


class SimulatorProvider:
    """A :class:`~server.loop.provider.ModelProvider` that needs no network.

    Raises:
        ScenarioError: (at construction) the configured scenario is invalid.
    """

    name = "simulator"

    def __init__(
        self,
        config: SimulatorConfig = SimulatorConfig(),
        clock: Clock | None = None,
        *,
        simulator: Simulator | None = None,
    ) -> None:
        self.config = config
        self.default_model = config.model
        self.clock = clock or RealClock()
        self.simulator = simulator or config.simulator()

    @classmethod
    def from_settings(cls, settings: Any, clock: Clock | None = None) -> SimulatorProvider:
        """Build from the server's ``Settings`` (its ``simulator`` section)."""
        return cls(config_from_settings(settings.simulator), clock)

    async def aclose(self) -> None:
        return None

    def plan(self, request: ModelRequest) -> Plan | ReplayPlan:
        """The script of the stream answering ``request`` (pure; no timing)."""
        return self.simulator.plan(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        plan = self.simulator.plan(request)
        with self.simulator.load.streaming():
            if isinstance(plan, ReplayPlan):
                async for ev in self._replay(plan):
                    yield ev
                return
            async for ev in self._play(plan):
                yield ev

    async def _pause(self, seconds: float, plan: Plan) -> None:
        # Always yield to the event loop, so a zero-latency stream cannot starve others.
        await self.clock.sleep(self.simulator.load.scale(seconds, plan.timing.load))

    async def _play(self, plan: Plan) -> AsyncIterator[ProviderEvent]:
        term = plan.terminal
        if isinstance(term, HttpError):
            await self._pause(term.delay_s, plan)
            raise ProviderError(
                term.message, kind=term.kind, retryable=term.retryable,
                retry_after_s=term.retry_after_s, status=term.status,
            )
        left = {c.index: c.fragments for c in plan.calls}
        next_call = 0
        for n, piece in enumerate(plan.pieces):
            if piece.delay_s or not n % 4:
                # At zero latency, still yield to the loop every 4 pieces -- not after
                # each one (a full event-loop round trip per chunk).
                await self._pause(piece.delay_s, plan)
            if piece.kind == "text":
                yield TextDelta(piece.text)
            elif piece.kind == "reasoning":
                yield ReasoningDelta(piece.text)
            else:
                left[piece.index] -= 1
                # Calls are yielded in index order, each once all its fragments are out.
                while next_call < len(plan.calls) and left[next_call] == 0:
                    call = plan.calls[next_call]
                    if call.arguments is None:
                        raise ProviderError(
                            f"tool call {call.name} arguments are not valid JSON",
                            kind="protocol", retryable=False,
                        )
                    yield ToolCall(call.id, call.name, call.arguments, call.raw_arguments)
                    next_call += 1
        await self._pause(term.delay_s, plan)
        if isinstance(term, End):
            yield Finish(term.reason, term.usage)
            if term.duplicate:
                yield Finish(term.reason, term.usage)
        elif isinstance(term, StreamError):
            raise ProviderError(term.message, kind=term.kind, retryable=True)
        elif isinstance(term, Drop):
            return
        elif isinstance(term, Hang):
            while True:
                await self.clock.sleep(3600.0)

    async def _replay(self, plan: ReplayPlan) -> AsyncIterator[ProviderEvent]:
        start = self.clock.now()
        for at, item in provider_events(plan.recording):
            await self.clock.sleep(max(0.0, start + at - self.clock.now()))
            if isinstance(item, ProviderError):
                raise item
            yield item


def config_from_settings(sim: Any) -> SimulatorConfig:
    """A :class:`SimulatorConfig` from the ``simulator`` settings section (keys that
    are missing keep their defaults)."""
    defaults = SimulatorConfig()
    values = {
        name: getattr(sim, name, getattr(defaults, name))
        for name in SimulatorConfig.__dataclass_fields__
    }
    return SimulatorConfig(**values)

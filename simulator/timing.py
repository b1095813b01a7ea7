"""Timing models: how long the simulated model takes, drawn from the seed.

A *distribution* of milliseconds is written in a scenario (or built from settings) as
one of:

* ``250`` or ``{fixed: 250}`` -- always 250 ms;
* ``{min: 100, max: 400}`` -- uniform between the two;
* ``{median: 300, p99: 2000}`` -- lognormal: half the draws are below ``median`` and
  99 % below ``p99`` (``mu = ln(median)``, ``sigma = (ln(p99) - ln(median)) / 2.3263``);
  an optional ``max`` caps a draw.

A stream's delays (see :class:`Timing`):

* before the first chunk: a draw from ``first_chunk``;
* before every later chunk: a draw from ``chunk_interval`` plus, with
  ``tokens_per_second`` set, ``tokens / tokens_per_second`` where a chunk's tokens
  are estimated as ``ceil(characters / 4)`` (at least 1);
* under load, every delay is multiplied when it starts by::

      factor = min(max_factor, 1 + slowdown * max(0, active - threshold))

  where ``active`` is the number of streams this simulator is running at that
  moment, the stream itself included.

Draws come from a random generator seeded by the seed and the request, separate
from the one that writes the content: timing never changes what is said.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Distribution",
    "Fixed",
    "LoadMeter",
    "LoadModel",
    "LogNormal",
    "Timing",
    "Uniform",
    "estimate_tokens",
    "parse_distribution",
]

Z99 = 2.3263478740408408
"""The standard normal's 99th percentile."""


@dataclass(frozen=True, slots=True)
class Fixed:
    ms: float

    def sample(self, rng: random.Random) -> float:
        return self.ms


@dataclass(frozen=True, slots=True)
class Uniform:
    min_ms: float
    max_ms: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.min_ms, self.max_ms)


@dataclass(frozen=True, slots=True)
class LogNormal:
    median_ms: float
    p99_ms: float
    max_ms: float | None = None

    @property
    def sigma(self) -> float:
        return (math.log(self.p99_ms) - math.log(self.median_ms)) / Z99

    def sample(self, rng: random.Random) -> float:
        value = self.median_ms * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return min(value, self.max_ms) if self.max_ms is not None else value


Distribution = Fixed | Uniform | LogNormal


def _ms(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of milliseconds, got {value!r}")
    if value < 0 or math.isinf(value) or math.isnan(value):
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_distribution(value: Any) -> Distribution:
    """Read a distribution of milliseconds (see the module docstring).

    Raises:
        ValueError: the value is none of the accepted shapes; the message says why.
    """
    if isinstance(value, Fixed | Uniform | LogNormal):
        return value
    if not isinstance(value, dict):
        return Fixed(_ms(value, "a fixed delay"))
    keys = set(value)
    if keys == {"fixed"}:
        return Fixed(_ms(value["fixed"], "fixed"))
    if keys == {"min", "max"}:
        lo, hi = _ms(value["min"], "min"), _ms(value["max"], "max")
        if hi < lo:
            raise ValueError("max must be >= min")
        return Uniform(lo, hi)
    if keys in ({"median", "p99"}, {"median", "p99", "max"}):
        median, p99 = _ms(value["median"], "median"), _ms(value["p99"], "p99")
        if median <= 0 or p99 < median:
            raise ValueError("a lognormal needs 0 < median <= p99")
        cap = _ms(value["max"], "max") if "max" in value else None
        return LogNormal(median, p99, cap)
    raise ValueError(
        "a delay is a number of ms, {fixed: MS}, {min: MS, max: MS} or "
        f"{{median: MS, p99: MS[, max: MS]}}; got keys {sorted(keys)}"
    )


def estimate_tokens(text: str) -> int:
    """The pacing estimate of a chunk's tokens: ``ceil(len(text) / 4)``, at least 1."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Load-dependent slowdown (see the module docstring for the formula)."""

    threshold: int = 0
    slowdown: float = 0.0
    max_factor: float | None = None

    def factor(self, active: int) -> float:
        f = 1.0 + self.slowdown * max(0, active - self.threshold)
        return min(f, self.max_factor) if self.max_factor is not None else f


@dataclass(frozen=True, slots=True)
class Timing:
    """The timing model of a stream, resolved from settings, scenario and rule."""

    first_chunk: Distribution = Fixed(0.0)
    chunk_interval: Distribution = Fixed(0.0)
    tokens_per_second: float | None = None
    load: LoadModel | None = None
    keepalive_ms: float = 1000.0
    """HTTP face: interval of ``: OPENROUTER PROCESSING`` comments while the first
    chunk is pending."""

    def first_delay(self, rng: random.Random) -> float:
        """Seconds before the first chunk."""
        return self.first_chunk.sample(rng) / 1000.0

    def next_delay(self, rng: random.Random, text: str) -> float:
        """Seconds before a later chunk carrying ``text``."""
        ms = self.chunk_interval.sample(rng)
        if self.tokens_per_second:
            ms += 1000.0 * estimate_tokens(text) / self.tokens_per_second
        return ms / 1000.0


class LoadMeter:
    """Counts the streams in flight, for the load-dependent slowdown."""

    def __init__(self) -> None:
        self.active = 0

    @contextmanager
    def streaming(self) -> Iterator[None]:
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def scale(self, seconds: float, load: LoadModel | None) -> float:
        return seconds * load.factor(self.active) if load is not None else seconds

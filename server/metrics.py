"""Prometheus metrics (``GET /metrics``), kept off the hot path.

Per-chunk work is a plain integer increment; everything that can be read from the
live state (connections, sessions by state, queue depth) is computed when scraped
by a custom collector. Per-turn figures (first-chunk latency, turn duration, tool
wait) go to histograms, a few observations per turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "TurnClock"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """One registry per app (tests run several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.notifications = 0
        """Notifications queued (plain int: incremented once per notification)."""
        self.turns = Counter("ailoop_turns", "Turns finished, by finish reason", ["reason"], registry=r)
        self.turns_started = Counter("ailoop_turns_started", "Turns started", registry=r)
        self.first_chunk = Histogram("ailoop_first_chunk_seconds", "From a turn's start to its first output",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.turn_duration = Histogram("ailoop_turn_duration_seconds", "From a turn's start to its end",
                                       buckets=_DURATION_BUCKETS, registry=r)
        self.tool_wait = Histogram("ailoop_tool_result_wait_seconds", "From a step's tool calls to the last result",
                                   buckets=_DURATION_BUCKETS, registry=r)
        self.provider_errors = Counter("ailoop_provider_errors", "Turn errors, by JSON-RPC error code and kind",
                                       ["code", "kind"], registry=r)
        self.sessions_ended = Counter("ailoop_sessions_ended", "Sessions ended, by reason", ["reason"], registry=r)

    def bind(self, *, sessions_by_state: Callable[[], dict[str, int]], connections: Callable[[], int],
             queue: Callable[[], tuple[int, int, int]], retries: Callable[[], int]) -> None:
        """Attach the scrape-time readers of live state (``queue``: frames and bytes
        queued now, and merged chunks since start)."""
        self.registry.register(_LiveCollector(self, sessions_by_state, connections, queue, retries))


class _LiveCollector(Collector):
    def __init__(self, m: Metrics, sessions: Callable[[], dict[str, int]], connections: Callable[[], int],
                 queue: Callable[[], tuple[int, int, int]], retries: Callable[[], int]) -> None:
        self.m, self.sessions, self.connections, self.queue, self.retries = m, sessions, connections, queue, retries

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("ailoop_connections", "Open WebSocket connections", value=self.connections())
        g = GaugeMetricFamily("ailoop_sessions", "Sessions, by status (detached ones under detached)", labels=["state"])
        for state, n in sorted(self.sessions().items()):
            g.add_metric([state], n)
        yield g
        frames, nbytes, merged = self.queue()
        yield GaugeMetricFamily("ailoop_outbound_queue_frames", "Frames queued for all connections", value=frames)
        yield GaugeMetricFamily("ailoop_outbound_queue_bytes", "Bytes queued for all connections", value=nbytes)
        yield CounterMetricFamily("ailoop_merged_chunks", "Text chunks merged for slow readers",
                                  value=merged)
        yield CounterMetricFamily("ailoop_notifications", "Notifications sent to clients", value=self.m.notifications)
        yield CounterMetricFamily("ailoop_provider_retries", "Provider requests retried", value=self.retries())


class TurnClock:
    """Per-session timing of the turn in flight, fed by the bridge."""

    __slots__ = ("metrics", "started", "first_seen", "tool_wait_since")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.started: float | None = None
        self.first_seen = False
        self.tool_wait_since: float | None = None

    def status(self, status: str, turn_id: Any) -> None:
        now = time.monotonic()
        if status == "streaming":
            if self.started is None:
                self.started, self.first_seen = now, False
                self.metrics.turns_started.inc()
            elif self.tool_wait_since is not None:
                self.metrics.tool_wait.observe(now - self.tool_wait_since)
                self.tool_wait_since = None
        elif status == "awaiting_tool_results":
            self.tool_wait_since = now

    def output(self) -> None:
        if not self.first_seen and self.started is not None:
            self.first_seen = True
            self.metrics.first_chunk.observe(time.monotonic() - self.started)

    def finished(self, reason: str) -> None:
        if self.started is not None:
            self.metrics.turn_duration.observe(time.monotonic() - self.started)
        self.metrics.turns.labels(reason).inc()
        self.started, self.tool_wait_since = None, None

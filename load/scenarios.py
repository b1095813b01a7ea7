"""The load scenarios: who the users are, how many, for how long, and the simulator's
timing profile. Thresholds live in ``load/thresholds.yaml``, one section per scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    users: int
    spawn_rate: float
    duration_s: float
    user_classes: tuple[str, ...]
    first_chunk_ms: float = 50.0
    """Simulator latency to the first chunk (``simulator.first_chunk_ms``)."""
    chunk_interval_ms: float = 20.0
    """Simulator latency between chunks (``simulator.chunk_interval_ms``)."""
    locust_options: tuple[str, ...] = ()
    """Extra locust arguments (the AILoop options of load/locustfile.py)."""
    probe_levels: tuple[int, ...] = (0, 50, 100, 200)
    """Session counts for the RSS-per-session fit (a probe before the locust run)."""
    stop_timeout_s: float = 15.0
    server: dict[str, dict[str, object]] = field(default_factory=dict)
    """Extra server configuration (sections → keys)."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "seed_target",
            "The original target: 10 users chatting, simulator 50 ms to first chunk, 20 ms between chunks.",
            users=10, spawn_rate=10, duration_s=30, user_classes=("ChatUser",),
            locust_options=("--ailoop-think", "0.2,0.8"),
        ),
        Scenario(
            "tool_heavy",
            "20 users whose every turn calls 1-3 tools in parallel and answers them with provideToolResult.",
            users=20, spawn_rate=10, duration_s=30, user_classes=("ToolUser",),
            locust_options=("--ailoop-think", "0.2,0.8", "--ailoop-parallel-tools", "3"),
        ),
        Scenario(
            "churn",
            "30 users that connect, start a session and leave at random points (before a response, "
            "mid-stream with or without a close handshake, after a turn, or cleanly); nothing may be left behind.",
            users=30, spawn_rate=15, duration_s=30, user_classes=("ChurnUser",),
            first_chunk_ms=20, chunk_interval_ms=10,
            locust_options=("--ailoop-think", "0.05,0.3"),
        ),
        Scenario(
            "slow_consumer",
            "10 chatting users plus 2 users that ask for 300-chunk replies at 1 ms/chunk and read one frame per "
            "10 ms through a 4 KB receive buffer: the chatting users must not suffer.",
            users=12, spawn_rate=12, duration_s=40, user_classes=("ChatUser", "SlowConsumerUser"),
            chunk_interval_ms=1,
            locust_options=("--ailoop-think", "0.2,0.8", "--ailoop-slow-users", "2", "--ailoop-slow-chunks", "300",
                            "--ailoop-slow-read-ms", "10"),
            stop_timeout_s=30,
        ),
        Scenario(
            "soak",
            "20 users chatting for 10 minutes (override with --duration), rotating sessions every 50 turns: "
            "memory must level off (no leak) and nothing may be left behind.",
            users=20, spawn_rate=10, duration_s=600, user_classes=("ChatUser",),
            locust_options=("--ailoop-think", "0.1,0.5", "--ailoop-rotate", "50"),
            probe_levels=(0, 100, 200, 400),
        ),
        Scenario(
            "scale",
            "300 users chatting (a turn every 1-3 s each), ramped at 50 users/s; use --workers N for "
            "locust's distributed mode.",
            users=300, spawn_rate=50, duration_s=60, user_classes=("ChatUser",),
            locust_options=("--ailoop-think", "1,3"),
            probe_levels=(0, 250, 500, 1000),
        ),
    ]
}

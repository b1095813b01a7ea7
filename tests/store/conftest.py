"""Shared-store tests: a real redis-server (Debian's package) on 127.0.0.1, a free
port, no persistence, stopped by its process id; server processes run against it.

When /usr/bin/redis-server is missing, scripts/install-redis.sh installs it. Only
when that is impossible (no root, no apt) do these tests skip -- loudly: the reason
is printed and listed in pytest's summary (-ra).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.store.redisproc import RedisProcess, ensure_redis_server
from tests.support import spawn_server

_BINARY: tuple[str | None, str] | None = None


def _redis_binary() -> str:
    global _BINARY
    if _BINARY is None:
        _BINARY = ensure_redis_server()
    path, why = _BINARY
    if path is None:
        msg = f"REDIS TESTS SKIPPED: redis-server cannot be installed here: {why}"
        print("\n" + "!" * 78 + f"\n{msg}\n" + "!" * 78, file=sys.stderr)
        warnings.warn(msg, stacklevel=2)
        pytest.skip(msg)
    return path


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    """A fresh redis-server for one test."""
    rp = RedisProcess(binary=_redis_binary()).start()
    try:
        yield rp
    finally:
        rp.close()


def server_config(redis_url: str, *, grace: float = 10.0, log_size: int = 1000, max_sessions: int = 10_000,
                  chunk_ms: float = 5.0, extra: str = "") -> str:
    return f"""
server: {{log_level: warning, validate_outgoing: true}}
simulator: {{seed: 7, first_chunk_ms: {chunk_ms}, chunk_interval_ms: {chunk_ms}}}
ai: {{first_chunk_timeout_s: 5, idle_timeout_s: 5, turn_timeout_s: 30}}
limits: {{requests_per_s: 0, max_sessions: {max_sessions}}}
session: {{resume_grace_s: {grace}, replay_log_size: {log_size}}}
store: {{backend: redis, redis_url: "{redis_url}", heartbeat_s: 0.2, owner_timeout_s: 1.0, op_timeout_s: 2,
         ttl_margin_s: 2}}
{extra}
"""


@contextlib.contextmanager
def two_servers(redis_url: str, tmp_path: Path, **kw) -> Iterator[tuple[tuple, tuple]]:
    """Two ``python -m server`` processes sharing ``redis_url``: ((proc, ws_url), (proc, ws_url))."""
    text = server_config(redis_url, **kw)
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    procs = []
    with spawn_server(text, tmp_path / "a") as a, spawn_server(text, tmp_path / "b") as b:
        procs = [a[0], b[0]]
        yield a, b
    for proc in procs:  # killed by now: their logs (warnings and up) must show no traceback
        err = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in err, err[-4000:]
        if os.environ.get("AILOOP_SHOW_SERVER_LOGS"):
            print(err)

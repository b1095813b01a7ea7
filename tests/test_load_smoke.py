"""Smoke of the load harness (load/): a few users for a few seconds, no latency thresholds.

Proves that ``python -m load run`` starts the server, runs locust (standalone and
distributed), writes its results, checks thresholds, and that the server is left
with no session, connection or running turn. Timings on shared machines vary, so
latency limits belong to ``make load`` and the benchmark, not to this test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# The harness runs in child processes; importing locust here would gevent-patch
# threading in the test process itself. `make test` installs the load extra, so a
# missing package is a failure, not a skip.
_MISSING = [m for m in ("locust", "websocket", "psutil") if importlib.util.find_spec(m) is None]
if _MISSING:
    pytest.fail(f"the load extra is not installed ({', '.join(_MISSING)}): pip install -e '.[dev,load]'",
                pytrace=False)

ROOT = Path(__file__).resolve().parents[1]

# Counts and leftovers only: no percentiles.
SMOKE_THRESHOLDS = """
_server: &server
  leftover_sessions: {max: 0}
  leftover_connections: {max: 0}
  leftover_running_turns: {max: 0}
  log_problems: {max: 0}
  server_exit_code: {max: 0}
seed_target:
  rows:
    "*": {max_failures: 0}
    connect: {min_count: 1}
    first chunk: {min_count: 1}
    full turn: {min_count: 1}
  server:
    <<: *server
    rss_kb_per_session: {min: 0.001}
churn:
  rows:
    "*": {max_failures: 0}
    startSession: {min_count: 1}
  server: *server
"""


def _run(tmp_path: Path, *args: str) -> dict:
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(SMOKE_THRESHOLDS)
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "load", "run", *args, "--thresholds", str(thresholds), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )
    summary_path = out / "summary.json"
    assert summary_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, (failed, summary.get("errors"), proc.stdout[-3000:], proc.stderr[-2000:])
    for name in ("locust.json", "locust.html", "locust_stats.csv", "server.log"):
        assert (out / name).exists(), name
    return summary


@pytest.mark.timeout(180)
def test_seed_target_smoke_leaves_nothing_behind(tmp_path: Path) -> None:
    """A few chatting users for a few seconds: every phase has its row, no failure,
    RSS per session is measured, and /healthz drains to zero afterwards."""
    s = _run(tmp_path, "seed_target", "--users", "3", "--spawn-rate", "3", "--duration", "4",
             "--probe-levels", "0,5,10,20")
    rows = {r["name"]: r for r in s["rows"]}
    assert {"connect", "startSession", "sendUserMessage", "first chunk", "full turn"} <= set(rows)
    assert s["server"]["leftover_sessions"] == 0
    assert s["server"]["leftover_running_turns"] == 0
    assert len(s["memory_probe"]["points"]) == 4


@pytest.mark.timeout(180)
def test_churn_smoke_distributed_leaves_nothing_behind(tmp_path: Path) -> None:
    """Users that vanish at random points, run through locust's distributed mode
    (a master and one worker): no session, connection or turn is left on the server."""
    s = _run(tmp_path, "churn", "--users", "6", "--spawn-rate", "6", "--duration", "4", "--workers", "1",
             "--no-probe")
    assert s["workers"] == 1
    assert s["server"]["leftover_sessions"] == 0
    assert s["server"]["leftover_connections"] == 0
    assert any(r["name"].startswith("churn: ") for r in s["rows"])

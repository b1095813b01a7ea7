"""Simulator HTTP servers started as subprocesses on 127.0.0.1 (shared by the session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulator.helpers import SimServer, start_server

CONFIG = """\
simulator:
  scenario: tools
  seed: 11
  first_chunk_ms: 30
  chunk_interval_ms: 1
  keepalive_ms: 10
"""


@pytest.fixture(scope="session")
def sim_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "config.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="session")
def server_a(sim_config: Path) -> Iterator[SimServer]:
    """``python -m simulator --config ...`` (tools scenario, seed 11)."""
    srv = start_server("--config", str(sim_config), env={"PYTHONHASHSEED": "1"})
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server_b(sim_config: Path) -> Iterator[SimServer]:
    """A second process with the same configuration (and another hash seed)."""
    srv = start_server("--config", str(sim_config), "--seed", "11", "--scenario", "tools",
                       env={"PYTHONHASHSEED": "999"})
    yield srv
    srv.stop()

"""Contract suite plumbing: the server under test, profiles, requirement coverage.

Target: by default a fresh ``python -m server`` subprocess on a free loopback port with
contract_tests/server.yaml (zero-latency simulator, 0.5 s first-chunk timeout). With
``--server-url ws://host:port/ws`` or ``AILOOP_CONTRACT_URL`` the suite targets that
server instead (health URL derived from it); tell it the server's first-chunk timeout
with ``--first-chunk-timeout`` / ``AILOOP_CONTRACT_FIRST_CHUNK_TIMEOUT_S`` (tests that
need it skip otherwise) and pass ``--shared-server`` / ``AILOOP_CONTRACT_SHARED=1`` if
other clients use it (exact /healthz counts are then not checked).

Requirements: every test names the spec requirements it checks with
``@pytest.mark.requirement("ORD-3", ...)``; the run prints the coverage of
``x-requirements`` and fails when a requirement has no test (when the whole suite ran).
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect as sync_connect

from contract_tests import profiles
from contract_tests.harness import Target, encode, health_url_for
from contract_tests.oracle import Limits
from contract_tests.protocol import REQUIREMENTS, ROOT

HERE = Path(__file__).resolve().parent
SERVER_CONFIG = HERE / "server.yaml"
_LISTENING = re.compile(r"listening on (ws://\S+)")


# ---------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("contract", "AILoop Interactive contract tests (contract_tests/)")
    g.addoption("--server-url", default=None, help="test this running server (ws://host:port/ws) instead of starting one; env AILOOP_CONTRACT_URL")
    g.addoption("--first-chunk-timeout", type=float, default=None, help="the target server's ai.first_chunk_timeout_s; env AILOOP_CONTRACT_FIRST_CHUNK_TIMEOUT_S")
    g.addoption("--shared-server", action="store_true", default=False, help="other clients use the target: skip exact /healthz counts; env AILOOP_CONTRACT_SHARED=1")
    g.addoption("--auth-token", default=None, help="bearer token for a target with authentication on; env AILOOP_CONTRACT_TOKEN")
    g.addoption("--contract-profile", choices=sorted(profiles.PROFILES), default=None, help="hypothesis profile of the contract suite (quick, deep); env HYPOTHESIS_PROFILE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(*ids): spec x-requirements ids this contract test checks")
    config.addinivalue_line("markers", "server_log_allows(*regex): server log ERROR lines this test may cause")
    chosen = (
        config.getoption("--contract-profile", None)
        or os.environ.get("HYPOTHESIS_PROFILE")
        or config.getoption("hypothesis_profile", None)
        or "quick"
    )
    profiles.ACTIVE = chosen if chosen in profiles.PROFILES else "quick"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------- target
def _describe(url: str, **kw: Any) -> Target:
    """Ask the server (initialize) for its limits and backend."""
    token = kw.get("token")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with sync_connect(url, open_timeout=10, close_timeout=2, max_size=None, additional_headers=headers) as ws:
        ws.send(encode({"jsonrpc": "2.0", "id": "contract-probe", "method": "initialize", "params": {"protocolVersion": 1}}))
        deadline = time.monotonic() + 10
        while True:
            msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if isinstance(msg, dict) and msg.get("id") == "contract-probe":
                break
    if "result" not in msg:
        raise pytest.UsageError(f"initialize on {url} failed: {msg}")
    res = msg["result"]
    extra = {"capabilities": res["capabilities"], "serverInfo": res["serverInfo"]}
    return Target(url, health_url_for(url), Limits.from_initialize(res["limits"]), res["capabilities"]["backends"], extra=extra, **kw)


def _wait_health(url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy after {timeout}s ({last})")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def _spawn(tmp: Path, overrides: dict[str, Any] | None = None, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, Path, dict[str, Any]]:
    cfg = _merge(yaml.safe_load(SERVER_CONFIG.read_text(encoding="utf-8")), overrides or {})
    cfg_path = tmp / "server.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log_path = tmp / "server.log"
    log = log_path.open("w", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILOOP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(cfg_path), "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            log.write(line)
            log.flush()

    threading.Thread(target=pump, daemon=True, name="contract-server-stdout").start()
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"python -m server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            m = _LISTENING.search(lines.get(timeout=0.1))
        except queue.Empty:
            m = None
        if m:
            return proc, m.group(1), log_path, cfg
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"python -m server did not print its URL in 30s:\n{log_path.read_text()[-3000:]}")


def _final_health(t: Target | str) -> None:
    """After the whole run the server must hold nothing of ours (LIFE-1)."""
    if isinstance(t, Target) and not t.exclusive:
        return
    url = t if isinstance(t, str) else t.health_url
    deadline = time.monotonic() + 5
    h: dict[str, Any] = {}
    while time.monotonic() < deadline:
        h = _wait_health(url, 5)
        if not h.get("sessions") and not h.get("connections") and not h.get("runningTurns"):
            return
        time.sleep(0.1)
    pytest.fail(f"after the contract run {url} still reports {h} (expected zero sessions, connections, running turns)", pytrace=False)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The server under test (see the module docstring)."""
    config = request.config
    url = config.getoption("--server-url") or os.environ.get("AILOOP_CONTRACT_URL")
    fct_opt = config.getoption("--first-chunk-timeout") or os.environ.get("AILOOP_CONTRACT_FIRST_CHUNK_TIMEOUT_S")
    shared = config.getoption("--shared-server") or _env_flag("AILOOP_CONTRACT_SHARED")
    if url:
        _wait_health(health_url_for(url), 10)
        token = config.getoption("--auth-token") or os.environ.get("AILOOP_CONTRACT_TOKEN")
        t = _describe(url, started_here=False, exclusive=not shared, first_chunk_timeout_s=float(fct_opt) if fct_opt else None, token=token)
        if t.exclusive:
            h = _wait_health(t.health_url, 5)
            if h.get("sessions"):
                raise pytest.UsageError(f"{t.health_url} reports {h['sessions']} sessions before the run; stop other clients or pass --shared-server")
        yield t
        _final_health(t)
        return
    proc, ws_url, log_path, cfg = _spawn(tmp_path_factory.mktemp("contract-server"))
    try:
        _wait_health(health_url_for(ws_url), 20)
        yield _describe(
            ws_url,
            started_here=True,
            exclusive=True,
            first_chunk_timeout_s=float(cfg.get("ai", {}).get("first_chunk_timeout_s") or 0) or None,
            log_path=log_path,
        )
        _final_health(health_url_for(ws_url))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def extra_server(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``extra_server(name, overrides, env=None, token=None)``: a second server of this
    suite's own, with contract_tests/server.yaml plus ``overrides`` (for promises that
    need a configuration the main server does not have, e.g. authentication on).
    Only when the suite starts servers itself; tests skip otherwise."""
    started: dict[str, tuple[subprocess.Popen[str], Target]] = {}

    def start(name: str, overrides: dict[str, Any], env: dict[str, str] | None = None, token: str | None = None) -> Target:
        if not target.started_here:
            pytest.skip("needs a server with another configuration; the suite only starts those itself (no --server-url)")
        if name not in started:
            proc, url, log_path, cfg = _spawn(tmp_path_factory.mktemp(f"contract-{name}"), overrides, env)
            _wait_health(health_url_for(url), 20)
            fct = float(cfg.get("ai", {}).get("first_chunk_timeout_s") or 0) or None
            started[name] = (proc, _describe(url, started_here=True, exclusive=True, first_chunk_timeout_s=fct, log_path=log_path, token=token))
        return started[name][1]

    yield start
    for proc, _ in started.values():
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


_ERROR_LINE = re.compile(r'^(?:\S+ \S+ )?(?:ERROR|CRITICAL)\b|^(?:ERROR|CRITICAL):|"level":\s*"(?:error|critical)"', re.IGNORECASE)


@pytest.fixture(autouse=True)
def server_log_guard(request: pytest.FixtureRequest, target: Target) -> Iterator[None]:
    """A server this suite started must log no error while a test runs (a crash or
    traceback is a failure even when the client saw the right frames)."""
    if target.log_path is None:
        yield
        return
    start = target.log_path.stat().st_size
    yield
    time.sleep(0.02)
    with target.log_path.open("rb") as f:
        f.seek(start)
        new = f.read().decode("utf-8", "replace")
    allowed = [re.compile(rx) for m in request.node.iter_markers("server_log_allows") for rx in m.args]
    errors = [line for line in new.splitlines() if _ERROR_LINE.search(line)]
    bad = [line for line in errors if not any(rx.search(line) for rx in allowed)]
    if not errors and "Traceback" in new:
        bad = ["(a traceback without an ERROR line)"]
    if bad:
        pytest.fail("server logged errors during this test:\n" + new[-4000:], pytrace=False)


# ---------------------------------------------------------------------- requirement coverage
_COVERAGE: dict[str, list[str]] = defaultdict(list)
_ITEM_REQS: dict[str, list[str]] = {}
_OUTCOMES: dict[str, Counter[str]] = defaultdict(Counter)
_STATE = {"enforce": False, "deselected": False, "collected": False}


def _is_contract(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    problems: list[str] = []
    for item in items:
        if not _is_contract(item):
            continue
        ids = [a for m in item.iter_markers("requirement") for a in m.args]
        if not ids:
            problems.append(f"{item.nodeid}: names no requirement (@pytest.mark.requirement(...))")
        for rid in ids:
            if rid not in REQUIREMENTS:
                problems.append(f"{item.nodeid}: requirement {rid!r} is not in the spec's x-requirements")
        _ITEM_REQS[item.nodeid] = ids
        if profiles.ACTIVE == "deep" and config.pluginmanager.hasplugin("timeout"):
            item.add_marker(pytest.mark.timeout(0))
    if problems:
        raise pytest.UsageError("contract tests:\n  " + "\n  ".join(problems))


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(_is_contract(i) for i in items):
        _STATE["deselected"] = True


def pytest_collection_finish(session: pytest.Session) -> None:
    ran = {Path(str(i.fspath)).resolve() for i in session.items if _is_contract(i)}
    for i in session.items:
        if _is_contract(i):
            for rid in _ITEM_REQS.get(i.nodeid, []):
                _COVERAGE[rid].append(i.nodeid)
    _STATE["collected"] = bool(ran)
    everything = {p.resolve() for p in HERE.glob("test_*.py")}
    _STATE["enforce"] = bool(ran) and ran == everything and not _STATE["deselected"]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    reqs = _ITEM_REQS.get(report.nodeid)
    if not reqs:
        return
    outcome = None
    if report.when == "call":
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    elif report.outcome in ("skipped", "failed") and report.when == "setup":
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    if outcome:
        for rid in reqs:
            _OUTCOMES[rid][outcome] += 1


def _missing() -> list[str]:
    return [rid for rid in REQUIREMENTS if not _COVERAGE.get(rid)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _STATE["enforce"] and _missing() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _STATE["collected"]:
        return
    tr = terminalreporter
    tr.section(f"contract requirement coverage (spec x-requirements, profile {profiles.ACTIVE})")
    for rid, req in REQUIREMENTS.items():
        n = len(_COVERAGE.get(rid, []))
        o = _OUTCOMES.get(rid, Counter())
        detail = ", ".join(f"{v} {k}" for k, v in sorted(o.items())) or "not run"
        mark = "MISSING" if n == 0 else f"{n:2d} tests"
        tr.write_line(f"{rid:8s} {mark:9s} {detail:28s} {req['text'][:70]}")
    missing = _missing()
    if missing:
        verdict = "the run FAILS" if _STATE["enforce"] else "not enforced: only part of the suite was collected"
        tr.write_line(f"requirements without a test: {', '.join(missing)} ({verdict})", red=True)
    else:
        tr.write_line(f"all {len(REQUIREMENTS)} requirements have at least one test", green=True)

"""Server processes under test: start, pin, sample, probe memory, stop.

Used by the scenario runner (:mod:`load.runner`) and the benchmark
(:mod:`load.bench`). Everything here talks to 127.0.0.1 only, and every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import yaml

from load import aiows

__all__ = [
    "ROOT",
    "source_commit",
    "ServerProcess",
    "Sampler",
    "linear_fit",
    "memory_probe",
    "raise_nofile",
    "write_config",
]

ROOT = Path(__file__).resolve().parents[1]


def source_commit(root: Path | None) -> str | None:
    """The commit a server source tree is at: ``git rev-parse``, or a ``.commit`` file
    (a tree exported with ``git archive``)."""
    root = (root or ROOT).resolve()
    marker = root / ".commit"
    if marker.exists():
        return marker.read_text().strip()
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "server", "simulator", "spec"], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("+uncommitted" if dirty else "")


def raise_nofile(want: int | None = None) -> int:
    """Raise this process's soft open-files limit towards the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(max(want, soft), hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def write_config(path: Path, *, first_chunk_ms: float, chunk_interval_ms: float, log_level: str = "warning",
                 max_sessions: int = 20_000, extra: dict[str, Any] | None = None) -> Path:
    """A server config for a load run: the simulator with the given timing profile."""
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "log_level": log_level},
        "ai": {"backend": "simulator"},
        "simulator": {"seed": 0, "first_chunk_ms": first_chunk_ms, "chunk_interval_ms": chunk_interval_ms},
        "limits": {"max_sessions": max_sessions},
    }
    for section, values in (extra or {}).items():
        cfg[section] = {**cfg.get(section, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _preexec() -> None:  # pragma: no cover - runs in the child
    raise_nofile()


@dataclass
class ServerProcess:
    """A server child process (ours: ``python -m server``; or the bare endpoint)."""

    argv: list[str]
    log_path: Path
    cpu: int | None = None
    """Pin the process to this CPU (os.sched_setaffinity) when given."""
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    cwd: Path = ROOT
    """Where ``python -m server`` runs: this checkout, or another tree (``--server-root``)."""

    @classmethod
    def ours(cls, config: Path, log_path: Path, cpu: int | None = None, env: dict[str, str] | None = None,
             root: Path | None = None) -> ServerProcess:
        port = _free_port()
        argv = [sys.executable, "-m", "server", "--config", str(config.resolve()), "--port", str(port)]
        return cls(argv, log_path, cpu, env or {}, port, cwd=(root or ROOT).resolve())

    @classmethod
    def bare(cls, log_path: Path, cpu: int | None = None) -> ServerProcess:
        port = _free_port()
        argv = [sys.executable, "-m", "load.bare_server", "--port", str(port)]
        return cls(argv, log_path, cpu, {}, port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **self.env},
            preexec_fn=_preexec,  # noqa: PLW1509 - only raises RLIMIT_NOFILE
        )
        log.close()
        if self.cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, {self.cpu})
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        seen = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read() or b""
            seen += chunk
            if b"listening on ws://" in seen:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        else:
            self.stop()
            raise RuntimeError(f"server did not start within {timeout}s: {self.log_path.read_text()[-2000:]}")
        self.ps = psutil.Process(self.proc.pid)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    # ------------------------------------------------------------------ figures
    def rss(self) -> int:
        assert self.ps is not None
        return self.ps.memory_info().rss

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (threads included)."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return t.user + t.system

    def peak_rss(self) -> int | None:
        """VmHWM from /proc: the process's true peak RSS since start or the last reset."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM (Linux: ``echo 5 > /proc/PID/clear_refs``); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        r = httpx.get(self.http_url + "/healthz", timeout=timeout)
        r.raise_for_status()
        return r.json()

    async def ahealth(self, client: httpx.AsyncClient) -> dict[str, Any]:
        r = await client.get(self.http_url + "/healthz", timeout=5.0)
        r.raise_for_status()
        return r.json()

    def wait_drained(self, timeout: float = 15.0) -> dict[str, Any]:
        """Poll /healthz until sessions, connections and runningTurns are all 0 (or time out);
        return the last answer."""
        deadline = time.monotonic() + timeout
        h = self.health()
        while time.monotonic() < deadline:
            if h.get("sessions") == 0 and h.get("connections") == 0 and h.get("runningTurns") == 0:
                break
            time.sleep(0.1)
            h = self.health()
        return h

    def log_problems(self) -> list[str]:
        """Tracebacks and error lines in the server's log (text or JSON lines)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        marks = ("Traceback", " ERROR ", " CRITICAL ", '"level": "error"', '"level": "critical"',
                 '"level":"error"', '"level":"critical"')
        return [ln for ln in text.splitlines() if ln.startswith(("ERROR", "CRITICAL")) or any(m in ln for m in marks)]


class Sampler:
    """Samples a server's RSS and CPU (psutil) and /healthz at a fixed interval, in a thread."""

    def __init__(self, server: ServerProcess, interval: float = 0.25) -> None:
        import threading

        self.server = server
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        t0 = time.monotonic()
        with httpx.Client(timeout=2.0) as client:
            while not self._stop.is_set():
                row: dict[str, Any] = {"t": round(time.monotonic() - t0, 3)}
                try:
                    row["rss"] = self.server.rss()
                    row["cpu_s"] = self.server.cpu_seconds()
                except psutil.Error:
                    break
                try:
                    h = client.get(self.server.http_url + "/healthz").json()
                    row.update(sessions=h.get("sessions"), connections=h.get("connections"),
                               running=h.get("runningTurns"))
                except (httpx.HTTPError, ValueError):
                    row["health_error"] = True
                self.samples.append(row)
                self._stop.wait(self.interval)

    def peak_rss(self) -> int:
        return max((s["rss"] for s in self.samples if "rss" in s), default=0)


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line y = a + b x, with R^2 and the largest relative residual."""
    n = len(xs)
    if n < 2:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"), "max_rel_residual": float("nan")}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else float("nan")
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    span = (max(ys) - min(ys)) or 1.0
    return {
        "slope": b,
        "intercept": a,
        "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
        "max_rel_residual": max(abs(y - (a + b * x)) for x, y in zip(xs, ys)) / span,
    }


async def _open_session(host: str, port: int, with_turn: bool, timeout: float) -> aiows.WsConnection:
    """Connect, startSession and (optionally) run one short turn; return the open connection."""
    done = asyncio.get_running_loop().create_future()
    state = {"sid": None}

    def on_text(payload: bytes) -> None:
        msg = orjson.loads(payload)
        if msg.get("id") == 1 and "result" in msg:
            state["sid"] = msg["result"]["sessionId"]
            if with_turn:
                conn.send_text(orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "sendUserMessage",
                                             "params": {"sessionId": state["sid"], "content": "/sim chunks 3\nhello"}}))
            elif not done.done():
                done.set_result(None)
        elif "error" in msg and not done.done():
            done.set_exception(RuntimeError(f"server error: {msg['error']}"))
        elif msg.get("method") == "SessionStatusNotification" and msg["params"]["status"] == "idle":
            if not done.done():
                done.set_result(None)

    conn = await aiows.connect(host, port, "/ws", on_text, timeout)
    conn.send_text(b'{"jsonrpc":"2.0","id":1,"method":"startSession","params":{}}')
    await asyncio.wait_for(done, timeout)
    return conn


async def memory_probe(server: ServerProcess, levels: list[int], *, with_turn: bool = True,
                       settle_s: float = 0.5, batch: int = 100, timeout: float = 60.0) -> dict[str, Any]:
    """RSS at several counts of open sessions (one connection each, one turn done each),
    opened cumulatively in ascending order; then a linear fit of RSS against sessions.

    Returns ``{"points": [[sessions, rss], ...], "fit": {...}, "kb_per_session": slope/1024}``.
    """
    conns: list[aiows.WsConnection] = []
    points: list[list[int]] = []
    try:
        async with asyncio.timeout(timeout):
            for level in sorted(levels):
                while len(conns) < level:
                    n = min(batch, level - len(conns))
                    conns += await asyncio.gather(*(_open_session("127.0.0.1", server.port, with_turn, 30.0)
                                                    for _ in range(n)))
                await asyncio.sleep(settle_s)
                rss = sorted(server.rss() for _ in range(3))[1]
                points.append([level, rss])
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0.2)
    fit = linear_fit([p[0] for p in points], [p[1] for p in points])
    return {"points": points, "fit": fit, "kb_per_session": fit["slope"] / 1024}

"""Benchmark: our server against the bare FastAPI/uvicorn endpoint, in one run.

``python -m load.bench`` (quick mode: about a minute) or ``python -m load.bench --full``
(medians over 3 repeats, 10,000 idle sessions: about 10 minutes).

Both servers are child processes pinned to CPU 0; this client (asyncio, uvloop,
:mod:`load.aiows`) is pinned to CPU 1. For each concurrency (10, 100, 1,000
sessions, one connection each) and each server, in alternating order:

* **closed loop** -- every session sends ``sendUserMessage`` ("/sim chunks 50")
  again as soon as the previous turn ends (53 notifications per turn: streaming,
  50 chunks, final chunk, idle): saturating throughput;
* **paced** -- every session sends one request per ``--period`` seconds (default
  2.5 s, about 21 notifications/s each), at random phases: the realistic load.

Figures per run: notifications/s received, server CPU µs per notification (user +
system time of the server process, from /proc via psutil, over the measurement
window), first-chunk latency p50/p99 (request sent → first AIMessageChunk), errors.
Then idle memory: RSS of a fresh server against the number of connected sessions
(connect + startSession, then idle), fitted linearly: KB per session.

Ratios are ours/bare from the same repeat; the table shows medians over repeats.
Results are written to ``load/results/bench-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from load import aiows
from load.serverproc import ROOT, ServerProcess, memory_probe, raise_nofile, source_commit, write_config

__all__ = ["main"]

RESULTS = ROOT / "load" / "results"
CHUNKS = 50
NOTES_PER_TURN = CHUNKS + 3  # streaming, N chunks, final chunk, idle


_TICK = os.sysconf("SC_CLK_TCK")


SERVER_CPU = 0
CLIENT_CPU = 1


def _busy_s() -> dict[str, float]:
    """CPU seconds spent busy, machine-wide ("cpu") and per CPU ("cpu0", ...), from /proc/stat."""
    out: dict[str, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *rest = line.split()
            fields = [int(x) for x in rest]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            out[name] = (sum(fields[:8]) - idle) / _TICK
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


class _Session:
    """One benchmark session on its own connection; parses only what it needs."""

    __slots__ = ("d", "conn", "sid", "ready", "busy", "notes", "t_send", "t_first", "rec", "rid", "owed", "handle")

    def __init__(self, driver: Driver) -> None:
        self.d = driver
        self.conn: aiows.WsConnection | None = None
        self.sid = ""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.busy = False
        self.notes = 0
        self.t_send = 0.0
        self.t_first: float | None = None
        self.rec = False
        self.rid = 1
        self.owed = False
        self.handle: asyncio.TimerHandle | None = None

    def send_turn(self) -> None:
        self.busy = True
        self.notes = 0
        self.t_first = None
        self.rid += 1
        self.rec = self.d.recording
        self.t_send = time.perf_counter()
        self.conn.send_text(  # type: ignore[union-attr]
            b'{"jsonrpc":"2.0","id":%d,"method":"sendUserMessage","params":{"sessionId":"%s","content":"/sim chunks %d"}}'
            % (self.rid, self.sid.encode(), CHUNKS)
        )

    def on_text(self, p: bytes) -> None:
        d = self.d
        if b"AIMessageChunkNotification" in p:
            self.notes += 1
            if d.recording:
                d.notes += 1
            if self.t_first is None:
                self.t_first = time.perf_counter()
                if self.rec and d.recording:
                    d.lat.append(self.t_first - self.t_send)
            return
        if b"SessionStatusNotification" in p:
            if not self.busy:
                if b'"started"' in p and not self.ready.done():
                    self.ready.set_result(None)
                return
            self.notes += 1
            if d.recording:
                d.notes += 1
            if b'"idle"' in p:
                if self.notes != NOTES_PER_TURN:
                    d.errors["short turn"] += 1
                self.busy = False
                if d.recording:
                    d.turns += 1
                d.turn_ended(self)
            return
        if b'"result"' in p:
            if not self.sid:
                i = p.find(b'"sessionId":"') + 13
                self.sid = p[i : p.index(b'"', i)].decode()
            return
        d.errors["error frame" if b'"error"' in p else "unexpected frame"] += 1
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(p[:300].decode(errors="replace")))


class Driver:
    """C sessions against one server: closed-loop and paced runs."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.sessions: list[_Session] = []
        self.mode: str | None = None
        self.recording = False
        self.notes = 0
        self.turns = 0
        self.lat: list[float] = []
        self.errors: Counter[str] = Counter()
        self.period = 2.5
        self.paced_late = 0
        """Paced sends that found the previous turn still running (sent when it ended)."""

    async def open(self, batch: int = 100) -> None:
        async def one() -> _Session:
            s = _Session(self)
            s.conn = await aiows.connect("127.0.0.1", self.port, "/ws", s.on_text)
            s.conn.send_text(b'{"jsonrpc":"2.0","id":1,"method":"startSession","params":{}}')
            await asyncio.wait_for(s.ready, 30)
            return s

        while len(self.sessions) < self.n:
            k = min(batch, self.n - len(self.sessions))
            self.sessions += await asyncio.gather(*(one() for _ in range(k)))

    def close(self) -> None:
        for s in self.sessions:
            if s.conn is not None:
                s.conn.close()

    def lost(self) -> int:
        return sum(1 for s in self.sessions if s.conn is not None and s.conn.closed.done())

    def turn_ended(self, s: _Session) -> None:
        if self.mode == "closed":
            s.send_turn()
        elif self.mode == "paced" and s.owed:
            s.owed = False
            self.paced_late += 1
            s.send_turn()

    def _paced_fire(self, s: _Session, slot: float) -> None:
        if self.mode != "paced":
            return
        if s.busy:
            s.owed = True
        else:
            s.send_turn()
        loop = asyncio.get_running_loop()
        s.handle = loop.call_at(slot + self.period, self._paced_fire, s, slot + self.period)

    async def _window(self, server: ServerProcess, warmup: float, window: float) -> dict[str, Any]:
        await asyncio.sleep(warmup)
        self.notes = self.turns = 0
        self.lat = []
        errors0 = sum(self.errors.values())
        cpu0, ccpu0, t0, m0 = server.cpu_seconds(), time.process_time(), time.perf_counter(), _busy_s()
        self.recording = True
        await asyncio.sleep(window)
        self.recording = False
        cpu1, ccpu1, t1, m1 = server.cpu_seconds(), time.process_time(), time.perf_counter(), _busy_s()
        sc = f"cpu{SERVER_CPU}"
        notes, turns, lat = self.notes, self.turns, self.lat
        dt = t1 - t0
        return {
            "seconds": round(dt, 3),
            "notifications": notes,
            "turns": turns,
            "notifications_per_s": notes / dt,
            "server_cpu_util": (cpu1 - cpu0) / dt,
            "server_cpu_us_per_notification": (cpu1 - cpu0) * 1e6 / notes if notes else None,
            "client_cpu_util": (ccpu1 - ccpu0) / dt,
            # CPU used on the machine by anything but this server and this client:
            # other tenants. Runs where it is high are marked disturbed.
            "foreign_cpu_util": max(0.0, (m1["cpu"] - m0["cpu"]) - (cpu1 - cpu0) - (ccpu1 - ccpu0)) / dt,
            # ... and on the server's own CPU: time other processes took from it.
            "foreign_on_server_cpu": (max(0.0, (m1[sc] - m0[sc]) - (cpu1 - cpu0)) / dt) if sc in m1 else None,
            "first_chunk_p50_ms": (_pct(lat, 0.50) or 0) * 1000 if lat else None,
            "first_chunk_p99_ms": (_pct(lat, 0.99) or 0) * 1000 if lat else None,
            "first_chunk_samples": len(lat),
            "errors_in_window": sum(self.errors.values()) - errors0,
        }

    async def _drain(self, timeout: float = 60.0) -> None:
        self.mode = None
        for s in self.sessions:
            if s.handle is not None:
                s.handle.cancel()
                s.handle = None
            s.owed = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while any(s.busy for s in self.sessions):
                    await asyncio.sleep(0.01)
        stuck = sum(1 for s in self.sessions if s.busy)
        if stuck:
            self.errors["turn not finished"] += stuck

    async def closed(self, server: ServerProcess, warmup: float, window: float) -> dict[str, Any]:
        self.mode = "closed"
        for s in self.sessions:
            s.send_turn()
        try:
            return await self._window(server, warmup, window)
        finally:
            await self._drain()

    async def paced(self, server: ServerProcess, period: float, warmup: float, window: float) -> dict[str, Any]:
        self.mode = "paced"
        self.period = period
        self.paced_late = 0
        loop = asyncio.get_running_loop()
        now = loop.time()
        for s in self.sessions:
            slot = now + random.random() * period
            s.handle = loop.call_at(slot, self._paced_fire, s, slot)
        try:
            r = await self._window(server, warmup, window)
            r["late_sends"] = self.paced_late
            r["offered_notifications_per_s"] = self.n * NOTES_PER_TURN / period
            return r
        finally:
            await self._drain()


async def _throughput(server: ServerProcess, n: int, args: argparse.Namespace) -> dict[str, Any]:
    d = Driver(server.port, n)
    try:
        await d.open()
        out: dict[str, Any] = {}
        out["closed"] = await d.closed(server, args.warmup, args.window)
        out["paced"] = await d.paced(server, args.period, args.period, args.paced_window)
        for mode in ("closed", "paced"):
            out[mode]["errors_total"] = dict(d.errors)
        out["connections_lost"] = d.lost()
        return out
    finally:
        d.close()
        await asyncio.sleep(0.3)


async def _idle(server: ServerProcess, levels: list[int]) -> dict[str, Any]:
    # Warm up first (lazy imports, first-time allocations), so the fit measures sessions.
    await memory_probe(server, [20], with_turn=True, settle_s=0.1, timeout=60)
    await asyncio.to_thread(server.wait_drained, 15)
    r = await memory_probe(server, levels, with_turn=False, settle_s=1.0, batch=200, timeout=600)
    top = max(levels)
    pts = dict((p[0], p[1]) for p in r["points"])
    r["kb_per_session_endpoints"] = (pts[top] - pts[min(levels)]) / max(1, top - min(levels)) / 1024
    r["sessions"] = top
    drained = await asyncio.to_thread(server.wait_drained, 60)
    r["after"] = drained
    return r


def _servers(run_dir: Path, tag: str, root: Path | None = None,
             extra: dict[str, dict[str, Any]] | None = None) -> tuple[ServerProcess, ServerProcess]:
    # The zero-latency simulator; the per-connection request rate limit off (the closed
    # loop exceeds it on purpose) and the connection limit above the idle test's count.
    sections: dict[str, dict[str, Any]] = {"limits": {"requests_per_s": 0, "max_connections": 50_000}}
    for section, values in (extra or {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    cfg = write_config(run_dir / "ours-config.yaml", first_chunk_ms=0, chunk_interval_ms=0, log_level="warning",
                       max_sessions=50_000, extra=sections)
    bare = ServerProcess.bare(run_dir / f"bare-{tag}.log", cpu=0).start()
    ours = ServerProcess.ours(cfg, run_dir / f"ours-{tag}.log", cpu=0, root=root).start()
    return bare, ours


async def _profile(ours: ServerProcess, n: int, seconds: float, run_dir: Path, native: bool = False) -> dict[str, Any]:
    """py-spy on our server during a closed-loop run; returns the summary (load.profile)."""
    from load.profile import summarize

    raw = run_dir / "ours-profile.txt"
    svg = run_dir / "ours-profile.svg"
    d = Driver(ours.port, n)
    await d.open()
    d.mode = "closed"
    for s in d.sessions:
        s.send_turn()
    await asyncio.sleep(1.0)
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(ours.pid), "--duration",
           str(int(seconds)), *(["--rate", "200", "--native"] if native else ["--rate", "500", "--nonblocking"]),
           "--format", "raw", "-o", str(raw)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    with contextlib.suppress(Exception):
        svgcmd = [*cmd[:-4], "--format", "flamegraph", "-o", str(svg)]
        svgcmd[svgcmd.index("--duration") + 1] = "3"
        p2 = await asyncio.create_subprocess_exec(*svgcmd, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(p2.wait(), 60)
    await d._drain()
    d.close()
    if proc.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}"}
    summary = summarize(raw.read_text())
    summary["raw"] = str(raw.relative_to(ROOT))
    summary["flamegraph"] = str(svg.relative_to(ROOT)) if svg.exists() else None
    summary["sessions"] = n
    return summary


def _median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _fmt(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def _table(results: dict[str, Any]) -> str:
    rows = []
    head = ("| sessions | mode | notif/s bare | notif/s ours | ratio | CPU µs/notif bare | ours | ratio "
            "| 1st chunk p50 ms bare | ours | p99 ms bare | ours | errors ours | runs |")
    rows.append(head)
    rows.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, m in results["summary"].items():
        n, mode = key.split("/")
        rows.append(
            f"| {n} | {mode} | {_fmt(m['bare_nps'], 0)} | {_fmt(m['ours_nps'], 0)} | {_fmt(m['nps_ratio'], 2)} "
            f"| {_fmt(m['bare_us'])} | {_fmt(m['ours_us'])} | {_fmt(m['us_ratio'], 2)} "
            f"| {_fmt(m['bare_p50'], 2)} | {_fmt(m['ours_p50'], 2)} | {_fmt(m['bare_p99'], 2)} | {_fmt(m['ours_p99'], 2)} "
            f"| {m['ours_errors']} | {m['repeats']}"
            f"{'!' if m.get('all_disturbed') else '*' if m['disturbed_repeats_dropped'] else ''} |"
        )
    if results.get("summary"):
        rows.append("")
        rows.append(f"runs: repeats in the medians; * = repeats disturbed by other tenants (they took >= "
                    f"{DISTURBED:.0%} of the server's CPU in a window) left out; ! = every repeat was disturbed. "
                    "Ratios are ours/bare within a repeat.")
    idle = results.get("idle")
    if idle:
        rows.append("")
        rows.append("| idle sessions | KB/session bare | KB/session ours | ratio | fit R² bare | ours | left after (ours) |")
        rows.append("|---:|---:|---:|---:|---:|---:|---|")
        b, o = idle["bare"], idle["ours"]
        rows.append(
            f"| {o['sessions']:,} | {_fmt(b['kb_per_session'])} | {_fmt(o['kb_per_session'])} "
            f"| {_fmt(o['kb_per_session'] / b['kb_per_session'], 2) if b['kb_per_session'] else '-'} "
            f"| {b['fit']['r2']:.4f} | {o['fit']['r2']:.4f} "
            f"| sessions {o['after'].get('sessions')}, connections {o['after'].get('connections')} |"
        )
    return "\n".join(rows)


DISTURBED = 0.10
"""Share of the server's CPU taken by other processes above which a measurement
window counts as disturbed."""


def _foreign(m: dict[str, Any]) -> float:
    v = m.get("foreign_on_server_cpu")
    return m.get("foreign_cpu_util", 0.0) if v is None else v


def _summarize(runs: list[dict[str, Any]], concurrency: list[int]) -> dict[str, Any]:
    """Medians over repeats, leaving out repeats where either window was disturbed by
    other tenants (unless every repeat was)."""
    out: dict[str, Any] = {}
    for n in concurrency:
        for mode in ("closed", "paced"):
            every = [(r[str(n)]["bare"][mode], r[str(n)]["ours"][mode]) for r in runs if str(n) in r]
            calm = [(b, o) for b, o in every if max(_foreign(b), _foreign(o)) < DISTURBED]
            per = calm or every
            out[f"{n}/{mode}"] = {
                "disturbed_repeats_dropped": len(every) - len(per),
                "all_disturbed": not calm,
                "bare_nps": _median([b["notifications_per_s"] for b, _ in per]),
                "ours_nps": _median([o["notifications_per_s"] for _, o in per]),
                "nps_ratio": _median([o["notifications_per_s"] / b["notifications_per_s"] for b, o in per
                                      if b["notifications_per_s"]]),
                "bare_us": _median([b["server_cpu_us_per_notification"] for b, _ in per]),
                "ours_us": _median([o["server_cpu_us_per_notification"] for _, o in per]),
                "us_ratio": _median([o["server_cpu_us_per_notification"] / b["server_cpu_us_per_notification"]
                                     for b, o in per if b["server_cpu_us_per_notification"]
                                     and o["server_cpu_us_per_notification"]]),
                "bare_p50": _median([b["first_chunk_p50_ms"] for b, _ in per]),
                "ours_p50": _median([o["first_chunk_p50_ms"] for _, o in per]),
                "bare_p99": _median([b["first_chunk_p99_ms"] for b, _ in per]),
                "ours_p99": _median([o["first_chunk_p99_ms"] for _, o in per]),
                "ours_client_cpu": _median([o["client_cpu_util"] for _, o in per]),
                "bare_client_cpu": _median([b["client_cpu_util"] for b, _ in per]),
                "ours_errors": sum(o["errors_in_window"] for _, o in every),
                "repeats": len(per),
            }
    return out


async def _main(args: argparse.Namespace) -> int:
    raise_nofile()
    concurrency = [int(x) for x in args.concurrency.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / f"bench-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    results: dict[str, Any] = {
        "command": " ".join(["python -m load.bench", *sys.argv[1:]]),
        "mode": "full" if args.full else "quick",
        "started": stamp,
        "machine": {"cpus": os.cpu_count(), "affinity_client": sorted(os.sched_getaffinity(0)),
                    "loadavg_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items()},
        "server_commit": source_commit(args.server_root),
        "runs": [],
    }

    def save() -> Path:
        path = RESULTS / f"bench-{stamp}.json"
        path.write_text(json.dumps(results, indent=2, default=str))
        (RESULTS / "bench-latest.json").write_text(path.read_text())
        return path

    if not args.skip_throughput or args.profile:
        bare, ours = _servers(run_dir, "throughput", args.server_root, args.ours_config)
        try:
            for rep in range(0 if args.skip_throughput else args.repeats):
                run: dict[str, Any] = {}
                for n in concurrency:
                    order = [("bare", bare), ("ours", ours)]
                    if rep % 2:
                        order.reverse()
                    run[str(n)] = {}
                    for name, server in order:
                        print(f"[bench] repeat {rep + 1}/{args.repeats}: {name}, {n} sessions ...", flush=True)
                        run[str(n)][name] = await _throughput(server, n, args)
                        await asyncio.to_thread(server.wait_drained, 30)
                results["runs"].append(run)
                save()
            results["after_throughput"] = {"ours": ours.wait_drained(30), "bare": bare.wait_drained(30)}
            if args.profile:
                print(f"[bench] profiling our server (py-spy, {args.profile_seconds:.0f} s, "
                      f"{args.profile_sessions} sessions, closed loop) ...", flush=True)
                results["profile"] = await _profile(ours, args.profile_sessions, args.profile_seconds, run_dir,
                                                    args.profile_native)
        finally:
            bare.stop()
            ours.stop()
        results["server_log_problems"] = ours.log_problems()
        if results["runs"]:
            results["summary"] = _summarize(results["runs"], concurrency)
        save()

    if not args.skip_idle:
        top = args.idle_sessions
        levels = sorted({0, top // 4, top // 2, top})
        bare, ours = _servers(run_dir, "idle", args.server_root, args.ours_config)
        try:
            idle: dict[str, Any] = {}
            for name, server in (("bare", bare), ("ours", ours)):
                print(f"[bench] idle memory: {name}, up to {top:,} sessions ...", flush=True)
                idle[name] = await _idle(server, levels)
            results["idle"] = idle
        finally:
            bare.stop()
            ours.stop()
        save()

    results["machine"]["loadavg_end"] = os.getloadavg()
    path = save()
    table = _table({"summary": {}, **results})
    print()
    print(table)
    if "profile" in results and "top_self" in results["profile"]:
        from load.profile import format_summary

        print()
        print(format_summary(results["profile"]))
    print(f"\n[bench] results: {path.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="3 repeats, longer windows, 10,000 idle sessions")
    p.add_argument("--concurrency", default="10,100,1000")
    p.add_argument("--repeats", type=int)
    p.add_argument("--warmup", type=float, help="closed loop: seconds before measuring")
    p.add_argument("--window", type=float, help="closed loop: seconds measured")
    p.add_argument("--period", type=float, default=2.5, help="paced: seconds between a session's requests")
    p.add_argument("--paced-window", type=float, help="paced: seconds measured (after one period of warm-up)")
    p.add_argument("--idle-sessions", type=int, help="idle memory: sessions at the top level")
    p.add_argument("--skip-idle", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--server-root", type=Path, help="run our server from this source tree (default: this checkout)")
    p.add_argument("--ours-config", type=json.loads, default=None,
                   help='extra server config for ours, JSON: \'{"session": {"replay_log_size": 1}}\'')
    p.add_argument("--profile", action="store_true", help="py-spy our server during a closed-loop run")
    p.add_argument("--profile-sessions", type=int, default=100)
    p.add_argument("--profile-native", action="store_true", help="py-spy --native: C frames too (GC, uvloop)")
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--report", type=Path, help="print the table of an earlier results file, and exit")
    args = p.parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
        if results.get("runs"):
            conc = sorted({int(n) for r in results["runs"] for n in r})
            results["summary"] = _summarize(results["runs"], conc)
        print(f"{results.get('command')}  (server {results.get('server_commit')}, {results.get('started')})")
        print(_table({"summary": {}, **results}))
        return 0
    defaults = (dict(repeats=3, warmup=1.0, window=5.0, paced_window=10.0, idle_sessions=10_000) if args.full
                else dict(repeats=1, warmup=0.5, window=2.0, paced_window=4.0, idle_sessions=1_000))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())

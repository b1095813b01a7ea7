"""Run one load scenario end to end: ``python -m load run SCENARIO``.

1. Write a server config with the scenario's simulator timing profile and start
   ``python -m server`` on 127.0.0.1 (pinned to CPU 0 when there are 2+ CPUs).
2. Memory probe: RSS at several counts of open sessions (one connection and one
   short turn each), fitted linearly → KB per active session and R².
3. Run locust headless for a bounded time (pinned to the other CPUs), standalone
   or distributed (``--workers N``: one master and N workers on this machine),
   writing CSV, HTML and JSON under ``load/results/<scenario>-<time>/``, while a
   sampler records the server's RSS, CPU and /healthz every 0.25 s.
4. After the run: /healthz must drain to 0 sessions, connections and running turns;
   peak RSS (VmHWM), RSS growth, problems in the server log, the server's exit
   code on SIGTERM.
5. Check every locust row and server figure against ``load/thresholds.yaml``,
   print a summary, write ``summary.json``, exit 1 if any check failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from load.scenarios import SCENARIOS, Scenario
from load.serverproc import (
    ROOT,
    Sampler,
    ServerProcess,
    linear_fit,
    memory_probe,
    raise_nofile,
    source_commit,
    write_config,
)
from load.thresholds import Check, check_rows, check_server, format_checks, load_thresholds, row_figures

__all__ = ["run_scenario"]

RESULTS = ROOT / "load" / "results"
DEFAULT_THRESHOLDS = ROOT / "load" / "thresholds.yaml"


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs), or (None, None) on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _locust_cmd(sc: Scenario, host: str, out: Path, args: Any, users: int, spawn_rate: float,
                duration: float, role: str = "standalone", master_port: int = 0) -> list[str]:
    base = [sys.executable, "-m", "locust", "-f", str(ROOT / "load" / "locustfile.py"), "--loglevel", "WARNING"]
    if role == "worker":
        return [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
    cmd = [
        *base, "--headless", "--host", host,
        "-u", str(users), "-r", str(spawn_rate), "-t", f"{int(duration)}s",
        "--stop-timeout", str(int(sc.stop_timeout_s)),
        "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--json-file", str(out / "locust"),
        "--ailoop-scenario", sc.name, "--ailoop-thresholds", str(args.thresholds),
        "--ailoop-check-file", str(out / "locust-checks.json"),
        *sc.locust_options, *args.locust_args,
    ]
    if role == "master":
        cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                "--expect-workers", str(args.workers)]
    return [*cmd, *sc.user_classes]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_locust(sc: Scenario, server: ServerProcess, out: Path, args: Any, users: int, spawn_rate: float,
                duration: float, cpus: set[int] | None) -> tuple[int, list[str]]:
    """Run locust (standalone, or master + workers); bounded by a hard deadline."""
    procs: list[subprocess.Popen[bytes]] = []
    cmds: list[list[str]] = []
    log = open(out / "locust.log", "wb")  # noqa: SIM115
    try:
        if args.workers:
            port = _free_port()
            cmds.append(_locust_cmd(sc, f"ws://127.0.0.1:{server.port}", out, args, users, spawn_rate, duration,
                                    "master", port))
            cmds += [_locust_cmd(sc, "", out, args, users, spawn_rate, duration, "worker", port)
                     for _ in range(args.workers)]
        else:
            cmds.append(_locust_cmd(sc, f"ws://127.0.0.1:{server.port}", out, args, users, spawn_rate, duration))
        for cmd in cmds:
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            if cpus:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(p.pid, cpus)
            procs.append(p)
        master = procs[0]
        limit = duration + sc.stop_timeout_s + 90
        try:
            code = master.wait(limit)
        except subprocess.TimeoutExpired:
            code = -1
            print(f"[load] locust did not stop within {limit:.0f} s; killed", file=sys.stderr)
        return code, [shlex.join(c) for c in cmds]
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        log.close()


def _rss_growth_mb(samples: list[dict[str, Any]]) -> float | None:
    """RSS at the end of the run minus RSS at a third of it (medians of nearby samples)."""
    rs = [s for s in samples if "rss" in s]
    if len(rs) < 9:
        return None
    n = len(rs)

    def med(a: int, b: int) -> float:
        vals = sorted(s["rss"] for s in rs[a:b])
        return vals[len(vals) // 2]

    third = med(n // 3 - 2, n // 3 + 3)
    end = med(n - 5, n)
    return (end - third) / 2**20


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_scenario(name: str, args: Any) -> int:
    sc = SCENARIOS[name]
    users = args.users or sc.users
    spawn_rate = args.spawn_rate or sc.spawn_rate
    duration = args.duration or sc.duration_s
    raise_nofile()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out).resolve() if args.out else RESULTS / f"{name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    server_cpus, load_cpus = _cpus() if not args.no_pin else (None, None)
    cfg = write_config(out / "server-config.yaml", first_chunk_ms=sc.first_chunk_ms,
                       chunk_interval_ms=sc.chunk_interval_ms, log_level="warning",
                       max_sessions=20_000, extra=sc.server)
    print(f"[load] {name}: {sc.description}")
    print(f"[load] {users} users, spawn rate {spawn_rate}/s, {duration:.0f} s; simulator first chunk "
          f"{sc.first_chunk_ms:g} ms, {sc.chunk_interval_ms:g} ms between chunks; results in {_rel(out)}",
          flush=True)
    root = Path(args.server_root) if args.server_root else None
    server = ServerProcess.ours(cfg, out / "server.log", cpu=min(server_cpus) if server_cpus else None,
                                root=root).start()
    summary: dict[str, Any] = {
        "scenario": name, "started": stamp, "users": users, "spawn_rate": spawn_rate, "duration_s": duration,
        "workers": args.workers, "profile": {"first_chunk_ms": sc.first_chunk_ms,
                                             "chunk_interval_ms": sc.chunk_interval_ms},
        "command": shlex.join(["python", "-m", "load", "run", *args.argv]),
        "server_root": str(server.cwd),
        "server_commit": source_commit(server.cwd),
    }
    figures: dict[str, Any] = {}
    locust_code = None
    try:
        # 2. memory probe (before the run: freed memory would hide the cost of new sessions)
        if not args.no_probe:
            levels = [int(x) for x in args.probe_levels.split(",")] if args.probe_levels else list(sc.probe_levels)
            print(f"[load] memory probe at {levels} sessions ...", flush=True)
            probe = asyncio.run(memory_probe(server, levels, with_turn=True))
            summary["memory_probe"] = probe
            figures["rss_kb_per_session"] = round(probe["kb_per_session"], 2)
            figures["rss_fit_r2"] = round(probe["fit"]["r2"], 4)
            server.wait_drained(15)
        # 3. locust, with the sampler
        server.reset_peak_rss()
        rss_before = server.rss()
        print("[load] running locust ...", flush=True)
        with Sampler(server) as sampler:
            locust_code, cmds = _run_locust(sc, server, out, args, users, spawn_rate, duration, load_cpus)
        summary["locust_commands"] = cmds
        summary["locust_exit_code"] = locust_code
        # 4. after the run
        after = server.wait_drained(args.drain_timeout)
        summary["healthz_after"] = after
        figures["leftover_sessions"] = after.get("sessions")
        figures["leftover_connections"] = after.get("connections")
        figures["leftover_running_turns"] = after.get("runningTurns")
        peak = server.peak_rss() or sampler.peak_rss()
        figures["peak_rss_mb"] = round(max(peak, sampler.peak_rss()) / 2**20, 1)
        figures["rss_before_run_mb"] = round(rss_before / 2**20, 1)
        figures["rss_after_run_mb"] = round(server.rss() / 2**20, 1)
        growth = _rss_growth_mb(sampler.samples)
        figures["rss_growth_mb"] = None if growth is None else round(growth, 2)
        figures["max_sessions_seen"] = max((s.get("sessions") or 0 for s in sampler.samples), default=0)
        figures["max_running_turns_seen"] = max((s.get("running") or 0 for s in sampler.samples), default=0)
        cpu = [s for s in sampler.samples if "cpu_s" in s]
        if len(cpu) >= 2 and cpu[-1]["t"] > cpu[0]["t"]:
            figures["server_cpu_util"] = round((cpu[-1]["cpu_s"] - cpu[0]["cpu_s"]) / (cpu[-1]["t"] - cpu[0]["t"]), 3)
        pairs = [(s["sessions"], s["rss"]) for s in sampler.samples if s.get("sessions") is not None and "rss" in s]
        # Only without the probe: after it, the allocator reuses the probe's freed memory.
        if args.no_probe and pairs and max(p[0] for p in pairs) - min(p[0] for p in pairs) >= 50:
            fit = linear_fit([p[0] for p in pairs], [p[1] for p in pairs])
            figures["in_run_kb_per_session"] = round(fit["slope"] / 1024, 2)
            figures["in_run_fit_r2"] = round(fit["r2"], 4)
        (out / "server-samples.json").write_text(json.dumps(sampler.samples))
    finally:
        code = server.stop()
        figures["server_exit_code"] = code
        problems = server.log_problems()
        figures["log_problems"] = len(problems)
        summary["server_log_problems"] = problems[:50]

    # 5. checks
    thresholds = load_thresholds(args.thresholds, name)
    json_path = out / "locust.json"
    entries = json.loads(json_path.read_text()) if json_path.exists() else []
    checks: list[Check] = check_rows(entries, thresholds["rows"])
    server_rules = dict(thresholds["server"])
    if args.no_probe:  # figures that only the probe measures
        server_rules.pop("rss_kb_per_session", None)
        server_rules.pop("rss_fit_r2", None)
    checks += check_server(figures, server_rules)
    if locust_code not in (0, 1):  # 1 = our own row thresholds (re-checked here); anything else is a crash
        checks.append(Check("locust", "exit code", locust_code, 1, "max", False))
    check_file = out / "locust-checks.json"
    errors = json.loads(check_file.read_text()).get("errors", []) if check_file.exists() else []
    summary["errors"] = errors
    summary["rows"] = [row_figures(e) for e in entries]
    summary["server"] = figures
    summary["checks"] = [c.as_dict() for c in checks]
    failed = [c for c in checks if not c.ok]
    summary["passed"] = not failed
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if out.parent == RESULTS:
        latest = RESULTS / f"{name}-latest"
        with contextlib.suppress(OSError):
            if latest.is_symlink() or latest.exists():
                latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
            latest.symlink_to(out.name)
    _print_summary(summary, checks)
    print(f"[load] {name}: {'PASSED' if not failed else 'FAILED'} "
          f"({len(checks) - len(failed)}/{len(checks)} checks); results in {_rel(out)}")
    return 0 if not failed else 1


def _print_summary(summary: dict[str, Any], checks: list[Check]) -> None:
    print()
    print(f"{'row':<24} {'count':>7} {'fail':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8}  (ms)")
    for r in summary["rows"]:
        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.0f}"
        print(f"{r['name']:<24} {r['count']:>7} {r['failures']:>5} {f(r['p50']):>7} {f(r['p95']):>7} "
              f"{f(r['p99']):>7} {f(r['max']):>8}")
    s = summary["server"]
    print()
    print("server: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    if "memory_probe" in summary:
        pts = summary["memory_probe"]["points"]
        print("memory probe (sessions → RSS MB): " + ", ".join(f"{n}→{rss / 2**20:.1f}" for n, rss in pts))
    for e in summary.get("errors", []):
        print(f"error x{e['occurrences']} in {e['name']}: {e['error']}")
    print()
    print(format_checks(checks))

"""``python -m load run SCENARIO [options]`` and ``python -m load list``.

Each scenario starts our server on the simulator with the scenario's timing
profile, runs locust headless for a bounded time, writes CSV/HTML/JSON under
``load/results/``, checks the thresholds in ``load/thresholds.yaml`` and exits 1
when one fails. See docs/performance.md. The benchmark is ``python -m load.bench``.
"""

from __future__ import annotations

import argparse
import sys

from load.scenarios import SCENARIOS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m load", description="AILoop load scenarios (locust)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--users", type=int, help="override the scenario's user count")
    run.add_argument("--spawn-rate", type=float, help="override the spawn rate (users/s)")
    run.add_argument("--duration", type=float, help="override the run time (seconds)")
    run.add_argument("--workers", type=int, default=0, help="locust distributed mode: master + N local workers")
    run.add_argument("--thresholds", default=None, help="thresholds file (default load/thresholds.yaml)")
    run.add_argument("--out", help="results directory (default load/results/<scenario>-<time>)")
    run.add_argument("--no-probe", action="store_true", help="skip the RSS-per-session probe")
    run.add_argument("--probe-levels", help="session counts for the RSS-per-session probe, e.g. 0,50,100,200")
    run.add_argument("--no-pin", action="store_true", help="do not pin server and locust to separate CPUs")
    run.add_argument("--drain-timeout", type=float, default=15.0,
                     help="seconds to wait for /healthz to reach 0 sessions after the run")
    run.add_argument("--server-root", help="run the server from this source tree (default: this checkout)")
    run.add_argument("locust_args", nargs="*", help="extra locust arguments, after --")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<14} {s.users:>4} users {s.duration_s:>5.0f} s  {s.description}")
        return 0
    from load.runner import DEFAULT_THRESHOLDS, run_scenario

    args.thresholds = args.thresholds or str(DEFAULT_THRESHOLDS)
    args.argv = argv
    return run_scenario(args.scenario, args)


if __name__ == "__main__":
    raise SystemExit(main())

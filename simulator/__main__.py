"""Command line: serve the HTTP face, check a scenario, or record a stream.

::

    python -m simulator --port 8090 [--host 127.0.0.1] [--scenario NAME|FILE] [--seed N]
                        [--config config.yaml] [--replay FIXTURE] [--api-key KEY]
    python -m simulator check SCENARIO...
    python -m simulator record URL --body request.json --out fixture.json
                        [--header 'Name: value'] [--auth-env OPENROUTER_API_KEY]

``serve`` (the default) prints ``Simulator listening on http://HOST:PORT`` once it
accepts connections (``--port 0`` picks a free port). Settings come from the
``simulator:`` section of ``--config`` (if given); ``--scenario`` and ``--seed``
override it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import orjson

__all__ = ["main"]


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description="Serve the simulator over HTTP.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--scenario", help="a built-in scenario name or a YAML file")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="a config.yaml; its simulator: section is used")
    p.add_argument("--replay", help="answer every request with this recorded stream")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    p.add_argument("--log-level", default="warning")
    return p


def _config(args: argparse.Namespace) -> Any:
    from simulator.provider import SimulatorConfig, config_from_settings

    if args.config:
        from server.config import ConfigError, load_settings

        try:
            config = config_from_settings(load_settings(args.config).simulator)
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
    else:
        config = SimulatorConfig()
    updates: dict[str, Any] = {}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.scenario:
        updates["scenario"] = args.scenario
    if args.replay:
        from simulator.scenario import load_scenario_data

        replay = str(Path(args.replay).resolve())
        updates["scenario"] = load_scenario_data(
            {"name": "replay", "rules": [{"name": "replay", "respond": {"replay": replay}}]},
            source=f"--replay {args.replay}",
        )
    if updates:
        from dataclasses import replace

        config = replace(config, **updates)
    return config


async def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from simulator.http import create_app
    from simulator.scenario import ScenarioError

    config = _config(args)
    try:
        simulator = config.simulator()
    except ScenarioError as exc:
        raise SystemExit(f"invalid scenario: {exc}") from None
    app = create_app(simulator, api_key=args.api_key)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    )

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"Simulator listening on http://{host}:{port} "
            f"(scenario {simulator.scenario.name or simulator.scenario.source}, seed {simulator.seed})",
            flush=True,
        )

    task = asyncio.create_task(announce())
    await server.serve(sockets=[sock])
    task.cancel()


def _check(argv: list[str]) -> int:
    from simulator.scenario import ScenarioError, load_scenario

    p = argparse.ArgumentParser(prog="python -m simulator check", description="Validate scenario files.")
    p.add_argument("scenario", nargs="+")
    args = p.parse_args(argv)
    status = 0
    for ref in args.scenario:
        try:
            sc = load_scenario(ref)
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{ref}: ok ({len(sc.rules)} rules)")
    return status


def _record(argv: list[str]) -> int:
    from simulator.record import record

    p = argparse.ArgumentParser(prog="python -m simulator record", description="Record an SSE stream with timings.")
    p.add_argument("url", help="the chat-completions URL")
    p.add_argument("--body", required=True, help="a JSON file with the request body")
    p.add_argument("--out", required=True, help="the fixture file to write")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--auth-env", help="send 'Authorization: Bearer $VAR' (the key is never stored)")
    args = p.parse_args(argv)
    body = orjson.loads(Path(args.body).read_bytes())
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.auth_env:
        key = os.environ.get(args.auth_env, "")
        if not key:
            raise SystemExit(f"{args.auth_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    rec = asyncio.run(record(args.url, body, headers=headers))
    rec.save(args.out)
    print(f"recorded {len(rec.events)} events (status {rec.status}, end {rec.end}) to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return _check(argv[1:])
    if argv and argv[0] == "record":
        return _record(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    args = _serve_parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

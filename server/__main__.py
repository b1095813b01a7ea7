"""``python -m server --config FILE [--host H] [--port P]``: run the server.

Prints the ``ws://`` URL once it accepts connections. On SIGINT/SIGTERM it stops
accepting, tells every session it ended (reason ``server_shutdown``), closes every
socket with 1001, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import sys
from typing import Any

import uvicorn

from server.app import create_app
from server.config import ConfigError, Settings, load_settings
from server.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("ailoop.main")


class _Server(uvicorn.Server):
    """uvicorn with our graceful shutdown before its own."""

    def __init__(self, config: uvicorn.Config, app: Any, drain_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_s = drain_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        # uvicorn re-raises a captured signal after its shutdown, which would make
        # the exit status -SIGTERM; a clean, complete shutdown exits 0 instead.
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            print(f"AILoop Interactive listening on ws://{self.config.host}:{port}/ws", flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        registry = self._app.state.registry
        for server in self.servers:
            server.close()  # stop accepting first
        await registry.shutdown("server_shutdown", 1001)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_s
        while len(registry) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


def uvicorn_config(app: Any, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The fastest ASGI WebSocket stack measured here (docs/performance.md)."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop = "asyncio"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=settings.limits.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.limits.heartbeat_interval_s or None,
        ws_ping_timeout=settings.limits.heartbeat_interval_s or None,
        log_level=settings.server.log_level,
        lifespan="on",
        log_config=None,  # logging is ours (server/logs.py)
        timeout_graceful_shutdown=max(settings.server.shutdown_drain_s, 0.1),
    )


def _check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without authentication, unless allowed."""
    host = settings.server.host
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if not loopback and not settings.auth.enabled and not settings.auth.allow_unauthenticated_non_loopback:
        raise ConfigError(
            f"refusing to listen on {host} with authentication off: enable auth.enabled (tokens from "
            "AILOOP_AUTH_TOKENS) or set auth.allow_unauthenticated_non_loopback: true"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="AILoop Interactive server")
    parser.add_argument("--config", default="config.yaml", help="YAML configuration file (default: config.yaml)")
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port (0 picks a free port)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = load_settings(args.config, **({"server": overrides} if overrides else {}))
        _check_exposure(settings)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level, settings.server.log_format)
    config = uvicorn_config(app, settings, settings.server.host, settings.server.port)
    server = _Server(config, app, settings.server.shutdown_drain_s)
    # Long-lived objects (modules, app, per-session state) need no cycle scanning:
    # freeze what startup made, and collect the young generation less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

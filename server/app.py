"""Composition root: builds the provider, the session manager and the FastAPI app.

This is the only module that reads ``Settings`` and the only one that knows every
layer; the layers below receive plain values.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from server.config import Settings
from server.loop.engine import LoopConfig
from server.loop.provider import ModelProvider
from server.session.connection import RpcConnection
from server.session.handlers import ServerInfo
from server.session.manager import InteractiveSessionManager, SessionLimits
from server.transport.websocket import ConnectionRegistry, serve_websocket

__all__ = ["build_provider", "create_app"]

log = logging.getLogger("ailoop.app")

try:
    VERSION = version("ailoop-interactive")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"


def build_provider(settings: Settings) -> ModelProvider:
    """The AI provider chosen by ``ai.backend``."""
    if settings.ai.backend == "openrouter":
        from server.llm.openrouter import OpenRouterProvider

        return OpenRouterProvider.from_settings(settings)
    from simulator.provider import SimulatorProvider

    return SimulatorProvider.from_settings(settings)


def _outgoing_validator() -> Any:
    from spec import models as m

    by_method = {
        "SessionStatusNotification": m.SessionStatusNotification,
        "AIMessageChunkNotification": m.AIMessageChunkNotification,
        "ToolCallNotification": m.ToolCallNotification,
        "ErrorNotification": m.ErrorNotification,
    }

    def validate(message: dict[str, Any]) -> None:
        by_method[message["method"]].model_validate(message)

    return validate


def create_app(settings: Settings, provider: ModelProvider | None = None) -> FastAPI:
    """Build the ASGI app. ``provider`` overrides the configured backend (tests)."""
    provider = provider if provider is not None else build_provider(settings)
    ai, lim = settings.ai, settings.limits
    manager = InteractiveSessionManager(
        provider,
        loop_config=LoopConfig(
            first_chunk_timeout_s=ai.first_chunk_timeout_s,
            idle_timeout_s=ai.idle_timeout_s,
            turn_timeout_s=ai.turn_timeout_s,
            max_history_messages=settings.session.max_history_messages,
        ),
        limits=SessionLimits(lim.max_sessions, lim.max_sessions_per_connection),
        validate=_outgoing_validator() if settings.server.validate_outgoing else None,
    )
    info = ServerInfo(
        name="ailoop-interactive",
        version=VERSION,
        backend=provider.name,
        limits={
            "maxFrameBytes": lim.max_frame_bytes,
            "maxSessionsPerConnection": lim.max_sessions_per_connection,
            "maxSessions": lim.max_sessions,
            "maxMessageChars": lim.max_message_chars,
            "maxHistoryMessages": settings.session.max_history_messages,
            "maxBatchSize": lim.max_batch_size,
            "maxToolsPerSession": lim.max_tools_per_session,
        },
    )
    registry = ConnectionRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await registry.shutdown()
        await manager.stop_all("server_shutdown")
        await provider.aclose()

    app = FastAPI(title="AILoop Interactive", version=VERSION, lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = manager
    app.state.registry = registry
    app.state.provider = provider

    def make_connection(send: Any) -> RpcConnection:
        return RpcConnection(manager, info, send, max_batch=lim.max_batch_size)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({
            "status": "ok",
            "sessions": manager.count,
            "connections": len(registry),
            "runningTurns": manager.running_tasks(),
            "backend": provider.name,
            "version": VERSION,
        })

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await serve_websocket(ws, make_connection, registry)

    return app

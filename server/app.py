"""Composition root: builds the provider, the session manager and the FastAPI app.

This is the only module that reads ``Settings`` and the only one that knows every
layer; the layers below receive plain values.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.config import ConfigError, Settings
from server.loop.engine import LoopConfig
from server.loop.provider import ModelProvider
from server.logs import install_redaction
from server.metrics import Metrics
from server.session.connection import RpcConnection
from server.session.handlers import ServerInfo
from server.session.manager import InteractiveSessionManager, SessionLimits
from server.session.outbox import Outbox
from server.store import make_store
from server.transport.auth import Authenticator, load_token_hashes
from server.transport.static import mount_playground
from server.transport.websocket import ConnectionRegistry, EdgeLimits, serve_websocket

__all__ = ["build_provider", "create_app"]

log = logging.getLogger("ailoop.app")

try:
    VERSION = version("ailoop-interactive")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"


class _DenialNoise(logging.Filter):
    """uvicorn's websockets-sansio logs an error after a handshake refused with an
    HTTP response (401/403/503), though the refusal completed; our endpoint always
    accepts or refuses, so that line carries no information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


_uvicorn_log = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _DenialNoise) for f in _uvicorn_log.filters):
    _uvicorn_log.addFilter(_DenialNoise())
install_redaction()


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
    ai, lim, ses = settings.ai, settings.limits, settings.session
    metrics = Metrics()
    manager = InteractiveSessionManager(
        provider,
        loop_config=LoopConfig(
            first_chunk_timeout_s=ai.first_chunk_timeout_s,
            idle_timeout_s=ai.idle_timeout_s,
            turn_timeout_s=ai.turn_timeout_s,
            max_history_messages=ses.max_history_messages,
            tool_result_timeout_s=lim.tool_result_timeout_s or None,
            max_pending_tool_calls=lim.max_pending_tool_calls,
        ),
        limits=SessionLimits(lim.max_sessions, lim.max_sessions_per_connection, ses.resume_grace_s,
                             ses.replay_log_size, ses.max_lifetime_s),
        validate=_outgoing_validator() if settings.server.validate_outgoing else None,
        metrics=metrics,
        store=make_store(**settings.store.model_dump()),
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
            "maxHistoryMessages": ses.max_history_messages,
            "maxBatchSize": lim.max_batch_size,
            "maxToolsPerSession": lim.max_tools_per_session,
            "maxConnections": lim.max_connections,
            "maxPendingToolCalls": lim.max_pending_tool_calls,
            "requestsPerSecond": lim.requests_per_s,
            "requestBurst": lim.request_burst,
            "idleTimeoutMs": int(lim.idle_timeout_s * 1000),
            "toolResultTimeoutMs": int(lim.tool_result_timeout_s * 1000),
            "sessionMaxLifetimeMs": int(ses.max_lifetime_s * 1000),
            "resumeGraceMs": int(ses.resume_grace_s * 1000),
            "replayLogSize": ses.replay_log_size,
            "outboundHighWater": lim.outbound_high_water,
            "outboundMaxBytes": lim.outbound_max_bytes,
            "heartbeatIntervalMs": int(lim.heartbeat_interval_s * 1000),
        },
        auth=("bearer",) if settings.auth.enabled else (),
        log_content=settings.server.log_content,
    )
    registry = ConnectionRegistry()

    def queue() -> tuple[int, int, int]:
        frames, nbytes, merged = registry.queue_stats()
        return frames, nbytes, merged + registry.merged_closed

    metrics.bind(sessions_by_state=manager.by_state, connections=lambda: len(registry), queue=queue,
                 retries=lambda: int(getattr(provider, "retries", 0)))
    hashes = {hashlib.sha256(t.get_secret_value().encode()).digest() for t in settings.auth_tokens}
    if settings.auth.token_hashes_file:
        try:
            hashes |= load_token_hashes(settings.auth.token_hashes_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"auth.token_hashes_file: cannot read token hashes ({exc})") from None
    if settings.auth.enabled and not hashes:
        raise ConfigError("auth.enabled is true but no token is configured: set AILOOP_AUTH_TOKENS "
                          "or auth.token_hashes_file")
    auth = Authenticator(enabled=settings.auth.enabled, token_hashes=hashes,
                         allowed_origins=settings.auth.allowed_origins)
    edge = EdgeLimits(lim.max_connections, lim.idle_timeout_s, lim.outbound_high_water, lim.outbound_max_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.open()
        yield
        await registry.shutdown()
        await manager.stop_all("server_shutdown")
        await manager.close()
        await provider.aclose()

    app = FastAPI(title="AILoop Interactive", version=VERSION, lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = manager
    app.state.registry = registry
    app.state.provider = provider
    app.state.metrics = metrics

    def make_connection(outbox: Outbox) -> RpcConnection:
        return RpcConnection(manager, info, outbox, max_batch=lim.max_batch_size,
                             rate=lim.requests_per_s, burst=lim.request_burst)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({
            "status": "ok",
            "sessions": manager.count,
            "detached": manager.detached,
            "connections": len(registry),
            "queuedBytes": registry.queued_bytes(),
            "runningTurns": manager.running_tasks(),
            "backend": provider.name,
            "version": VERSION,
        })

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await serve_websocket(ws, make_connection, registry, auth, edge)

    mount_playground(app)  # the browser playground at / (last: it never shadows the routes above)

    return app

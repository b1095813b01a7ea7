"""InteractiveSessionManager: owns every session of the process.

Sessions are created on behalf of a connection and can only be found through
that connection (``get(connection_id, session_id)``); any other connection gets
SESSION_NOT_FOUND. When a connection goes away, ``release_connection`` stops and
forgets all of its sessions: turn tasks cancelled, provider streams closed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.loop.engine import AILoop, LoopConfig
from server.loop.provider import ModelProvider
from server.protocol.errors import LimitReached, SessionNotFound
from server.session.bridge import DelegateBridge

__all__ = ["InteractiveSessionManager", "ServerSession", "SessionLimits"]

log = logging.getLogger("ailoop.sessions")


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_sessions: int = 10_000
    max_sessions_per_connection: int = 16


@dataclass(eq=False, slots=True)
class ServerSession:
    id: str
    connection_id: str
    loop: AILoop
    bridge: DelegateBridge
    model: str
    tool_names: list[str]
    metadata: dict[str, Any]


class InteractiveSessionManager:
    def __init__(
        self,
        provider: ModelProvider,
        *,
        loop_config: LoopConfig = LoopConfig(),
        limits: SessionLimits = SessionLimits(),
        validate: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.provider = provider
        self.loop_config = loop_config
        self.limits = limits
        self._validate = validate
        self._sessions: dict[str, ServerSession] = {}
        self._by_connection: dict[str, dict[str, ServerSession]] = {}

    # ------------------------------------------------------------------ queries
    @property
    def count(self) -> int:
        return len(self._sessions)

    def count_for(self, connection_id: str) -> int:
        return len(self._by_connection.get(connection_id, ()))

    def running_tasks(self) -> int:
        """Turn tasks still alive (0 once every session is released)."""
        return sum(1 for s in self._sessions.values() if s.loop.has_running_task)

    def get(self, connection_id: str, session_id: str) -> ServerSession:
        """The session, if this connection owns it.

        Raises:
            SessionNotFound: unknown, ended, or owned by another connection.
        """
        session = self._by_connection.get(connection_id, {}).get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    # ------------------------------------------------------------------ lifecycle
    def create(
        self,
        connection_id: str,
        send: Callable[[str], None],
        *,
        system_prompt: str | None,
        tools: list[dict[str, Any]],
        model: str | None,
        sampling: dict[str, Any],
        metadata: dict[str, Any],
    ) -> ServerSession:
        """Create a session (not yet started: call ``session.loop.start()`` after
        the startSession response is queued).

        Raises:
            LimitReached: too many sessions on this connection or in the process.
        """
        if len(self._sessions) >= self.limits.max_sessions:
            raise LimitReached("maxSessions", self.limits.max_sessions)
        owned = self._by_connection.setdefault(connection_id, {})
        if len(owned) >= self.limits.max_sessions_per_connection:
            raise LimitReached("maxSessionsPerConnection", self.limits.max_sessions_per_connection)
        session_id = "s_" + secrets.token_urlsafe(12)
        bridge = DelegateBridge(session_id, send, self._validate)
        loop = AILoop(
            self.provider,
            bridge,
            system_prompt=system_prompt,
            tools=tools,
            model=model,
            sampling=sampling,
            config=self.loop_config,
        )
        session = ServerSession(
            session_id,
            connection_id,
            loop,
            bridge,
            model or self.provider.default_model,
            [t["function"]["name"] for t in tools],
            metadata,
        )
        self._sessions[session_id] = session
        owned[session_id] = session
        return session

    def _forget(self, session: ServerSession) -> None:
        self._sessions.pop(session.id, None)
        owned = self._by_connection.get(session.connection_id)
        if owned is not None:
            owned.pop(session.id, None)

    async def stop(self, session: ServerSession, reason: str) -> None:
        """Stop a session (cancel its turn, announce ``ended``) and forget it."""
        self._forget(session)
        await session.loop.stop(reason)

    async def release_connection(self, connection_id: str, reason: str = "disconnect") -> None:
        """Stop and forget every session of a connection that went away."""
        owned = self._by_connection.pop(connection_id, {})
        for session in list(owned.values()):
            self._sessions.pop(session.id, None)
            try:
                await session.loop.stop(reason)
            except Exception:  # never let one session block the release of the others
                log.exception("stopping session %s failed", session.id)

    async def stop_all(self, reason: str) -> None:
        await asyncio.gather(*(self.release_connection(c, reason) for c in list(self._by_connection)))

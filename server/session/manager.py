"""InteractiveSessionManager: owns every session of the process.

Sessions are created on behalf of a connection and can only be found through
the connection they are attached to (``get(connection_id, session_id)``); any other
connection gets SESSION_NOT_FOUND, unless it presents the session's resume token
to ``attach``. When a connection goes away its sessions are *detached* for the
resume grace period (turns go on, notifications are logged for replay), then
stopped and released: turn tasks cancelled, provider streams closed. With a grace
period of 0 they are released at once.

Behind the manager sits a session store (:mod:`server.store`). With the default
in-memory store nothing leaves the process. With a shared store (Redis) other
processes can attach this process's sessions and the other way round: the
:class:`~server.store.cluster.Cluster` does that part, through a few hooks below
(``create``, ``attach``, ``complete_attach``, ``release_connection``, ``stop``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.loop.engine import AILoop, LoopConfig
from server.loop.provider import ModelProvider
from server.protocol.errors import InvalidParams, LimitReached, ReplayWindowExpiredError, SessionNotFound
from server.session.bridge import DelegateBridge, ReplayWindowExpired
from server.metrics import Metrics
from server.session.outbox import Outbox
from server.store.base import SessionStore
from server.store.memory import MemoryStore

__all__ = ["InteractiveSessionManager", "ServerSession", "SessionLimits"]

log = logging.getLogger("ailoop.sessions")

IDEMPOTENCY_KEYS_KEPT = 256


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_sessions: int = 10_000
    max_sessions_per_connection: int = 16
    resume_grace_s: float = 0.0
    replay_log_size: int = 1000
    max_lifetime_s: float = 0.0
    """0 disables."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(eq=False, slots=True)
class ServerSession:
    id: str
    connection_id: str | None
    """The connection it is attached to; None while detached."""
    loop: AILoop
    bridge: DelegateBridge
    model: str
    tool_names: list[str]
    metadata: dict[str, Any]
    token_hash: bytes
    idempotency: OrderedDict[str, tuple[str, dict[str, Any]]] = field(default_factory=OrderedDict)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    grace: asyncio.TimerHandle | None = None
    """Running while detached: stops the session when the grace period ends."""
    # Shared store only (server/store/cluster.py):
    relay: str | None = None
    """Owner side: the process relaying this session's turn to its client."""
    epoch: int = 0
    """Owner side: bumped at every attach from another process."""
    handover_to: str | None = None
    """Owner side: hand the session over to this process when the turn ends."""
    handing_over: bool = False
    remote: Any = None
    """Relaying side: the Relay while the turn runs on another process (``loop`` is then
    a RemoteLoop standing in for the real one)."""
    deadline_ms: int = 0
    """Wall-clock end of the session's max lifetime (0: none)."""

    def remember(self, key: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.idempotency[key] = (fingerprint, result)
        while len(self.idempotency) > IDEMPOTENCY_KEYS_KEPT:
            self.idempotency.popitem(last=False)

    def snapshot(self) -> dict[str, Any]:
        """The SessionSnapshot of the spec."""
        return {
            "sessionId": self.id,
            "status": self.loop.status,
            "turnId": self.loop.turn_id,
            "lastSeq": self.bridge.seq,
            "oldestSeq": self.bridge.oldest_seq if self.bridge.log else 0,
            "pendingToolCalls": [
                {"toolCallId": c.id, "name": c.name, "arguments": c.arguments} for c in self.loop.pending_tool_calls()
            ],
            "messages": list(self.loop.conversation.messages),
        }


class InteractiveSessionManager:
    def __init__(
        self,
        provider: ModelProvider,
        *,
        loop_config: LoopConfig = LoopConfig(),
        limits: SessionLimits = SessionLimits(),
        validate: Callable[[dict[str, Any]], None] | None = None,
        metrics: Metrics | None = None,
        store: SessionStore | None = None,
    ) -> None:
        self.metrics = metrics
        self.provider = provider
        self.loop_config = loop_config
        self.limits = limits
        self._validate = validate
        self._sessions: dict[str, ServerSession] = {}
        self._by_connection: dict[str, dict[str, ServerSession]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.store: SessionStore = store if store is not None else MemoryStore()
        self.cluster: Any = None
        if self.store.shared:
            from server.store.cluster import Cluster

            self.cluster = Cluster(self, self.store)  # type: ignore[arg-type]

    async def open(self) -> None:
        """Start the store's background work (nothing for the in-memory store)."""
        if self.cluster is not None:
            await self.store.open(self.cluster)

    async def close(self) -> None:
        """Stop the store's background work (after ``stop_all``)."""
        if self.cluster is not None:
            await self.store.close()

    # ------------------------------------------------------------------ queries
    @property
    def count(self) -> int:
        return len(self._sessions)

    @property
    def detached(self) -> int:
        return sum(1 for s in self._sessions.values() if s.connection_id is None)

    def by_state(self) -> dict[str, int]:
        """Sessions by status; detached ones are counted as ``detached``."""
        out: dict[str, int] = {}
        for s in self._sessions.values():
            state = "detached" if s.connection_id is None else s.loop.status
            out[state] = out.get(state, 0) + 1
        return out

    def count_for(self, connection_id: str) -> int:
        return len(self._by_connection.get(connection_id, ()))

    def running_tasks(self) -> int:
        """Turn tasks still alive (0 once every session is released)."""
        return sum(1 for s in self._sessions.values() if s.loop.has_running_task)

    def get(self, connection_id: str, session_id: str) -> ServerSession:
        """The session, if it is attached to this connection.

        Raises:
            SessionNotFound: unknown, ended, or attached elsewhere / detached.
        """
        session = self._by_connection.get(connection_id, {}).get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    # ------------------------------------------------------------------ lifecycle
    async def create(
        self,
        connection_id: str,
        sink: Outbox,
        *,
        system_prompt: str | None,
        tools: list[dict[str, Any]],
        model: str | None,
        sampling: dict[str, Any],
        metadata: dict[str, Any],
    ) -> tuple[ServerSession, str]:
        """Create a session attached to ``connection_id``; returns it and its resume
        token. Call ``session.loop.start()`` once the startSession response is queued.

        Raises:
            LimitReached: too many sessions on this connection or in the process (or,
                with a shared store, on all processes).
            StoreUnavailable: a shared store could not be reached.
        """
        if len(self._sessions) >= self.limits.max_sessions:
            raise LimitReached("maxSessions", self.limits.max_sessions)
        owned = self._by_connection.setdefault(connection_id, {})
        if len(owned) >= self.limits.max_sessions_per_connection:
            raise LimitReached("maxSessionsPerConnection", self.limits.max_sessions_per_connection)
        session_id = "s_" + secrets.token_urlsafe(12)
        if self.cluster is not None:
            await self.cluster.reserve(session_id)
            if self._by_connection.get(connection_id) is not owned:  # the connection closed meanwhile
                self.cluster.unreserve(session_id)
                raise SessionNotFound(session_id)
        token = secrets.token_urlsafe(32)
        bridge = DelegateBridge(session_id, sink, self._validate, self.limits.replay_log_size, self.metrics)
        loop = AILoop(self.provider, bridge, system_prompt=system_prompt, tools=tools, model=model,
                      sampling=sampling, config=self.loop_config, label=session_id)
        session = ServerSession(session_id, connection_id, loop, bridge, model or self.provider.default_model,
                                [t["function"]["name"] for t in tools], metadata, _hash(token))
        self._sessions[session_id] = session
        owned[session_id] = session
        if self.cluster is not None:
            self.cluster.on_created(session)
        log.info("session started", extra={"sessionId": session_id, "connectionId": connection_id})
        if self.limits.max_lifetime_s > 0:
            session.timers.append(asyncio.get_running_loop().call_later(
                self.limits.max_lifetime_s, self._spawn_stop, session, "max_lifetime"))
        return session, token

    async def attach(self, connection_id: str, session_id: str, token: str, after_seq: int
                     ) -> tuple[ServerSession, int]:
        """Check that ``connection_id`` may attach the session from ``after_seq``.

        Returns the session and how many notifications will be replayed; call
        :meth:`complete_attach` once the response is queued.

        Raises:
            SessionNotFound: unknown session or wrong token (indistinguishable).
            ReplayWindowExpiredError: the cursor is older than the replay log.
            InvalidParams: the cursor is beyond the last seq.
            StoreUnavailable: (shared store) Redis or the owning process did not answer.
        """
        session = self._sessions.get(session_id)
        if session is None and self.cluster is not None:
            return await self.cluster.attach_remote(connection_id, session_id, token, after_seq)
        if session is None or not hmac.compare_digest(session.token_hash, _hash(token)):
            raise SessionNotFound(session_id)
        try:
            count = session.bridge.check_cursor(after_seq)
        except ReplayWindowExpired as exc:
            raise ReplayWindowExpiredError(exc.oldest_seq, session.snapshot()) from None
        except ValueError as exc:
            raise InvalidParams(str(exc), {"errors": [{"loc": "afterSeq", "msg": "beyond the last seq"}],
                                           "lastSeq": session.bridge.seq}) from None
        if len(self._by_connection.get(connection_id, {})) >= self.limits.max_sessions_per_connection \
                and session.connection_id != connection_id:
            raise LimitReached("maxSessionsPerConnection", self.limits.max_sessions_per_connection)
        return session, count

    def complete_attach(self, session: ServerSession, connection_id: str, sink: Outbox, after_seq: int) -> None:
        """Move the session to ``connection_id`` and replay into its outbox."""
        if session.id not in self._sessions:
            return  # stopped meanwhile (its `ended` is in the log of a session that is gone)
        if session.connection_id is not None:
            self._by_connection.get(session.connection_id, {}).pop(session.id, None)
        self._cancel_grace(session)
        session.connection_id = connection_id
        self._by_connection.setdefault(connection_id, {})[session.id] = session
        replayed = session.bridge.attach(sink, min(after_seq, session.bridge.seq))
        if self.cluster is not None:
            self.cluster.on_attached(session, connection_id)
        log.info("session attached", extra={"sessionId": session.id, "connectionId": connection_id,
                                            "afterSeq": after_seq, "replayed": replayed})

    def _forget(self, session: ServerSession) -> None:
        if session.remote is not None:
            session.remote.close()
        self._sessions.pop(session.id, None)
        if session.connection_id is not None:
            owned = self._by_connection.get(session.connection_id)
            if owned is not None:
                owned.pop(session.id, None)
        for timer in session.timers:
            timer.cancel()
        session.timers.clear()
        self._cancel_grace(session)

    async def stop(self, session: ServerSession, reason: str) -> None:
        """Stop a session (cancel its turn, announce ``ended``) and forget it."""
        if session.remote is not None:  # its turn runs on another process: stop it there
            await self.cluster.stop_relayed(session, reason)
            return
        self._forget(session)
        try:
            await session.loop.stop(reason)
        except Exception:  # never let one session block the release of others
            log.exception("stopping session failed", extra={"sessionId": session.id})
        if self.cluster is not None:
            self.cluster.on_stopped(session)
            await self.cluster.store.confirm()  # its server-wide slot is free once stop returns
        log.info("session ended", extra={"sessionId": session.id, "reason": reason, "lastSeq": session.bridge.seq})

    def _spawn_stop(self, session: ServerSession, reason: str) -> None:
        if session.id not in self._sessions:
            return
        task = asyncio.get_running_loop().create_task(self.stop(session, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_grace(self, session: ServerSession) -> None:
        if session.grace is not None:
            session.grace.cancel()
            session.grace = None

    def _unbind(self, session: ServerSession) -> None:
        """Take the session away from its connection (which gets nothing more of it)."""
        if session.connection_id is not None:
            self._by_connection.get(session.connection_id, {}).pop(session.id, None)
        session.connection_id = None
        session.bridge.detach()

    def _detach_with_grace(self, session: ServerSession, reason: str = "disconnect", *,
                           announce: bool = True) -> None:
        """Leave the session detached for the grace period (or stop it now with grace 0).
        ``announce=False``: a session rebuilt for an attachSession that completes at once;
        held at least a few seconds whatever the grace."""
        self._unbind(session)
        self._cancel_grace(session)
        grace = self.limits.resume_grace_s
        if not announce:
            grace = max(grace, 5.0)
        elif grace <= 0:
            self._spawn_stop(session, reason)
            return
        session.grace = asyncio.get_running_loop().call_later(grace, self._spawn_stop, session, "disconnect")
        if announce and self.cluster is not None:
            self.cluster.on_detached(session)

    async def release_connection(self, connection_id: str, reason: str = "disconnect") -> None:
        """The connection went away: detach its sessions for the grace period, or stop
        and release them at once (grace 0, or ``reason`` other than a disconnect)."""
        owned = self._by_connection.pop(connection_id, {})
        grace = self.limits.resume_grace_s if reason in ("disconnect", "slow_consumer") else 0.0
        for session in list(owned.values()):
            if session.remote is not None:
                session.connection_id = None
                session.bridge.detach()
                await self.cluster.release_relayed(session, reason)
                continue
            if grace > 0:
                log.info("session detached", extra={"sessionId": session.id, "connectionId": connection_id,
                                                    "graceS": grace})
                session.connection_id = None
                session.bridge.detach()
                session.grace = asyncio.get_running_loop().call_later(grace, self._spawn_stop, session, "disconnect")
                if self.cluster is not None:
                    self.cluster.on_detached(session)
            else:
                await self.stop(session, reason)

    async def stop_all(self, reason: str) -> None:
        for connection_id in list(self._by_connection):
            await self.release_connection(connection_id, reason)
        for session in list(self._sessions.values()):
            await self.stop(session, reason)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

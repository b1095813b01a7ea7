"""The session-store interface behind :class:`~server.session.manager.InteractiveSessionManager`.

A store answers one question for the manager: *what do other processes need to know
about this process's sessions, and what do we need to know about theirs?* With one
process the answer is "nothing" (:class:`~server.store.memory.MemoryStore`). With
several (:class:`~server.store.redis.RedisStore`) it is, per session:

- a **registry entry**: owning process, state (attached / detached), the resume
  token's hash, static settings (model, tools, system prompt, sampling, metadata);
- the **conversation context** (OpenAI-format history plus the loop's counters), saved
  at every status change, so another process can rebuild the loop;
- the **notification log** for replay, trimmed to ``session.replay_log_size``;
- a **slot** in the server-wide session count (``limits.max_sessions``);

plus, per process, a liveness key and a control channel through which other
processes forward requests (attach, tool results, cancel, stop) to the process that
owns a session. Every key expires: nothing outlives the grace period by more than
``store.ttl_margin_s``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["SessionStore"]


class SessionStore:
    """What the session manager needs from a store.

    ``shared`` says whether sessions are visible to other processes; when it is False
    the manager never calls anything but :meth:`open` and :meth:`close`, and no
    notification is mirrored (the bridge's ``mirror`` hook stays None).
    """

    shared: ClassVar[bool] = False
    name: ClassVar[str] = "memory"
    process_id: str = "local"
    """This process's id in the store (stable for the life of the process)."""

    async def open(self, host: Any) -> None:
        """Start background work (connections, heartbeats). ``host`` is the manager's
        side of the protocol between processes (:class:`server.store.cluster.Cluster`)."""

    async def close(self) -> None:
        """Stop background work and give up this process's keys."""

    def health(self) -> dict[str, Any]:
        """A small status object for logs and /healthz-like reports."""
        return {"backend": self.name}

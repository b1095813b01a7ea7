"""Session stores: where the session manager keeps what outlives one process.

``memory`` (the default) keeps everything in the process: nothing else to install,
and the per-notification path is exactly the single-process one. ``redis`` shares each
session's registry entry, conversation and replay log through Redis, so that several
processes and nodes serve one protocol (docs/operations.md, "Several processes and
nodes (Redis)"). :func:`make_store` builds one from the ``store`` settings' plain values.
"""

from __future__ import annotations

from typing import Any

from server.store.base import SessionStore
from server.store.memory import MemoryStore

__all__ = ["MemoryStore", "SessionStore", "make_store"]


def make_store(backend: str = "memory", **values: Any) -> SessionStore:
    """The store for ``store.backend`` (the other keys of the ``store`` section as values)."""
    if backend == "redis":
        from server.store.redis import RedisStore

        return RedisStore(**values)
    if backend != "memory":
        raise ValueError(f"unknown store backend {backend!r}")
    return MemoryStore()

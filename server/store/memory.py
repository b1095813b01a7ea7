"""The in-memory store: today's single-process behaviour, nothing else to install.

Sessions live in the manager's own dictionaries, replay logs in each session's
bridge; nothing is copied anywhere, so the per-notification path stays exactly the
single-process one (the bridge's ``mirror`` hook is None). Another process knows
nothing of these sessions: attaching there gets SESSION_NOT_FOUND.
"""

from __future__ import annotations

from typing import ClassVar

from server.store.base import SessionStore

__all__ = ["MemoryStore"]


class MemoryStore(SessionStore):
    shared: ClassVar[bool] = False
    name: ClassVar[str] = "memory"

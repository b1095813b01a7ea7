"""Outgoing frames: per-session notes (numbered, logged for replay) and the bounded
per-connection outbox they are queued in.

A :class:`Note` is one notification. It is numbered when created, kept in its
session's replay log, and serialized once, when first written to a socket (after
that it is frozen). Until then a non-final text chunk may still absorb the text of
the next chunk of the same message: that is how a slow reader is served without the
server buffering every chunk separately (BP-1), with no seq consumed by the merge.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from server.loop.jsonutil import dumps

__all__ = ["CLOSE", "Note", "Outbox"]

CLOSE = "close"
_NOTE_OVERHEAD = 160  # bytes of a notification frame besides its text


class Note:
    __slots__ = ("seq", "method", "params", "frame")

    def __init__(self, seq: int, method: str, params: dict[str, Any]) -> None:
        self.seq = seq
        self.method = method
        self.params: dict[str, Any] | None = params
        self.frame: str | None = None

    def encode(self) -> str:
        """The frame's JSON text; serialized on first use, then frozen."""
        frame = self.frame
        if frame is None:
            frame = self.frame = dumps({"jsonrpc": "2.0", "method": self.method, "params": self.params}).decode()
            self.params = None
        return frame

    def mergeable(self, message_id: str) -> bool:
        p = self.params
        return p is not None and p.get("messageId") == message_id and p.get("isFinal") is False


class Outbox:
    """FIFO of one connection's outgoing frames (responses and notes), bounded.

    Past ``high_water`` queued frames, sessions merge text chunks into the last
    queued chunk of the same message. Past ``max_bytes`` queued bytes, ``on_overflow``
    is called once (the connection then detaches its sessions and closes with 1008).
    """

    __slots__ = ("_items", "_wakeup", "bytes", "closed", "high_water", "max_bytes", "on_overflow",
                 "last_activity", "merged")

    def __init__(self, high_water: int = 1000, max_bytes: int = 8 << 20) -> None:
        self._items: deque[Any] = deque()
        self._wakeup = asyncio.Event()
        self.bytes = 0
        self.closed = False
        self.high_water = high_water
        self.max_bytes = max_bytes
        self.on_overflow: Callable[[], None] | None = None
        self.last_activity = time.monotonic()
        self.merged = 0
        """Text chunks merged into an earlier one (a measure of slow reading)."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def congested(self) -> bool:
        return len(self._items) >= self.high_water

    def send(self, frame: str) -> None:
        """Queue an encoded frame (a response)."""
        self._push(frame, len(frame))

    def push(self, note: Note, *, replay: bool = False) -> None:
        """Queue a notification. Replayed notes are not counted against ``max_bytes``:
        they are already held by their session's bounded replay log."""
        if replay:
            self._push(note, 0)
            return
        params = note.params
        size = _NOTE_OVERHEAD + (len(params.get("chunk", "")) if params is not None else len(note.frame or ""))
        self._push(note, size)

    def grew(self, n: int) -> None:
        """A queued note absorbed ``n`` more characters."""
        self.merged += 1
        self.bytes += n
        self._check()

    def _push(self, item: Any, size: int) -> None:
        if self.closed:
            return
        self._items.append((item, size))
        self.bytes += size
        self._wakeup.set()
        self._check()

    def _check(self) -> None:
        if self.bytes > self.max_bytes and not self.closed and self.on_overflow is not None:
            overflow, self.on_overflow = self.on_overflow, None
            overflow()

    def close(self, code: int, reason: str, *, discard: bool = False) -> None:
        """Queue the close frame (after what is queued, or instead of it)."""
        if self.closed:
            return
        if discard:
            self._items.clear()
            self.bytes = 0
        self._items.append(((CLOSE, code, reason), 0))
        self.closed = True
        self._wakeup.set()

    async def next(self) -> Any:
        """The next frame to write: a str, or ``(CLOSE, code, reason)``."""
        while not self._items:
            self._wakeup.clear()
            await self._wakeup.wait()
        item, size = self._items.popleft()
        self.bytes -= size
        self.last_activity = time.monotonic()
        if isinstance(item, Note):
            return item.encode()
        return item

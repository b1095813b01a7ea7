"""The WebSocket edge: a thin pump between a Starlette WebSocket and an RpcConnection.

accept → one writer task drains the connection's outbound queue to the socket;
the reader feeds every received frame to the connection. On any disconnect the
connection's sessions are released. No protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from server.session.connection import RpcConnection

__all__ = ["ConnectionRegistry", "serve_websocket"]

log = logging.getLogger("ailoop.ws")

_CLOSE = object()


class _Outbox:
    """Unbounded FIFO of outgoing frames, with a close marker."""

    __slots__ = ("queue", "closed")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    def send(self, frame: str) -> None:
        if not self.closed:
            self.queue.put_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait((_CLOSE, code, reason))


class ConnectionRegistry:
    """Open connections of this process (for /healthz and graceful shutdown)."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[RpcConnection, _Outbox]] = {}

    def __len__(self) -> int:
        return len(self.open)

    async def shutdown(self, reason: str = "server_shutdown", code: int = 1001) -> None:
        """Tell every session it ended, then close every socket with ``code``."""
        for conn, outbox in list(self.open.values()):
            await conn.close(reason)
            outbox.close(code, "server shutdown")


async def _writer(ws: WebSocket, outbox: _Outbox) -> None:
    queue = outbox.queue
    try:
        while True:
            item = await queue.get()
            if isinstance(item, tuple):
                _, code, reason = item
                await ws.close(code, reason)
                return
            await ws.send_text(item)
    except (WebSocketDisconnect, RuntimeError, OSError):
        outbox.closed = True  # the peer is gone; the reader sees the disconnect


async def serve_websocket(ws: WebSocket, make_connection: Any, registry: ConnectionRegistry) -> None:
    await ws.accept()
    outbox = _Outbox()
    conn: RpcConnection = make_connection(outbox.send)
    registry.open[conn.connection_id] = (conn, outbox)
    writer = asyncio.create_task(_writer(ws, outbox), name=f"writer-{conn.connection_id}")
    try:
        while not writer.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is not None:
                await conn.receive_text(text)
            elif message.get("bytes") is not None:
                conn.receive_binary()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection %s failed", conn.connection_id)
    finally:
        registry.open.pop(conn.connection_id, None)
        await conn.close("disconnect")
        if not writer.done():
            outbox.close(1000, "")
            try:
                await asyncio.wait_for(writer, 1.0)
            except Exception:  # the peer is gone: nothing more can be sent
                writer.cancel()

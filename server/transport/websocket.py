"""The WebSocket edge: a thin pump between a Starlette WebSocket and an RpcConnection.

handshake checks → accept → one writer task drains the connection's outbox to the
socket while the reader feeds every received frame to the connection. On any
disconnect the connection's sessions are detached or released. No protocol logic
lives here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.session.connection import RpcConnection
from server.session.outbox import CLOSE, Outbox
from server.transport.auth import Authenticator

__all__ = ["ConnectionRegistry", "EdgeLimits", "serve_websocket"]

log = logging.getLogger("ailoop.ws")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_connections: int = 10_000
    idle_timeout_s: float = 0.0
    outbound_high_water: int = 256
    outbound_max_bytes: int = 8 << 20


class ConnectionRegistry:
    """Open connections of this process (for /healthz and graceful shutdown)."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[RpcConnection, Outbox]] = {}
        self.merged_closed = 0
        """Merged chunks of connections already closed."""

    def __len__(self) -> int:
        return len(self.open)

    def queued_bytes(self) -> int:
        return sum(o.bytes for _, o in self.open.values())

    def queue_stats(self) -> tuple[int, int, int]:
        """Frames, bytes and merged chunks of the open connections' outboxes."""
        frames = nbytes = merged = 0
        for _, o in self.open.values():
            frames, nbytes, merged = frames + len(o), nbytes + o.bytes, merged + o.merged
        return frames, nbytes, merged

    async def shutdown(self, reason: str = "server_shutdown", code: int = 1001) -> None:
        """Tell every session it ended, then close every socket with ``code``."""
        for conn, outbox in list(self.open.values()):
            await conn.close(reason)
            outbox.close(code, "server shutdown")


async def _writer(ws: WebSocket, outbox: Outbox) -> None:
    # The ASGI send itself: Starlette's send_text/send only re-check the state the
    # accept already established, on every frame.
    send = ws._send
    try:
        while True:
            item = await outbox.next()
            if type(item) is tuple and item[0] == CLOSE:
                await ws.close(item[1], item[2])
                return
            await send({"type": "websocket.send", "text": item})
    except (WebSocketDisconnect, RuntimeError, OSError):
        outbox.closed = True  # the peer is gone; the reader sees the disconnect


async def serve_websocket(
    ws: WebSocket,
    make_connection: Callable[[Outbox], RpcConnection],
    registry: ConnectionRegistry,
    auth: Authenticator,
    limits: EdgeLimits,
) -> None:
    verdict = auth.check(ws.headers, ws.query_params)
    if verdict.status == 0 and len(registry) >= limits.max_connections:
        verdict = type(verdict)(503, "too many connections")
    if verdict.status:
        log.info("handshake refused", extra={"status": verdict.status, "reason": verdict.reason,
                                             "peer": f"{ws.client.host}:{ws.client.port}" if ws.client else None})
        await ws.send_denial_response(PlainTextResponse(verdict.reason, status_code=verdict.status))
        return
    await ws.accept(subprotocol=verdict.subprotocol)
    outbox = Outbox(limits.outbound_high_water, limits.outbound_max_bytes)
    conn = make_connection(outbox)
    registry.open[conn.connection_id] = (conn, outbox)
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else None
    log.info("connection opened", extra={"connectionId": conn.connection_id, "peer": peer})
    writer = asyncio.create_task(_writer(ws, outbox), name=f"writer-{conn.connection_id}")
    reason = "disconnect"

    def overflow() -> None:
        log.warning("slow consumer: closing with 1008", extra={"connectionId": conn.connection_id,
                                                                "queuedBytes": outbox.bytes})
        # BP-1: the client cannot keep up. Its queued frames are dropped (the
        # sessions' notifications stay in their replay logs), the sessions are
        # detached, and the socket is closed with 1008 once it can be written.
        asyncio.get_running_loop().create_task(conn.close("slow_consumer"))
        outbox.close(1008, "slow_consumer", discard=True)

    outbox.on_overflow = overflow
    idle = limits.idle_timeout_s or None
    try:
        while not writer.done():
            try:
                async with asyncio.timeout(idle):
                    message = await ws.receive()
            except TimeoutError:
                if time.monotonic() - outbox.last_activity < idle:  # type: ignore[operator]
                    continue
                reason = "idle_timeout"
                await conn.close("disconnect")
                outbox.close(1000, "idle_timeout")
                break
            outbox.last_activity = time.monotonic()
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
        log.exception("connection failed", extra={"connectionId": conn.connection_id})
    finally:
        registry.open.pop(conn.connection_id, None)
        registry.merged_closed += outbox.merged
        await conn.close("disconnect")
        log.info("connection closed", extra={"connectionId": conn.connection_id, "reason": reason,
                                             "mergedChunks": outbox.merged})
        if not writer.done():
            outbox.close(1000, "")
            try:
                await asyncio.wait_for(writer, 1.0 if reason == "disconnect" else 5.0)
            except Exception:  # the peer is gone or not reading: nothing more can be sent
                writer.cancel()

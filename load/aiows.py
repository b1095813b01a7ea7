"""A lean asyncio WebSocket client for the benchmark and the memory probes.

Not a general-purpose client: just enough of RFC 6455 to drive a JSON-RPC server
hard from one core without the client becoming the bottleneck.

* One ``asyncio.Protocol`` per connection; frames are parsed straight out of
  ``data_received`` (several frames per call when the server's writes coalesce).
* Server frames are unmasked (RFC 6455 5.1); text frames are handed to an
  ``on_text(payload: bytes)`` callback without decoding.
* Client frames are masked (5.3) with a per-connection key and integer XOR.
* Pings are answered (uvicorn pings every 20 s and drops peers that stay silent),
  close frames are echoed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable

__all__ = ["WsConnection", "connect"]

_PACK_H = struct.Struct("!H").pack
_PACK_Q = struct.Struct("!Q").pack
_UNPACK_H = struct.Struct("!H").unpack_from
_UNPACK_Q = struct.Struct("!Q").unpack_from


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + _PACK_H(n)
    else:
        head += bytes((0x80 | 127,)) + _PACK_Q(n)
    return head + key + _mask(payload, key)


class WsConnection(asyncio.Protocol):
    """One client connection. ``on_text`` gets every text message's payload (bytes)."""

    def __init__(self, host: str, port: int, path: str, on_text: Callable[[bytes], None] | None) -> None:
        self.on_text = on_text or (lambda _b: None)
        self.transport: asyncio.Transport | None = None
        self._key = os.urandom(4)
        self._buf = bytearray()
        self._handshake_done = False
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self._fragments: list[bytes] = []
        self.close_code: int | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                self.transport.close()  # type: ignore[union-attr]
                return
            self._handshake_done = True
            self.opened.set_result(None)
        pos = 0
        size = len(buf)
        on_text = self.on_text
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            h = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = _UNPACK_H(buf, pos + 2)[0]
                h = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = _UNPACK_Q(buf, pos + 2)[0]
                h = 10
            end = pos + h + n
            if end > size:
                break
            payload = bytes(buf[pos + h : end])
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == 1 and fin:
                on_text(payload)
            elif opcode in (0, 1, 2):
                self._fragments.append(payload)
                if fin:
                    whole = b"".join(self._fragments)
                    self._fragments.clear()
                    on_text(whole)
            elif opcode == 9:  # ping -> pong
                self.transport.write(encode_frame(0xA, payload, self._key))  # type: ignore[union-attr]
            elif opcode == 8:  # close -> echo, then the server closes TCP
                self.close_code = _UNPACK_H(payload, 0)[0] if len(payload) >= 2 else None
                if not self.transport.is_closing():  # type: ignore[union-attr]
                    self.transport.write(encode_frame(8, payload[:2], self._key))  # type: ignore[union-attr]
        if pos:
            del buf[:pos]

    # ------------------------------------------------------------------ API
    def send_text(self, text: bytes) -> None:
        self.transport.write(encode_frame(1, text, self._key))  # type: ignore[union-attr]

    def close(self, code: int = 1000) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(encode_frame(8, _PACK_H(code), self._key))
            t.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, path: str = "/ws", on_text: Callable[[bytes], None] | None = None, timeout: float = 30.0
) -> WsConnection:
    """Open a connection and wait for the handshake."""
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WsConnection(host, port, path, on_text), host, port), timeout
    )
    await asyncio.wait_for(proto.opened, timeout)
    return proto

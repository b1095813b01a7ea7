"""A synchronous JSON-RPC 2.0 client over one WebSocket, for locust users.

Built on ``websocket-client``: blocking calls, which locust's gevent monkey-patching
turns into cooperative waits (an asyncio client cannot run inside locust tasks).
Every receive is bounded by ``timeout``. Frames are checked as they arrive
against the few protocol rules a load run can verify cheaply: per-session ``seq``
rises by exactly 1, one response per request id, nothing of a message after its
final chunk. A violation raises :class:`ProtocolViolation`.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import Any

import orjson
import websocket

__all__ = ["ProtocolViolation", "RpcError", "RpcSocket", "Turn"]


class ProtocolViolation(Exception):
    """The server broke a protocol rule (or went silent past the timeout)."""


class RpcError(Exception):
    """A JSON-RPC error response."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class Turn:
    """Timings of one turn, in seconds since the request was sent (None: not reached)."""

    __slots__ = ("response", "first_chunk", "tool_calls", "done", "chunks", "bytes", "final_reason", "notes")

    def __init__(self) -> None:
        self.response: float | None = None
        self.first_chunk: float | None = None
        self.tool_calls: list[dict[str, Any]] = []
        self.done: float | None = None
        self.chunks = 0
        self.bytes = 0
        self.final_reason: str | None = None
        self.notes: list[dict[str, Any]] = []


class RpcSocket:
    """One connection. ``connect()`` it, then ``call()`` / ``send_request()`` / ``recv()``."""

    def __init__(self, url: str, *, timeout: float = 30.0, rcvbuf: int | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.rcvbuf = rcvbuf
        self.ws: websocket.WebSocket | None = None
        self._next_id = 0
        self._seq: dict[str, int] = {}
        self._inbox: deque[dict[str, Any]] = deque()
        self.bytes_received = 0

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        opts: list[tuple[int, int, int]] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        if self.rcvbuf:
            opts.append((socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf))
        self.ws = websocket.create_connection(self.url, timeout=self.timeout, sockopt=tuple(opts),
                                              enable_multithread=False, skip_utf8_validation=True)

    def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - the peer may already be gone
                ws.shutdown()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.shutdown()

    @property
    def connected(self) -> bool:
        return self.ws is not None and self.ws.connected

    # ------------------------------------------------------------------ frames
    def send_request(self, method: str, params: dict[str, Any] | None = None) -> int:
        assert self.ws is not None, "not connected"
        self._next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.ws.send(orjson.dumps(msg).decode())
        return self._next_id

    def recv(self, deadline: float | None = None) -> dict[str, Any]:
        """The next frame (parsed, checked); raises ProtocolViolation past ``deadline``."""
        if self._inbox:
            return self._inbox.popleft()
        assert self.ws is not None, "not connected"
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolViolation("timed out waiting for a frame")
            self.ws.settimeout(min(left, self.timeout))
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise ProtocolViolation("timed out waiting for a frame") from None
        if not raw:
            raise ConnectionError("connection closed by the server")
        self.bytes_received += len(raw)
        msg = orjson.loads(raw)
        if isinstance(msg, dict) and msg.get("method"):
            p = msg.get("params") or {}
            sid = p.get("sessionId")
            if sid is not None:
                last = self._seq.get(sid, 0)
                if p.get("seq") != last + 1:
                    raise ProtocolViolation(f"seq {p.get('seq')} after {last} in {sid}")
                self._seq[sid] = last + 1
        return msg

    def response(self, rid: int, deadline: float, keep: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Read until the response to ``rid``; notifications met on the way go to ``keep``."""
        while True:
            msg = self.recv(deadline)
            if isinstance(msg, list):
                raise ProtocolViolation("unexpected batch response")
            if "method" in msg:
                if keep is None:
                    raise ProtocolViolation(f"notification {msg['method']} before the response to {rid}")
                keep.append(msg)
                continue
            if msg.get("id") != rid:
                raise ProtocolViolation(f"response to id {msg.get('id')} while waiting for {rid}")
            if "error" in msg:
                raise RpcError(msg["error"])
            return msg["result"]

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None,
             keep: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        rid = self.send_request(method, params)
        return self.response(rid, time.monotonic() + (timeout or self.timeout), keep)

    def push_back(self, msgs: list[dict[str, Any]]) -> None:
        """Frames read ahead (e.g. by ``response``) to be returned by ``recv`` first."""
        self._inbox.extendleft(reversed(msgs))

    # ------------------------------------------------------------------ sessions and turns
    def start_session(self, timeout: float | None = None, **params: Any) -> str:
        """startSession, then wait for SessionStatusNotification ``started``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        result = self.response(self.send_request("startSession", params), deadline)
        sid = result["sessionId"]
        msg = self.recv(deadline)
        p = msg.get("params") or {}
        if msg.get("method") != "SessionStatusNotification" or p.get("status") != "started" or p.get("sessionId") != sid:
            raise ProtocolViolation(f"expected 'started' for {sid}, got {msg!r:.200}")
        return sid

    def stop_session(self, sid: str, timeout: float | None = None) -> None:
        """stopSession; the ``ended`` notification precedes the response (ORD-5)."""
        keep: list[dict[str, Any]] = []
        self.call("stopSession", {"sessionId": sid}, timeout, keep)
        if not any(m["params"].get("status") == "ended" for m in keep if m.get("method") == "SessionStatusNotification"):
            raise ProtocolViolation("stopSession answered before 'ended'")

    def read_turn(self, sid: str, turn: Turn, t0: float, deadline: float, *, stop_at_tool_calls: bool = False,
                  max_frames: int | None = None) -> Turn:
        """Read a turn's notifications until status ``idle`` (or ``awaiting_tool_results``
        when ``stop_at_tool_calls``), filling ``turn``'s timings (relative to ``t0``)."""
        frames = 0
        final_seen: set[str] = set()
        while True:
            if max_frames is not None and frames >= max_frames:
                return turn
            msg = self.recv(deadline)
            frames += 1
            method = msg.get("method")
            p = msg.get("params") or {}
            if p.get("sessionId") != sid:
                raise ProtocolViolation(f"frame of another session: {msg!r:.200}")
            now = time.perf_counter() - t0
            if method == "AIMessageChunkNotification":
                if p["messageId"] in final_seen:
                    raise ProtocolViolation(f"chunk after the final chunk of {p['messageId']}")
                if turn.first_chunk is None:
                    turn.first_chunk = now
                turn.chunks += 1
                turn.bytes += len(p.get("chunk", ""))
                if p.get("isFinal"):
                    final_seen.add(p["messageId"])
                    turn.final_reason = p.get("finishReason")
            elif method == "ToolCallNotification":
                turn.tool_calls.append(p)
            elif method == "SessionStatusNotification":
                status = p.get("status")
                if status == "idle":
                    turn.done = now
                    return turn
                if status == "awaiting_tool_results" and stop_at_tool_calls:
                    return turn
                if status == "ended":
                    raise ProtocolViolation(f"session ended during a turn: {p.get('reason')}")
            elif method == "ErrorNotification":
                turn.notes.append(p)
            else:
                raise ProtocolViolation(f"unexpected frame during a turn: {msg!r:.200}")

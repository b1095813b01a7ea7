"""The client side of the contract suite: WebSocket connections, the oracle, /healthz.

A :class:`Harness` owns any number of connections to one server (``c0``, ``c1``, ...),
a :class:`~contract_tests.transcript.Transcript` of every frame and an
:class:`~contract_tests.oracle.Observer` that checks each frame as it is sent or
received. Tests act through it (``request``, ``send_raw``, ``close``), call
:meth:`Harness.settle` to wait -- bounded -- until the oracle expects nothing more,
and :meth:`Harness.raise_if_violations` to fail with the violations and the transcript.

It uses only the wire protocol (the ``websockets`` library) and HTTP ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from contract_tests.oracle import Limits, Observer
from contract_tests.protocol import ROOT, SCHEMA, id_key
from contract_tests.transcript import Transcript

__all__ = ["ContractViolation", "Harness", "Target", "encode", "health_url_for", "run_scenario"]

SUBPROTOCOLS = [SCHEMA["x-handshake"]["subprotocol"]] if "subprotocol" in SCHEMA.get("x-handshake", {}) else None
ARTIFACTS = Path(os.environ.get("AILOOP_CONTRACT_ARTIFACTS", ROOT / "test-artifacts" / "contract"))
_NO_PARAMS = object()


class ContractViolation(AssertionError):
    """The server broke a promise of the spec (the message has the transcript)."""


@dataclass
class Target:
    """The server under test."""

    ws_url: str
    health_url: str
    limits: Limits
    backends: list[str]
    started_here: bool = False
    exclusive: bool = True
    """No other client uses the server: /healthz counts must match exactly."""
    first_chunk_timeout_s: float | None = None
    """The server's ai.first_chunk_timeout_s, when known (needed for `/sim error hang`)."""
    log_path: Path | None = None
    token: str | None = None
    """Bearer token for servers with authentication on."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def simulator(self) -> bool:
        return "simulator" in self.backends

    @property
    def settle_timeout(self) -> float:
        return 5.0 + (self.first_chunk_timeout_s or 0.0)


def health_url_for(ws_url: str) -> str:
    """``ws://host:port/ws`` -> ``http://host:port/healthz`` (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/healthz", "", ""))


def encode(value: Any) -> str:
    """Compact JSON; falls back to ASCII escapes when a string holds lone surrogates."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text


class Harness:
    def __init__(self, target: Target, title: str = "contract", *, drain_s: float = 0.004) -> None:
        self.target = target
        self.title = re.sub(r"[^A-Za-z0-9_.-]+", "_", title)[:120]
        self.transcript = Transcript(title)
        self.observer = Observer(self.transcript, target.limits, simulator=target.simulator)
        self.ws: dict[str, ClientConnection] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._waiters: dict[tuple[str, tuple[str, str]], asyncio.Future[dict[str, Any]]] = {}
        self._activity = asyncio.Event()
        self._next_id = 0
        self._n_conns = 0
        self._http: httpx.AsyncClient | None = None
        self.drain_s = drain_s
        self.probe = True
        """settle() ends with a ping round trip on every open connection."""
        self._probed: list[str] = []
        self.base: dict[str, int] = {"sessions": 0, "detached": 0, "connections": 0, "runningTurns": 0}
        """What /healthz counted before this harness began (0 unless an earlier test
        failed and left something behind): tolerated, so that one leak fails the test
        that caused it instead of every test after it."""
        self.started_by: dict[tuple[str, tuple[str, str]], str] = {}
        """(conn, request id key) -> session id from a startSession response (for replay)."""

    # ------------------------------------------------------------------ connections
    def open_conns(self) -> list[str]:
        return [n for n, c in self.observer.conns.items() if not c.closed and not c.closing]

    async def open(self, *, slow: bool = False) -> str:
        """Open a connection. ``slow``: a small receive buffer and queue, so that
        :meth:`pause_reading` quickly pushes back on the server (BP-1)."""
        name = f"c{self._n_conns}"
        self._n_conns += 1
        headers = {"Authorization": f"Bearer {self.target.token}"} if self.target.token else None
        extra: dict[str, Any] = {}
        if slow:
            parts = urlsplit(self.target.ws_url)
            sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port or 80))
            extra = {"sock": sock, "max_queue": 2}
        ws = await websockets.connect(
            self.target.ws_url,
            max_size=None,
            ping_interval=None,
            compression=None,
            open_timeout=10,
            close_timeout=2,
            subprotocols=SUBPROTOCOLS,  # type: ignore[arg-type]
            additional_headers=headers,
            **extra,
        )
        self.ws[name] = ws
        self._gates[name] = asyncio.Event()
        self._gates[name].set()
        self.transcript.add(name, "open", **({"slow": True} if slow else {}))
        self.observer.on_open(name)
        self._readers[name] = asyncio.create_task(self._reader(name, ws), name=f"reader-{name}")
        return name

    def pause_reading(self, conn: str) -> None:
        """Stop reading ``conn`` (a slow consumer) until :meth:`resume_reading`."""
        self.transcript.add(conn, "pause_reading")
        self._gates[conn].clear()

    def resume_reading(self, conn: str) -> None:
        self.transcript.add(conn, "resume_reading")
        self._gates[conn].set()

    async def _reader(self, name: str, ws: ClientConnection) -> None:
        gate = self._gates[name]
        try:
            while True:
                if not gate.is_set():
                    await gate.wait()
                data = await ws.recv()
                i = self.transcript.add_received(name, data)
                self.observer.on_receive(name, data, i)
                self._resolve(name, data)
                self._activity.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            code = rcvd.code if rcvd is not None else None
            reason = rcvd.reason if rcvd is not None else ""
            i = self.transcript.add(name, "closed", code=code, reason=reason[:200])
            self.observer.on_closed(name, code, i)
            for key, fut in list(self._waiters.items()):
                if key[0] == name:
                    del self._waiters[key]
                    if not fut.done():
                        fut.set_result({})  # no response: the connection closed
            self._activity.set()

    def _resolve(self, conn: str, data: str | bytes) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        for r in msg if isinstance(msg, list) else [msg]:
            if not isinstance(r, dict) or "id" not in r or "method" in r:
                continue
            key = id_key(r["id"])
            result = r.get("result")
            if isinstance(result, dict) and "sessionId" in result and result.get("status") == "started" and "tools" in result:
                self.started_by[(conn, key)] = result["sessionId"]
            fut = self._waiters.pop((conn, key), None)
            if fut is not None and not fut.done():
                fut.set_result(r)

    async def close(self, conn: str, *, abrupt: bool = False) -> None:
        """Close a connection: cleanly (close frame 1000) or abruptly (drop TCP)."""
        ws = self.ws[conn]
        if self.observer.conns[conn].closed:
            return
        self.transcript.add(conn, "close", abrupt=abrupt)
        self.observer.on_client_close(conn)
        if abrupt:
            ws.transport.abort()
        else:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except (TimeoutError, websockets.ConnectionClosed):
                ws.transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(self._readers[conn]), 5)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ sending
    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send_raw(self, conn: str, data: str | bytes, kind: str = "text") -> None:
        """Send one frame: ``kind`` text, binary, or invalid_utf8 (bytes in a text frame)."""
        i = self.transcript.add_sent(conn, data, kind)
        self.observer.on_send(conn, data, kind, i)
        ws = self.ws[conn]
        try:
            if kind == "invalid_utf8":
                await ws.send(bytes(data), text=True)  # type: ignore[arg-type]
            else:
                await ws.send(data)
        except websockets.ConnectionClosed:
            pass  # the reader records how it closed

    def frame(self, method: str, params: Any = _NO_PARAMS, *, id: Any = _NO_PARAMS) -> dict[str, Any]:
        f: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id() if id is _NO_PARAMS else id, "method": method}
        if params is not _NO_PARAMS:
            f["params"] = params
        return f

    async def send_request(self, conn: str, method: str, params: Any = _NO_PARAMS, *, id: Any = _NO_PARAMS) -> asyncio.Future[dict[str, Any]]:
        """Send a request without waiting; returns the future of its response."""
        f = self.frame(method, params, id=id)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        key = (conn, id_key(f["id"]))
        if key in self._waiters:
            raise RuntimeError(f"harness bug: id {f['id']!r} already outstanding on {conn}")
        self._waiters[key] = fut
        await self.send_raw(conn, encode(f))
        return fut

    async def request(self, conn: str, method: str, params: Any = _NO_PARAMS, *, id: Any = _NO_PARAMS) -> dict[str, Any] | None:
        """Send a request and wait (bounded) for its response; None when none came."""
        fut = await self.send_request(conn, method, params, id=id)
        try:
            return await asyncio.wait_for(fut, self.target.settle_timeout) or None
        except TimeoutError:
            return None

    async def notify(self, conn: str, method: str, params: Any = _NO_PARAMS) -> None:
        f: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not _NO_PARAMS:
            f["params"] = params
        await self.send_raw(conn, encode(f))

    async def batch(self, conn: str, calls: list[tuple[str, Any]]) -> None:
        await self.send_raw(conn, encode([self.frame(m, p) for m, p in calls]))

    # ------------------------------------------------------------------ convenience
    async def start_session(self, conn: str, **params: Any) -> str | None:
        r = await self.request(conn, "startSession", params)
        return r["result"]["sessionId"] if r and "result" in r else None

    async def send_message(self, conn: str, sid: str, content: str) -> dict[str, Any] | None:
        return await self.request(conn, "sendUserMessage", {"sessionId": sid, "content": content})

    def note(self, text: str) -> None:
        self.transcript.add(None, "note", text=text)

    async def sleep(self, seconds: float) -> None:
        """A deliberate wait (recorded, so a replay waits too)."""
        self.transcript.add(None, "sleep", seconds=seconds)
        await asyncio.sleep(seconds)

    # ------------------------------------------------------------------ waiting
    async def settle(self, timeout: float | None = None) -> None:
        """Wait until the oracle expects nothing more (no response due, no turn
        streaming, nothing announced missing) and no frame came for ``drain_s``. What is
        still missing at the deadline is recorded as a liveness violation."""
        limit = timeout if timeout is not None else self.target.settle_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            busy = self.observer.busy()
            remaining = deadline - loop.time()
            if not busy:
                n = len(self.transcript.entries)
                await self._probe(remaining)
                if len(self.transcript.entries) == n + 2 * len(self._probed) and not self.observer.busy():
                    break
                continue
            if remaining <= 0:
                for req, text in busy:
                    self.observer.violate(req, f"after {limit:.1f}s still waiting: {text}")
                break
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass
        self.transcript.add(None, "settle")

    async def _probe(self, remaining: float) -> None:
        """Quiet as far as the oracle knows: make sure nothing is still in flight. A
        ping on every open connection is answered after every frame the server queued
        before it (one queue per connection), so a stray frame already on its way shows
        up before the pong -- more dependable than waiting for silence."""
        conns = [c for c in self.open_conns() if self._gates[c].is_set() and self.observer.conns[c].expect_close is None]
        self._probed = conns
        if not self.probe or not conns:
            self._probed = []
            await asyncio.sleep(self.drain_s)
            return
        futs = [await self.send_request(c, "ping", {"data": "settle"}) for c in conns]
        try:
            await asyncio.wait_for(asyncio.gather(*futs), max(0.05, min(remaining, self.target.settle_timeout)))
        except TimeoutError:
            pass  # busy() reports the missing pong

    async def health(self) -> dict[str, Any]:
        if self._http is None:
            # No TLS context for plain http (building one costs ~15 ms per client).
            self._http = httpx.AsyncClient(timeout=5, verify=not self.target.health_url.startswith("http:"))
        r = await self._http.get(self.target.health_url)
        r.raise_for_status()
        return r.json()

    async def take_baseline(self) -> None:
        if self.target.exclusive:
            h = await self.health()
            self.base = {k: int(h.get(k, 0) or 0) for k in self.base}
            if any(self.base.values()):
                self.transcript.add(None, "note", text=f"healthz baseline (left by earlier tests) {json.dumps(self.base)}")

    async def check_health(self, *, final: bool = False, timeout: float | None = None) -> None:
        """/healthz against the model (LIFE-1, REPLAY-4): attached sessions exactly,
        detached ones while their resume grace lasts; at the end (after every grace
        period) zero sessions, zero running turns and zero connections."""
        if not self.target.exclusive:
            return
        loop = asyncio.get_running_loop()
        if timeout is None:
            timeout = 1.0  # a release takes milliseconds on loopback
        if final:
            # Detached sessions may live until their grace period ends.
            ends = [s.detached_until for s in self.observer.sessions.values() if s.detached and s.detached_until]
            if ends:
                await asyncio.sleep(max(0.0, max(ends) - time.monotonic()))
        deadline = loop.time() + timeout
        h: dict[str, Any] = {}
        while True:
            attached, certain, possible = self.observer.health_expectation()
            h = await self.health()
            b = self.base
            sessions, detached, running = h.get("sessions", -1), h.get("detached"), h.get("runningTurns", 0)
            if final:
                ok = sessions <= b["sessions"] and running <= b["runningTurns"] and h.get("connections", 0) <= b["connections"]
                want = f"sessions=0, runningTurns=0, connections=0 (plus {b} left before)" if any(b.values()) else "sessions=0, runningTurns=0, connections=0"
            else:
                ok = attached + certain <= sessions <= attached + possible + b["sessions"] and running <= attached + possible + b["runningTurns"]
                if detached is not None:
                    ok = ok and attached <= sessions - detached <= attached + b["sessions"] - b["detached"]
                want = f"attached sessions={attached}, detached {certain}..{possible}, runningTurns<={attached + possible}"
                if any(b.values()):
                    want += f" (plus what earlier tests left: {json.dumps(b)})"
            if ok or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        self.transcript.add(None, "note", text=f"healthz {json.dumps(h)}")
        if not ok:
            self.observer.violate("LIFE-1", f"/healthz reports {json.dumps(h)} after {timeout}s; the client's model says {want}")

    # ------------------------------------------------------------------ ending
    async def finish(self, *, stop_sessions: bool | None = None) -> None:
        """Settle, close every connection, and check the server released everything.

        ``stop_sessions`` (default True): stopSession every live session first, so the
        final check need not wait out the resume grace period of detached sessions
        (tests of release-on-disconnect close their connections themselves)."""
        await self.settle()
        if stop_sessions is None:
            stop_sessions = True
        if stop_sessions:
            for s in list(self.observer.sessions.values()):
                if s.live and s.conn in self.open_conns():
                    await self.request(s.conn, "stopSession", {"sessionId": s.id})
            await self.settle()
        for conn in self.open_conns():
            await self.close(conn)
        await self.settle()
        await self.check_health(final=True)

    async def aclose(self) -> None:
        for conn, ws in self.ws.items():
            if not self.observer.conns[conn].closed:
                self.observer.conns[conn].closing = True
                ws.transport.abort()
        for task in self._readers.values():
            task.cancel()
        await asyncio.gather(*self._readers.values(), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def raise_if_violations(self, **header: Any) -> None:
        vs = self.observer.violations
        if not vs:
            return
        path = ARTIFACTS / f"{self.title}.jsonl"
        try:
            self.transcript.save(path, **header)
            saved = str(path)
        except OSError as exc:  # read-only checkout: the message still has it
            saved = f"(not saved: {exc})"
        lines = [f"{len(vs)} contract violation(s):"]
        lines += [f"  {v}" for v in vs]
        lines += [
            "",
            f"Transcript (JSON lines, abridged; full file {saved}; to replay it as a regression test "
            "copy it to contract_tests/transcripts/):",
            self.transcript.abridged(),
        ]
        raise ContractViolation("\n".join(lines))

    # ------------------------------------------------------------------ replay
    async def replay(self, entries: list[dict[str, Any]]) -> None:
        """Re-run a recorded transcript: same frames, same connections, same waits.
        Server-chosen session and tool call ids are mapped to the new run's ids."""
        sent_method: dict[tuple[str, tuple[str, str]], str] = {}
        rec_sessions: dict[tuple[str, tuple[str, str]], str] = {}
        rec_calls: dict[tuple[str, int], str] = {}
        rec_tokens: dict[tuple[str, tuple[str, str]], str] = {}
        rec_turn_count: dict[str, int] = {}
        for e in entries:
            f = e.get("frame")
            if e["dir"] == "send" and f is not None:
                for m in f if isinstance(f, list) else [f]:
                    if isinstance(m, dict) and "id" in m and isinstance(m.get("method"), str):
                        sent_method[(e["conn"], id_key(m["id"]))] = m["method"]
            elif e["dir"] == "recv" and f is not None:
                for m in f if isinstance(f, list) else [f]:
                    if not isinstance(m, dict):
                        continue
                    if m.get("method") == "ToolCallNotification":
                        p = m["params"]
                        n = rec_turn_count.get(p["sessionId"], 0)
                        rec_turn_count[p["sessionId"]] = n + 1
                        rec_calls[(p["sessionId"], n)] = p["toolCallId"]
                    elif "id" in m and isinstance(m.get("result"), dict):
                        k = (e["conn"], id_key(m["id"]))
                        if sent_method.get(k) == "startSession":
                            rec_sessions[k] = m["result"]["sessionId"]
                            if m["result"].get("resumeToken"):
                                rec_tokens[k] = m["result"]["resumeToken"]

        def mapping() -> dict[str, str]:
            out: dict[str, str] = {}
            live_sid: dict[str, str] = {}
            for k, rec in rec_sessions.items():
                if k in self.started_by:
                    out[rec] = live_sid[rec] = self.started_by[k]
                    live = self.observer.sessions.get(self.started_by[k])
                    if k in rec_tokens and live is not None and live.token:
                        out[rec_tokens[k]] = live.token
            for (rec_sid, n), rec_call in rec_calls.items():
                sid = live_sid.get(rec_sid)
                s = self.observer.sessions.get(sid) if sid else None
                if s is not None and n < len(s.calls):
                    out[rec_call] = list(s.calls)[n]
            return out

        for e in entries:
            d = e["dir"]
            if d == "open":
                name = await self.open(slow=bool(e.get("slow")))
                if name != e["conn"]:
                    raise ValueError(f"transcript opens {e['conn']} where the replay opened {name}")
            elif d == "close":
                await self.close(e["conn"], abrupt=bool(e.get("abrupt")))
            elif d == "settle":
                await self.settle()
            elif d == "pause_reading":
                self.pause_reading(e["conn"])
            elif d == "resume_reading":
                self.resume_reading(e["conn"])
            elif d == "sleep":
                await asyncio.sleep(float(e.get("seconds", 0)))
            elif d == "note":
                if not str(e.get("text", "")).startswith("healthz"):
                    self.note(e["text"])
            elif d == "send":
                if e["conn"] not in self.open_conns():
                    continue
                if "binary" in e:
                    await self.send_raw(e["conn"], bytes.fromhex(e["binary"]), "binary")
                    continue
                if "invalid_utf8" in e:
                    await self.send_raw(e["conn"], bytes.fromhex(e["invalid_utf8"]), "invalid_utf8")
                    continue
                text = e["text"] if "text" in e else encode(e["frame"])
                for rec, live in mapping().items():
                    text = text.replace(rec, live)
                await self.send_raw(e["conn"], text)
        await self.finish()


def run_scenario(target: Target, title: str, body: Any, *, timeout: float = 60.0, only: set[str] | None = None) -> Harness:
    """Run ``await body(harness)`` on a fresh event loop, then settle, close every
    connection and check /healthz; fail with the violations and the transcript
    (``only``: fail only on violations of these requirement ids)."""

    async def main() -> Harness:
        h = Harness(target, title)
        failure: BaseException | None = None
        try:
            await h.take_baseline()
            await asyncio.wait_for(body(h), timeout)
            await h.finish()
        except (AssertionError, TimeoutError) as exc:
            failure = exc
        finally:
            await h.aclose()
        record = os.environ.get("AILOOP_CONTRACT_RECORD")
        if record and failure is None and not h.observer.violations:
            h.transcript.save(Path(record) / f"{h.title}.jsonl")
        if failure is not None:
            if isinstance(failure, TimeoutError):
                h.observer.violate("RPC-1", f"scenario did not finish in {timeout}s")
            else:
                h.observer.violate("TEST", f"assertion: {failure}")
        if only is not None:
            h.observer.violations = [v for v in h.observer.violations if v.req in only]
        h.raise_if_violations()
        return h

    return asyncio.run(main())

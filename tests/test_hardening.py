"""Hardening (issue 7): reconnect with replay, idempotency, backpressure, limits,
heartbeats, authentication."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from tests.support import WsClient, make_settings, message_texts, serve
from tests.support import reply_text as _uninterrupted

SLOW = {"first_chunk_ms": 5, "chunk_interval_ms": 5}


def _text(notes: list[dict]) -> str:
    return "".join(p["chunk"] for p in notes if "chunk" in p)


async def test_reconnect_mid_stream_replays_missed_chunks_exactly_once():
    """REPLAY-1: drop the socket mid-stream, attach elsewhere, get every missed
    notification once, in order, then the rest live."""
    async with serve(make_settings(simulator=SLOW, session={"resume_grace_s": 10})) as srv:
        content = "/sim chunks 120\nthe quick brown fox jumps over the lazy dog " * 3
        expected = await _uninterrupted(srv.ws_url, content)
        a = WsClient.connect(srv.ws_url)
        c1 = await a.__aenter__()
        start = await c1.call("startSession", {})
        sid, token = start["sessionId"], start["resumeToken"]
        await c1.call("sendUserMessage", {"sessionId": sid, "content": content})
        await c1.wait_for(lambda: len([p for p in c1.session_notes(sid) if p.get("chunk")]) >= 20)
        c1.ws.transport.abort()  # abrupt drop, no close frame
        await a.__aexit__(None, None, None)
        got_a = c1.session_notes(sid)
        last = got_a[-1]["seq"]
        h = await srv.health()
        assert h["detached"] == 1 and h["sessions"] == 1
        async with WsClient.connect(srv.ws_url) as c2:
            res = await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last})
            assert res["sessionId"] == sid and res["replayed"] == res["lastSeq"] - last
            await c2.wait_status(sid, "idle")
            got_b = c2.session_notes(sid)
            # The response preceded the replay; replay starts right after the cursor.
            assert got_b[0]["seq"] == last + 1
            seqs = [p["seq"] for p in got_a + got_b]
            assert seqs == list(range(1, len(seqs) + 1))
            assert _text(got_a + got_b) == expected
            assert (await srv.health())["detached"] == 0
            # The session is fully usable on the new connection.
            notes = await c2.run_turn(sid, "again")
            assert _text(notes) == "You said: again"


async def test_attach_refusals():
    async with serve(make_settings(session={"resume_grace_s": 10, "replay_log_size": 5})) as srv:
        async with WsClient.connect(srv.ws_url) as c1:
            start = await c1.call("startSession", {})
            sid, token = start["sessionId"], start["resumeToken"]
            await c1.run_turn(sid, "/sim chunks 10\nx")
            last = c1.session_notes(sid)[-1]["seq"]
        async with WsClient.connect(srv.ws_url) as c2:
            # REPLAY-3: a wrong token is indistinguishable from an unknown session.
            r = await c2.request("attachSession", {"sessionId": sid, "resumeToken": "wrong" * 8, "afterSeq": 0}, expect_error=True)
            assert r["error"]["code"] == -32001
            r = await c2.request("attachSession", {"sessionId": "s_nope", "resumeToken": token, "afterSeq": 0}, expect_error=True)
            assert r["error"]["code"] == -32001
            # REPLAY-2: the cursor is older than the 5-entry log.
            r = await c2.request("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": 2}, expect_error=True)
            err = r["error"]
            assert err["code"] == -32010 and err["data"]["oldestSeq"] == last - 4
            snap = err["data"]["snapshot"]
            assert snap["lastSeq"] == last and snap["status"] == "idle" and snap["messages"][0] == {"role": "user", "content": "/sim chunks 10\nx"}
            # A cursor in the future is invalid.
            r = await c2.request("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last + 1}, expect_error=True)
            assert r["error"]["code"] == -32602
            # Nothing changed: the session is still detached and attachable.
            ok = await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last})
            assert ok["replayed"] == 0 and ok["status"] == "idle"


async def test_detached_session_is_released_after_the_grace_period():
    """REPLAY-4 / LIFE-1."""
    async with serve(make_settings(simulator=SLOW, session={"resume_grace_s": 0.3})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session()
            await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 2000\nx"})
            await c.wait_notification(lambda p: bool(p.get("chunk")))
        h = await srv.health()
        assert h["detached"] == 1 and h["runningTurns"] == 1  # the turn goes on while detached
        h = await srv.wait_idle(5)
        assert h["sessions"] == 0 and h["detached"] == 0


async def test_attach_takes_over_from_a_live_connection():
    async with serve(make_settings(simulator=SLOW)) as srv:
        async with WsClient.connect(srv.ws_url) as c1, WsClient.connect(srv.ws_url) as c2:
            start = await c1.call("startSession", {})
            sid = start["sessionId"]
            await c2.call("attachSession", {"sessionId": sid, "resumeToken": start["resumeToken"], "afterSeq": 1})
            r = await c1.request("sendUserMessage", {"sessionId": sid, "content": "x"}, expect_error=True)
            assert r["error"]["code"] == -32001
            notes = await c2.run_turn(sid, "moved")
            assert _text(notes) == "You said: moved"
            assert all(n["params"]["seq"] == 1 for n in c1.notifications)


async def test_idempotent_retries_are_not_duplicated(server):
    """IDEM-1."""
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(tools=[{"type": "function", "function": {"name": "t"}}])
        msg = {"sessionId": sid, "content": "/sim tool t {}\n/sim tool t {\"n\": 2}", "idempotencyKey": "k1"}
        first = await c.call("sendUserMessage", msg)
        await c.wait_status(sid, "awaiting_tool_results")
        again = await c.call("sendUserMessage", msg)  # a retry, e.g. after a reconnect
        assert again == first
        r = await c.request("sendUserMessage", {**msg, "content": "different"}, expect_error=True)
        assert r["error"]["code"] == -32012
        ids = [p["toolCallId"] for p in c.session_notes(sid) if "toolCallId" in p]
        res = {"sessionId": sid, "toolCallId": ids[0], "result": "r0", "idempotencyKey": "t0"}
        one = await c.call("provideToolResult", res)
        two = await c.call("provideToolResult", res)
        assert one == two and one["pendingToolCalls"] == 1
        await c.call("provideToolResult", {"sessionId": sid, "toolCallId": ids[1], "result": "r1"})
        await c.wait_status(sid, "idle")
        turns = {p["turnId"] for p in c.session_notes(sid) if p.get("turnId")}
        assert turns == {first["turnId"]}
        assert _text(c.session_notes(sid)).count("returned: r0") == 1


def _small_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _stalled_reader(srv, content: str, settle) -> tuple[list, int | None]:
    """Start a long reply, read nothing until ``settle(srv)`` returns, then read all."""
    frames: list = []
    port = int(srv.ws_url.rsplit(":", 1)[1].split("/")[0])
    async with websockets.connect(srv.ws_url, sock=_small_buffer_socket(port), max_queue=1) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "startSession", "params": {}}))
        frames.append(json.loads(await ws.recv()))
        sid = frames[0]["result"]["sessionId"]
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "sendUserMessage", "params": {"sessionId": sid, "content": content}}))
        await settle(srv)
        code = None
        try:
            async for raw in ws:
                frames.append(json.loads(raw))
                if frames[-1].get("params", {}).get("status") == "idle":
                    break
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
    return frames, code


async def test_slow_reader_gets_merged_chunks_with_bounded_memory():
    """BP-1: a client that reads nothing while 30,000 chunks stream."""
    settings = make_settings(limits={"outbound_high_water": 64, "outbound_max_bytes": 4 << 20}, session={"replay_log_size": 100})
    async with serve(settings) as srv:
        peak = []

        async def settle(srv):
            for _ in range(400):
                await asyncio.sleep(0.01)
                h = await srv.health()
                peak.append(h["queuedBytes"])
                if h["runningTurns"] == 0:
                    return

        frames, code = await _stalled_reader(srv, "/sim chunks 30000\nslow", settle)
        assert code is None
        notes = [f["params"] for f in frames if "method" in f]
        chunks = [p for p in notes if "chunk" in p]
        assert len(chunks) < 30001  # merged
        expected = await _uninterrupted(srv.ws_url, "/sim chunks 30000\nslow")
        assert _text(notes) == expected
        assert [p["seq"] for p in notes] == list(range(1, len(notes) + 1))
        # Queued: at most the high-water mark of frames, plus the reply's own text
        # (30,000 separate frames would have been ~5 MB).
        assert max(peak) < 64 * 200 + len(expected.encode())
        assert [p["status"] for p in notes if "status" in p] == ["started", "streaming", "idle"]


async def test_slow_reader_over_the_byte_limit_is_closed_with_1008_and_can_resume():
    settings = make_settings(limits={"outbound_high_water": 100_000, "outbound_max_bytes": 16_384},
                             session={"resume_grace_s": 10, "replay_log_size": 100_000})
    async with serve(settings) as srv:
        async def settle(srv):
            async with asyncio.timeout(30):  # until the server gave up on this reader
                while (await srv.health())["detached"] == 0:
                    await asyncio.sleep(0.02)

        frames, code = await _stalled_reader(srv, "/sim chunks 80000\nslow", settle)
        assert code == 1008
        h = await srv.health()
        assert h["detached"] == 1 and h["queuedBytes"] < 16_384
        sid = frames[0]["result"]["sessionId"]
        token = frames[0]["result"]["resumeToken"]
        got = [f["params"] for f in frames if "method" in f]
        rest = []
        async with websockets.connect(srv.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "attachSession",
                                      "params": {"sessionId": sid, "resumeToken": token, "afterSeq": got[-1]["seq"]}}))
            assert "result" in json.loads(await ws.recv())
            async with asyncio.timeout(60):
                async for raw in ws:
                    rest.append(json.loads(raw)["params"])
                    if rest[-1].get("status") == "idle":
                        break
        allnotes = got + rest
        assert [p["seq"] for p in allnotes] == list(range(1, len(allnotes) + 1))
        assert _text(allnotes) == await _uninterrupted(srv.ws_url, "/sim chunks 80000\nslow")


async def test_request_rate_limit():
    """LIM-1."""
    async with serve(make_settings(limits={"requests_per_s": 5, "request_burst": 2})) as srv:
        async with WsClient.connect(srv.ws_url) as c:
            await c.call("ping")
            await c.call("ping")
            r = await c.request("ping", None, expect_error=True)
            assert r["error"]["code"] == -32011 and 0 < r["error"]["data"]["retryAfterMs"] <= 200
            await asyncio.sleep(r["error"]["data"]["retryAfterMs"] / 1000 + 0.05)
            await c.call("ping")


async def test_ping(server):
    """HB-1."""
    async with WsClient.connect(server.ws_url) as c:
        r = await c.call("ping", {"data": {"n": 1}})
        assert r["pong"] is True and r["data"] == {"n": 1} and r["serverTimeMs"] > 1.7e12
        assert "data" not in await c.call("ping")


async def test_limits_connections_idle_tool_timeout_pending_calls_lifetime():
    settings = make_settings(limits={"max_connections": 2, "idle_timeout_s": 1.2, "tool_result_timeout_s": 0.2,
                                     "max_pending_tool_calls": 2}, session={"max_lifetime_s": 0.8})
    async with serve(settings) as srv:
        async with WsClient.connect(srv.ws_url) as a, WsClient.connect(srv.ws_url) as b:
            with pytest.raises(websockets.InvalidStatus) as info:
                async with websockets.connect(srv.ws_url):
                    pass
            assert info.value.response.status_code == 503
            sid = await a.start_session(tools=[{"type": "function", "function": {"name": "t"}}])
            await a.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool t {}"})  # nobody answers
            err = await a.wait_notification(lambda p: "code" in p)
            assert err["code"] == -32013
            await a.wait_status(sid, "idle")
            assert [p["finishReason"] for p in a.session_notes(sid) if p.get("isFinal")] == ["tool_calls", "error"]
            await a.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool t {}\n/sim tool t {}\n/sim tool t {}"})
            err = await a.wait_notification(lambda p: p.get("code") == -32004)
            assert err["data"]["retryable"] is False
            ended = await a.wait_status(sid, "ended", timeout=5)
            assert ended["reason"] == "max_lifetime"
            # b said nothing at all: closed as idle.
            await b.wait_for(lambda: b._reader.done(), timeout=5)
            assert b.closed_code == 1000


AUTH = {"auth": {"enabled": True, "allowed_origins": ["https://app.example"]}}


async def test_authentication_at_the_handshake(monkeypatch):
    """AUTH-1."""
    monkeypatch.setenv("AILOOP_AUTH_TOKENS", "tok-one, tok-two")
    async with serve(make_settings(**AUTH)) as srv:
        for kwargs, status in [({}, 401), ({"additional_headers": {"Authorization": "Bearer nope"}}, 403),
                               ({"subprotocols": ["ailoop.v1", "ailoop.bearer.nope"]}, 403),
                               ({"additional_headers": {"Authorization": "Bearer tok-one", "Origin": "https://evil.example"}}, 403)]:
            with pytest.raises(websockets.InvalidStatus) as info:
                async with websockets.connect(srv.ws_url, **kwargs):
                    pass
            assert info.value.response.status_code == status, kwargs
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(srv.ws_url + "?token=bad"):
                pass
        ok = [{"additional_headers": {"Authorization": "Bearer tok-two"}},
              {"subprotocols": ["ailoop.v1", "ailoop.bearer.tok-one"]},
              {"additional_headers": {"Authorization": "Bearer tok-one", "Origin": "https://app.example"}}]
        for kwargs in ok:
            async with WsClient.connect(srv.ws_url, **kwargs) as c:
                r = await c.call("initialize")
                assert r["capabilities"]["auth"] == ["bearer"]
                if "subprotocols" in kwargs:
                    assert c.ws.subprotocol == "ailoop.v1"
        async with WsClient.connect(srv.ws_url + "?token=tok-one") as c:
            await c.call("ping")


async def test_attach_needs_an_authenticated_connection(monkeypatch):
    monkeypatch.setenv("AILOOP_AUTH_TOKENS", "tok-one")
    async with serve(make_settings(auth={"enabled": True}, session={"resume_grace_s": 5})) as srv:
        hdr = {"additional_headers": {"Authorization": "Bearer tok-one"}}
        async with WsClient.connect(srv.ws_url, **hdr) as c:
            start = await c.call("startSession", {})
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(srv.ws_url, additional_headers={"Authorization": "Bearer stolen"}):
                pass
        async with WsClient.connect(srv.ws_url, **hdr) as c:
            r = await c.call("attachSession", {"sessionId": start["sessionId"], "resumeToken": start["resumeToken"], "afterSeq": 0})
            assert r["lastSeq"] == 1 and r["replayed"] == 1
            await c.wait_status(start["sessionId"], "started")


async def test_token_hash_file(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.delenv("AILOOP_AUTH_TOKENS", raising=False)
    f = tmp_path / "tokens"
    f.write_text(f"# ops team\n{hashlib.sha256(b'from-file').hexdigest()}\n")
    async with serve(make_settings(auth={"enabled": True, "token_hashes_file": str(f)})) as srv:
        async with WsClient.connect(srv.ws_url, additional_headers={"Authorization": "Bearer from-file"}) as c:
            await c.call("ping")


async def test_dead_peer_is_detected_by_websocket_pings():
    """HB: a peer that completed the handshake and then went silent (answers no ping)
    is disconnected after one heartbeat interval plus its timeout."""
    import base64
    import os

    async with serve(make_settings(limits={"heartbeat_interval_s": 0.2})) as srv:
        port = int(srv.ws_url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        assert b"101" in await reader.readline()
        assert (await srv.health())["connections"] == 1
        # Never read, never answer the pings: the server gives up on us.
        h = await srv.wait_idle(5)
        assert h["connections"] == 0
        writer.close()

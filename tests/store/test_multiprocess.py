"""Issue 9: two server processes sharing sessions through a real Redis.

Reconnect on the other process with replay then live relay, tool results given on the
other process, server-wide limits, an owner dying mid-turn, Redis unreachable or
restarting -- each checked end to end over real WebSockets.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis as redis_sync

from tests.store.conftest import server_config, two_servers
from tests.support import WsClient, spawn_server
from tests.support import reply_text as _uninterrupted

LONG = "/sim chunks 300\nthe quick brown fox jumps over the lazy dog " * 2
TOOLS = [{"type": "function", "function": {"name": "t"}}]


def _text(notes: list[dict]) -> str:
    return "".join(p["chunk"] for p in notes if "chunk" in p)


def _http(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0]


async def _health(ws_url: str) -> dict:
    async with httpx.AsyncClient() as c:
        return (await c.get(_http(ws_url) + "/healthz")).json()


async def _wait_health(ws_url: str, pred, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            h = await _health(ws_url)
            if pred(h):
                return h
            await asyncio.sleep(0.05)


async def _start_and_drop(url: str, content: str | None, *, tools=None, chunks_before_drop: int = 20):
    """startSession on ``url``, optionally start a turn, drop the socket abruptly;
    returns (session id, resume token, notifications received)."""
    cm = WsClient.connect(url)
    c = await cm.__aenter__()
    start = await c.call("startSession", {"tools": tools} if tools else {})
    sid, token = start["sessionId"], start["resumeToken"]
    await c.wait_status(sid, "started")
    if content is not None:
        await c.call("sendUserMessage", {"sessionId": sid, "content": content})
        if tools:
            await c.wait_status(sid, "awaiting_tool_results")
        else:
            await c.wait_for(lambda: len([p for p in c.session_notes(sid) if p.get("chunk")]) >= chunks_before_drop)
    c.ws.transport.abort()  # no close frame
    await cm.__aexit__(None, None, None)
    return sid, token, c.session_notes(sid)


async def test_reconnect_on_the_other_process_replays_then_relays_live(redis, tmp_path):
    """A session started on A, dropped mid-stream, attached on B: every missed
    notification replayed once, in order, then the rest live; the text identical to an
    uninterrupted run; the next turn runs on B."""
    with two_servers(redis.url, tmp_path) as ((pa, a), (pb, b)):
        expected = await _uninterrupted(a, LONG)
        sid, token, got_a = await _start_and_drop(a, LONG)
        last = got_a[-1]["seq"]
        async with WsClient.connect(b) as c2:
            res = await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last})
            assert res["status"] == "streaming" and res["turnId"] == "turn_1"  # the turn still runs on A
            assert res["replayed"] == res["lastSeq"] - last
            await c2.wait_status(sid, "idle", timeout=20)
            got_b = c2.session_notes(sid)
            assert got_b[0]["seq"] == last + 1
            seqs = [p["seq"] for p in got_a + got_b]
            assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate"
            assert _text(got_a + got_b) == expected
            # The turn ended on A: the session now lives on B, seq continuing.
            await _wait_health(a, lambda h: h["sessions"] == 0)
            hb = await _health(b)
            assert hb["sessions"] == 1 and hb["detached"] == 0
            notes = await c2.run_turn(sid, "again")
            assert _text(notes) == "You said: again"
            assert notes[0]["seq"] == seqs[-1] + 1 and notes[0]["turnId"] == "turn_2"
            # A third process-hop: back to A, from the start of the log.
            last_b = c2.session_notes(sid)[-1]["seq"]
        async with WsClient.connect(a) as c3:
            res = await c3.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": 0})
            assert res["lastSeq"] == last_b and res["replayed"] == last_b and res["status"] == "idle"
            await c3.wait_for(lambda: len(c3.session_notes(sid)) == last_b)
            assert _text(c3.session_notes(sid)) == _text(got_a + got_b) + "You said: again"
            await c3.call("stopSession", {"sessionId": sid})
        await _wait_health(a, lambda h: h["sessions"] == 0)
        await _wait_health(b, lambda h: h["sessions"] == 0)
        r = redis_sync.Redis.from_url(redis.url)
        assert r.zcard("ailoop:sessions") == 0 and not r.exists(f"ailoop:s:{sid}")
        assert pa.poll() is None and pb.poll() is None


async def test_tool_result_provided_on_the_other_process(redis, tmp_path):
    with two_servers(redis.url, tmp_path) as ((_pa, a), (_pb, b)):
        content = '/sim tool t {"n": 1}\n/sim tool t {"n": 2}'
        sid, token, got_a = await _start_and_drop(a, content, tools=TOOLS)
        calls = [p["toolCallId"] for p in got_a if "toolCallId" in p]
        assert len(calls) == 2
        async with WsClient.connect(a) as c1:  # answer one on A (first reconnect) ...
            await c1.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": got_a[-1]["seq"]})
            one = await c1.call("provideToolResult", {"sessionId": sid, "toolCallId": calls[0], "result": "r0"})
            assert one["pendingToolCalls"] == 1
            c1.ws.transport.abort()
        async with WsClient.connect(b) as c2:  # ... and the other on B, where the turn does not run
            res = await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": got_a[-1]["seq"]})
            assert res["status"] == "awaiting_tool_results"
            r = await c2.request("provideToolResult", {"sessionId": sid, "toolCallId": calls[0], "result": "again"},
                                 expect_error=True)
            assert r["error"]["code"] == -32003  # answered already (on A)
            r = await c2.request("sendUserMessage", {"sessionId": sid, "content": "x"}, expect_error=True)
            assert r["error"]["code"] == -32002 and r["error"]["data"]["retryable"] is True
            two = await c2.call("provideToolResult", {"sessionId": sid, "toolCallId": calls[1], "result": "r1",
                                                      "idempotencyKey": "k1"})
            assert two["pendingToolCalls"] == 0
            assert await c2.call("provideToolResult", {"sessionId": sid, "toolCallId": calls[1], "result": "r1",
                                                       "idempotencyKey": "k1"}) == two
            await c2.wait_status(sid, "idle", timeout=20)
            text = _text(c2.session_notes(sid))
            assert "Tool t returned: r0" in text and "Tool t returned: r1" in text
            await _wait_health(a, lambda h: h["sessions"] == 0)
            notes = await c2.run_turn(sid, "/sim tool t {}", tool_results=lambda c: "local")
            assert "Tool t returned: local" in _text(notes)


async def test_cancel_and_stop_are_forwarded_to_the_owner(redis, tmp_path):
    with two_servers(redis.url, tmp_path) as ((_pa, a), (_pb, b)):
        sid, token, got_a = await _start_and_drop(a, LONG)
        async with WsClient.connect(b) as c2:
            await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": got_a[-1]["seq"]})
            r = await c2.request("pauseSession", {"sessionId": sid}, expect_error=True)
            assert r["error"]["code"] == -32002
            res = await c2.call("cancelTurn", {"sessionId": sid})
            assert res == {"sessionId": sid, "cancelled": True, "turnId": "turn_1"}
            # ORD-7: the cancelled final chunk and idle came before the response.
            notes = c2.session_notes(sid)
            assert notes[-2].get("finishReason") == "cancelled" and notes[-1]["status"] == "idle"
            notes = await c2.run_turn(sid, "after cancel")
            assert _text(notes) == "You said: after cancel"
            await c2.call("stopSession", {"sessionId": sid})
        sid, token, got_a = await _start_and_drop(a, LONG)
        async with WsClient.connect(b) as c2:
            await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": got_a[-1]["seq"]})
            await c2.call("stopSession", {"sessionId": sid})
            assert c2.session_notes(sid)[-1]["status"] == "ended"  # ORD-5: before the response
            r = await c2.request("sendUserMessage", {"sessionId": sid, "content": "x"}, expect_error=True)
            assert r["error"]["code"] == -32001
        await _wait_health(a, lambda h: h["sessions"] == 0)
        await _wait_health(b, lambda h: h["sessions"] == 0)


async def test_max_sessions_is_shared_by_all_processes(redis, tmp_path):
    with two_servers(redis.url, tmp_path, max_sessions=3) as ((_pa, a), (_pb, b)):
        async with WsClient.connect(a) as ca, WsClient.connect(b) as cb:
            s1 = await ca.start_session()
            await ca.start_session()
            await cb.start_session()
            for c in (ca, cb):
                r = await c.request("startSession", {}, expect_error=True)
                assert r["error"]["code"] == -32004 and r["error"]["data"]["limit"] == "maxSessions"
            await ca.call("stopSession", {"sessionId": s1})
            await cb.start_session()  # the slot freed on A is usable on B
            r = await ca.request("startSession", {}, expect_error=True)
            assert r["error"]["code"] == -32004


async def test_owner_killed_mid_turn_ends_the_turn_with_a_documented_error(redis, tmp_path):
    """The process running the turn is killed; attaching on the other process ends the
    turn with SESSION_OWNER_LOST, and the session goes on there."""
    with two_servers(redis.url, tmp_path) as ((pa, a), (pb, b)):
        cm = WsClient.connect(a)
        c1 = await cm.__aenter__()
        start = await c1.call("startSession", {})
        sid, token = start["sessionId"], start["resumeToken"]
        await c1.run_turn(sid, "first")
        await c1.call("sendUserMessage", {"sessionId": sid, "content": LONG})
        await c1.wait_for(lambda: len([p for p in c1.session_notes(sid) if p.get("chunk")]) >= 10)
        pa.kill()
        pa.wait()
        with pytest.raises(BaseException):
            await c1.wait_for(lambda: False, timeout=5)
        try:
            await cm.__aexit__(None, None, None)
        except AssertionError:
            raise
        except Exception:
            pass
        got_a = c1.session_notes(sid)
        last = got_a[-1]["seq"]
        async with WsClient.connect(b) as c2:
            res = await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last})
            assert res["status"] == "idle"
            await c2.wait_status(sid, "idle")
            tail = c2.session_notes(sid)
            err = next(p for p in tail if "code" in p)
            assert err["code"] == -32015 and err["turnId"] == "turn_2" and err["data"]["retryable"] is True
            final = next(p for p in tail if p.get("isFinal"))
            assert final["finishReason"] == "error" and final["turnId"] == "turn_2"
            seqs = [p["seq"] for p in got_a + tail]
            assert seqs == list(range(1, len(seqs) + 1))
            notes = await c2.run_turn(sid, "still here")
            assert _text(notes) == "You said: still here" and notes[0]["turnId"] == "turn_3"
        assert pb.poll() is None


async def test_owner_killed_while_another_process_relays(redis, tmp_path):
    with two_servers(redis.url, tmp_path, chunk_ms=10) as ((pa, a), (pb, b)):
        sid, token, got_a = await _start_and_drop(a, LONG)
        async with WsClient.connect(b) as c2:
            await c2.call("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": got_a[-1]["seq"]})
            await c2.wait_for(lambda: len(c2.session_notes(sid)) > 20)
            pa.kill()
            pa.wait()
            err = await c2.wait_notification(lambda p: p.get("code") == -32015, timeout=10)
            assert err["turnId"] == "turn_1"
            await c2.wait_status(sid, "idle")
            seqs = [p["seq"] for p in got_a + c2.session_notes(sid)]
            assert seqs == list(range(1, len(seqs) + 1))
            notes = await c2.run_turn(sid, "on b")
            assert _text(notes) == "You said: on b"
        assert pb.poll() is None


async def test_redis_unreachable_then_restarted(redis, tmp_path):
    """Redis goes away: documented errors, nothing crashes, local sessions go on; it comes
    back empty: each process re-publishes its sessions, which attach elsewhere again."""
    with two_servers(redis.url, tmp_path) as ((pa, a), (pb, b)):
        async with WsClient.connect(a) as c1:
            start = await c1.call("startSession", {})
            sid, token = start["sessionId"], start["resumeToken"]
            await c1.run_turn(sid, "before")
            redis.stop()
            await asyncio.sleep(0.5)
            r = await c1.request("startSession", {}, expect_error=True)
            assert r["error"]["code"] == -32014 and r["error"]["data"]["retryable"] is True
            notes = await c1.run_turn(sid, "during")  # the session on A goes on
            assert _text(notes) == "You said: during"
            async with WsClient.connect(b) as c2:
                r = await c2.request("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": 0},
                                     expect_error=True)
                assert r["error"]["code"] == -32014
            assert (await _health(a))["status"] == "ok" and (await _health(b))["status"] == "ok"
            redis.start()  # same port, empty
            async with asyncio.timeout(10):
                while True:
                    r = await c1.request("startSession", {}, expect_error=None)
                    if "result" in r:
                        break
                    assert r["error"]["code"] == -32014
                    await asyncio.sleep(0.2)
            last = c1.session_notes(sid)[-1]["seq"]
        async with WsClient.connect(b) as c2:  # re-published: attach on B replays the whole log
            async with asyncio.timeout(10):
                while True:
                    r = await c2.request("attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": 0},
                                         expect_error=None)
                    if "result" in r:
                        break
                    assert r["error"]["code"] in (-32014, -32001)
                    await asyncio.sleep(0.2)
            assert r["result"]["lastSeq"] == last
            await c2.wait_for(lambda: len(c2.session_notes(sid)) == last)
            assert "You said: during" in _text(c2.session_notes(sid))
            notes = await c2.run_turn(sid, "after")
            assert _text(notes) == "You said: after"
        assert pa.poll() is None and pb.poll() is None


async def test_redis_unreachable_at_start(tmp_path):
    """A server whose Redis is not there starts anyway and answers STORE_UNAVAILABLE."""
    from server.store.redisproc import _free_port

    text = server_config(f"redis://127.0.0.1:{_free_port()}/0")
    with spawn_server(text, tmp_path) as (proc, url):
        async with WsClient.connect(url) as c:
            r = await c.request("startSession", {}, expect_error=True)
            assert r["error"]["code"] == -32014
            r = await c.request("attachSession", {"sessionId": "s_x", "resumeToken": "t" * 20, "afterSeq": 0},
                                expect_error=True)
            assert r["error"]["code"] == -32014
            assert (await c.call("ping", {}))["pong"] is True
        assert proc.poll() is None


def test_memory_store_is_the_default_and_mirrors_nothing():
    from server.session.manager import InteractiveSessionManager
    from server.store import MemoryStore, make_store
    from simulator.provider import SimulatorProvider
    from tests.support import make_settings

    assert isinstance(make_store(**make_settings().store.model_dump()), MemoryStore)
    m = InteractiveSessionManager(SimulatorProvider())
    assert isinstance(m.store, MemoryStore) and m.cluster is None

"""Promises about reconnects, retries and resource limits: attachSession and replay
(REPLAY-1..4), idempotency keys (IDEM-1), slow readers (BP-1), the rate limit (LIM-1)
and ping (HB-1). Tests read the server's advertised limits (initialize) and skip, with
the reason, when a limit makes a promise unreachable in reasonable time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from contract_tests.harness import Harness, Target, run_scenario
from contract_tests.protocol import CODE

req = pytest.mark.requirement


def code(resp: dict[str, Any] | None) -> int | None:
    assert resp is not None, "no response"
    return resp["error"]["code"] if "error" in resp else None


def long_text(n_chars: int) -> str:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    out: list[str] = []
    size = 0
    i = 0
    while size < n_chars:
        w = f"{words[i % len(words)]}{i}"
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)[:n_chars].strip()


@pytest.fixture
def sim(target: Target) -> Target:
    if not target.simulator:
        pytest.skip("needs the simulator backend (/sim directives)")
    return target


def grace_s(t: Target) -> float:
    return float(t.limits.get("resumeGraceMs") or 0) / 1000.0


# ---------------------------------------------------------------------- HB-1
@req("HB-1")
def test_ping_is_answered_at_once(target: Target) -> None:
    """ping gets pong (echoing data when given), also while a turn streams."""

    async def body(h: Harness) -> None:
        c = await h.open()
        r = await h.request(c, "ping")
        assert r["result"]["pong"] is True and "data" not in r["result"]
        data = {"nested": [1, "two", None, {"x": True}], "n": 2.5}
        assert (await h.request(c, "ping", {"data": data}))["result"]["data"] == data
        if target.simulator:
            sid = await h.start_session(c)
            await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": "/sim chunks 200\n" + long_text(400)})
            t0 = time.monotonic()
            r = await h.request(c, "ping", {"data": "during a turn"})
            assert r is not None and r["result"]["pong"] is True
            assert time.monotonic() - t0 < 1.0, "ping took longer than a second"

    run_scenario(target, "ping", body)


# ---------------------------------------------------------------------- LIM-1
@req("LIM-1")
def test_requests_over_the_rate_get_rate_limited_and_the_connection_keeps_working(target: Target) -> None:
    """A burst over requestBurst: the excess gets RATE_LIMITED with retryAfterMs;
    after waiting, requests succeed again on the same connection."""
    rate = float(target.limits.get("requestsPerSecond") or 0)
    burst = int(target.limits.get("requestBurst") or 0)
    if not rate:
        pytest.skip("limits.requestsPerSecond is 0: rate limiting is off")
    if burst > 3000:
        pytest.skip(f"limits.requestBurst {burst} is too large to exceed quickly")
    n = int(burst * 1.3) + 20

    async def body(h: Harness) -> None:
        c = await h.open()
        t0 = time.monotonic()
        futs = [await h.send_request(c, "ping") for _ in range(n)]
        await h.settle()
        elapsed = time.monotonic() - t0
        answers = [f.result() for f in futs]
        limited = [a for a in answers if code(a) == CODE["RATE_LIMITED"]]
        assert limited, f"{n} requests in {elapsed:.2f}s and none was rate limited (burst {burst}, rate {rate}/s)"
        assert n - len(limited) <= burst + rate * elapsed + 2
        wait_ms = max(a["error"]["data"]["retryAfterMs"] for a in limited)
        await h.sleep(wait_ms / 1000 + 0.05)
        assert code(await h.request(c, "ping")) is None

    run_scenario(target, "rate_limit", body)


# ---------------------------------------------------------------------- IDEM-1
@req("IDEM-1")
def test_idempotency_keys_return_the_first_result_without_a_second_effect(sim: Target) -> None:
    """sendUserMessage and provideToolResult repeated with the same idempotencyKey:
    the first result again, no second turn or result; other params: IDEMPOTENCY_CONFLICT."""

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c, tools=[{"type": "function", "function": {"name": "t"}}])
        send = {"sessionId": sid, "content": "/sim tool t {\"k\": 1}\nkeyed message", "idempotencyKey": "msg-1"}
        r1 = await h.request(c, "sendUserMessage", send)
        await h.settle()
        s = h.observer.sessions[sid]
        notes = s.notes
        r2 = await h.request(c, "sendUserMessage", send)
        await h.settle()
        assert r2["result"] == r1["result"] and s.notes == notes, "a repeated sendUserMessage had an effect"
        assert code(await h.request(c, "sendUserMessage", {**send, "content": "other"})) == CODE["IDEMPOTENCY_CONFLICT"]
        (call,) = h.observer.pending_tool_calls(sid)
        give = {"sessionId": sid, "toolCallId": call, "result": {"ok": True}, "idempotencyKey": "res-1"}
        a1 = await h.request(c, "provideToolResult", give)
        await h.settle()
        notes = s.notes
        a2 = await h.request(c, "provideToolResult", give)
        await h.settle()
        assert a2["result"] == a1["result"] and s.notes == notes, "a repeated provideToolResult had an effect"
        assert code(await h.request(c, "provideToolResult", {**give, "result": "different"})) == CODE["IDEMPOTENCY_CONFLICT"]
        assert s.status == "idle"

    run_scenario(sim, "idempotency", body)


# ---------------------------------------------------------------------- REPLAY
@req("REPLAY-3", "ISO-2")
def test_attach_with_a_wrong_token_changes_nothing(target: Target) -> None:
    """attachSession with a wrong token or an unknown session: SESSION_NOT_FOUND; the
    session stays with its connection."""

    async def body(h: Harness) -> None:
        c0, c1 = await h.open(), await h.open()
        sid = await h.start_session(c0)
        await h.settle()
        token = h.observer.sessions[sid].token
        bad = await h.request(c1, "attachSession", {"sessionId": sid, "resumeToken": "x" * 43, "afterSeq": 0})
        assert code(bad) == CODE["SESSION_NOT_FOUND"]
        unknown = await h.request(c1, "attachSession", {"sessionId": "s_not_a_session", "resumeToken": token, "afterSeq": 0})
        assert code(unknown) == CODE["SESSION_NOT_FOUND"]
        assert code(await h.request(c1, "pauseSession", {"sessionId": sid})) == CODE["SESSION_NOT_FOUND"]
        assert code(await h.request(c0, "pauseSession", {"sessionId": sid})) is None
        assert code(await h.request(c0, "resumeSession", {"sessionId": sid})) is None
        await h.settle()

    run_scenario(target, "attach_wrong_token", body)


@req("REPLAY-1", "ISO-1", "LIFE-1")
@pytest.mark.parametrize("phase", ["streaming", "awaiting_tool_results", "paused"])
@pytest.mark.parametrize("how", ["takeover", "reconnect"])
def test_attach_replays_in_order_then_continues_live(sim: Target, how: str, phase: str) -> None:
    """attachSession from another connection -- taking over a live connection, or
    after the first one dropped -- replays every notification after afterSeq, in
    order and identical to the original, then the session goes on there; the message
    text equals an uninterrupted run, and the old connection gets nothing more."""
    size = int(sim.limits.get("replayLogSize") or 0)
    if size < 40:
        pytest.skip(f"limits.replayLogSize {size} is too small to replay a turn")
    if how == "reconnect" and not 0.1 <= grace_s(sim) <= 30:
        pytest.skip(f"limits.resumeGraceMs {sim.limits.get('resumeGraceMs')}: no time to reconnect")
    chunks = min(120, size - 30)

    async def body(h: Harness) -> None:
        c0 = await h.open()
        sid = await h.start_session(c0, tools=[{"type": "function", "function": {"name": "t"}}])
        s = h.observer.sessions[sid]
        if phase == "awaiting_tool_results":
            await h.send_message(c0, sid, '/sim tool t {"q": "x"}\nplease call it')
            await h.settle()
        else:
            await h.send_request(c0, "sendUserMessage", {"sessionId": sid, "content": f"/sim chunks {chunks}\n" + long_text(chunks * 3)})
            if phase == "paused":
                await h.send_request(c0, "pauseSession", {"sessionId": sid})
                await h.settle()
        after = max(0, h.observer.conns[c0].stream_seq[sid] - 3)
        if how == "reconnect":
            await h.close(c0, abrupt=True)
        c1 = await h.open()
        r = await h.request(c1, "attachSession", {"sessionId": sid, "resumeToken": s.token, "afterSeq": after})
        assert code(r) is None, r
        assert r["result"]["replayed"] == r["result"]["lastSeq"] - after
        await h.settle()
        if phase == "paused":
            assert code(await h.request(c1, "resumeSession", {"sessionId": sid})) is None
            await h.settle()
        if phase == "awaiting_tool_results":
            (call,) = h.observer.pending_tool_calls(sid)
            assert code(await h.request(c1, "provideToolResult", {"sessionId": sid, "toolCallId": call, "result": "done"})) is None
            await h.settle()
        assert s.conn == c1 and s.status == "idle" and s.turn is None
        last = s.messages[list(s.messages)[-1]]
        assert last.final is not None and last.final["finishReason"] == "stop"
        if how == "takeover":
            assert code(await h.request(c0, "pauseSession", {"sessionId": sid})) == CODE["SESSION_NOT_FOUND"]
        assert code(await h.send_message(c1, sid, "still mine")) is None
        await h.settle()

    run_scenario(sim, f"attach_{how}_{phase}", body)


@req("REPLAY-2")
def test_attach_older_than_the_replay_log_gets_window_expired(sim: Target) -> None:
    """afterSeq older than the replay log: REPLAY_WINDOW_EXPIRED with oldestSeq and a
    snapshot; attaching again from oldestSeq - 1 works and replays the rest."""
    size = int(sim.limits.get("replayLogSize") or 0)
    if not size or size > 5000 or size + 50 > int(sim.limits.get("maxMessageChars") or 0):
        pytest.skip(f"limits.replayLogSize {size}: too many notifications to overflow the log")

    async def body(h: Harness) -> None:
        c0 = await h.open()
        sid = await h.start_session(c0)
        n = size + 20
        await h.send_message(c0, sid, f"/sim chunks {n}\n" + long_text(n * 2))
        await h.settle()
        s = h.observer.sessions[sid]
        assert s.seq > size + 1
        c1 = await h.open()
        r = await h.request(c1, "attachSession", {"sessionId": sid, "resumeToken": s.token, "afterSeq": 0})
        assert code(r) == CODE["REPLAY_WINDOW_EXPIRED"], r
        data = r["error"]["data"]
        assert data["snapshot"]["lastSeq"] == s.seq and data["snapshot"]["sessionId"] == sid
        assert data["oldestSeq"] == s.seq - size + 1
        ok = await h.request(c1, "attachSession", {"sessionId": sid, "resumeToken": s.token, "afterSeq": data["oldestSeq"] - 1})
        assert code(ok) is None and ok["result"]["replayed"] == size
        await h.settle()
        assert s.conn == c1

    run_scenario(sim, "attach_window_expired", body)


@req("REPLAY-4", "LIFE-1")
def test_detached_session_is_released_when_the_grace_period_ends(target: Target) -> None:
    """A dropped connection's sessions wait resumeGraceMs for attachSession (counted
    as detached), then are stopped and released; attaching later gets SESSION_NOT_FOUND."""
    grace = grace_s(target)
    if grace == 0:
        pytest.skip("limits.resumeGraceMs is 0: sessions are released at once (LIFE-1 tests that)")
    if grace > 10:
        pytest.skip(f"limits.resumeGraceMs {grace * 1000:.0f} is too long to wait for")

    async def body(h: Harness) -> None:
        c0 = await h.open()
        sids = [await h.start_session(c0) for _ in range(2)]
        await h.settle()
        tokens = [h.observer.sessions[s].token for s in sids]
        await h.close(c0, abrupt=True)
        await h.check_health()
        await h.sleep(grace + 0.6)
        await h.check_health()
        c1 = await h.open()
        for sid, token in zip(sids, tokens):
            r = await h.request(c1, "attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": 0})
            assert code(r) == CODE["SESSION_NOT_FOUND"]

    run_scenario(target, "grace_expires", body)


# ---------------------------------------------------------------------- BP-1
def _slow_target(sim: Target, extra_server: Any) -> Target:
    if sim.started_here:
        # A long grace period: the client needs time to drain what was in flight.
        return extra_server("slow-reader", {"session": {"resume_grace_s": 15}})
    return sim


async def _stall(h: Harness, conn: str, max_bytes: int, until_detached: bool) -> int:
    """Keep ``conn`` unread until the server detaches its sessions (or its queue stops
    growing); returns the largest queuedBytes /healthz reported meanwhile."""
    peak, last_change, last = 0, time.monotonic(), -1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = await h.health()
        queued = health.get("queuedBytes", 0)
        peak = max(peak, queued)
        if until_detached and (health.get("detached") or health.get("sessions", 0) == 0):
            break
        if queued != last:
            last, last_change = queued, time.monotonic()
        elif not until_detached and queued and time.monotonic() - last_change > 0.5:
            break
        await asyncio.sleep(0.05)
    return peak


@req("BP-1", "SEQ-1", "ORD-4")
def test_slow_reader_gets_merged_chunks_and_the_server_queue_stays_bounded(sim: Target, extra_server: Any) -> None:
    """A client that stops reading mid-stream: past outboundHighWater the server merges
    text chunks of the message (fewer chunks, same text, seq gap-free, final and idle
    not dropped) and its queue for the connection stays under outboundMaxBytes."""
    t = _slow_target(sim, extra_server)
    max_bytes = int(t.limits.get("outboundMaxBytes") or 0)
    per_msg = int(t.limits.get("maxMessageChars") or 0) - 100
    if per_msg < 20_000:
        pytest.skip(f"maxMessageChars {per_msg + 100} is too small to outgrow the socket buffers")
    n = min(per_msg // 2, 24_000)

    async def body(h: Harness) -> None:
        c = await h.open(slow=True)
        sid = await h.start_session(c)
        await h.settle()
        h.pause_reading(c)
        text = long_text(per_msg)
        await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": f"/sim chunks {n}\n{text}"})
        peak = await _stall(h, c, max_bytes, until_detached=False)
        h.resume_reading(c)
        await h.settle(timeout=60)
        s = h.observer.sessions[sid]
        (m,) = s.messages.values()
        assert m.final is not None and m.final["finishReason"] == "stop" and s.status == "idle"
        assert "".join(m.chunks) == f"You said: {text}"
        assert len(m.chunks) < n, f"{len(m.chunks)} chunks of {n}: nothing was merged"
        assert max_bytes == 0 or peak <= max_bytes, f"the server queued {peak} bytes (outboundMaxBytes {max_bytes})"

    run_scenario(t, "slow_reader_merge", body, timeout=120)


@req("BP-1", "REPLAY-1", "REPLAY-2", "LIFE-1")
def test_slow_reader_past_outbound_max_bytes_is_closed_1008_and_can_resume(sim: Target, extra_server: Any) -> None:
    """Past outboundMaxBytes the connection is closed with 1008 and its sessions are
    detached; attachSession from the last seq received (or, when the turn moved on
    past the replay log, from oldestSeq - 1 after REPLAY_WINDOW_EXPIRED) resumes them."""
    t = _slow_target(sim, extra_server)
    max_bytes = int(t.limits.get("outboundMaxBytes") or 0)
    per_msg = int(t.limits.get("maxMessageChars") or 0) - 100
    sessions = -(-int(max_bytes * 1.5) // max(per_msg, 1))
    if not max_bytes or sessions > min(8, int(t.limits.get("maxSessionsPerConnection") or 1)):
        pytest.skip(f"outboundMaxBytes {max_bytes} cannot be exceeded with maxMessageChars {per_msg + 100}")
    grace = grace_s(t)

    async def body(h: Harness) -> None:
        c = await h.open(slow=True)
        sids = [await h.start_session(c) for _ in range(sessions)]
        await h.settle()
        h.pause_reading(c)
        n = min(per_msg // 2, 20_000)
        for sid in sids:
            await h.send_request(c, "sendUserMessage", {"sessionId": sid, "content": f"/sim chunks {n}\n" + long_text(per_msg)})
        peak = await _stall(h, c, max_bytes, until_detached=True)
        h.resume_reading(c)
        await h.settle(timeout=60)
        assert h.observer.conns[c].close_code == 1008, f"closed with {h.observer.conns[c].close_code}"
        assert peak <= max_bytes + 64 * 1024, f"the server queued {peak} bytes (outboundMaxBytes {max_bytes})"
        if grace < 5:
            return
        c2 = await h.open()
        for sid in sids:
            s = h.observer.sessions[sid]
            params = {"sessionId": sid, "resumeToken": s.token, "afterSeq": h.observer.conns[c].stream_seq[sid]}
            r = await h.request(c2, "attachSession", params)
            if code(r) == CODE["REPLAY_WINDOW_EXPIRED"]:
                r = await h.request(c2, "attachSession", {**params, "afterSeq": r["error"]["data"]["oldestSeq"] - 1})
            assert code(r) is None, r
            await h.send_request(c2, "cancelTurn", {"sessionId": sid})  # no need to stream 20000 more chunks
        await h.settle(timeout=60)
        for sid in sids:
            s = h.observer.sessions[sid]
            assert s.conn == c2 and s.status == "idle", (sid, s.status)
            assert code(await h.send_message(c2, sid, "back again")) is None
        await h.settle()

    run_scenario(t, "slow_reader_1008", body, timeout=120)

"""/metrics in Prometheus format; the values move as sessions are driven."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import WsClient


async def _scrape(srv) -> dict[tuple[str, tuple], float]:
    async with httpx.AsyncClient() as c:
        r = await c.get(srv.http_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _v(m, name, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_sessions(server):
    before = await _scrape(server)
    assert _v(before, "ailoop_connections") == 0 and _v(before, "ailoop_turns_started_total") == 0
    async with WsClient.connect(server.ws_url) as c:
        sid = await c.start_session(tools=[{"type": "function", "function": {"name": "t"}}])
        mid = await _scrape(server)
        assert _v(mid, "ailoop_connections") == 1 and _v(mid, "ailoop_sessions", state="started") == 1
        await c.run_turn(sid, "hello")
        await c.run_turn(sid, "/sim tool t {}", tool_results=lambda call: "ok")
        await c.run_turn(sid, "/sim error rate_limit")
        paused = await c.start_session()
        await c.call("pauseSession", {"sessionId": paused})
        m = await _scrape(server)
        assert _v(m, "ailoop_sessions", state="idle") == 1 and _v(m, "ailoop_sessions", state="paused") == 1
        assert _v(m, "ailoop_turns_started_total") == 3
        assert _v(m, "ailoop_turns_total", reason="stop") == 2 and _v(m, "ailoop_turns_total", reason="error") == 1
        assert _v(m, "ailoop_first_chunk_seconds_count") == 2  # the failed turn had no output
        assert _v(m, "ailoop_turn_duration_seconds_count") == 3
        assert _v(m, "ailoop_tool_result_wait_seconds_count") == 1
        assert _v(m, "ailoop_provider_errors_total", code="-32006", kind="rate_limit") == 1
        sent = len(c.notifications)
        assert _v(m, "ailoop_notifications_total") == sent
        await c.call("stopSession", {"sessionId": sid})
    await server.wait_idle()
    after = await _scrape(server)
    assert _v(after, "ailoop_connections") == 0
    assert _v(after, "ailoop_sessions_ended_total", reason="client_stop") == 1
    assert _v(after, "ailoop_sessions_ended_total", reason="disconnect") == 1
    assert _v(after, "ailoop_outbound_queue_frames") == 0

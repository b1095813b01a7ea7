"""`python -m server` as a real process: start-up line, SIGTERM/SIGINT shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest

from tests.support import WsClient, spawn_server

CONFIG = """
server: {host: 127.0.0.1, log_level: warning}
limits: {requests_per_s: 0}
simulator: {first_chunk_ms: 0, chunk_interval_ms: 50}
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_cleanly_telling_every_session(tmp_path, sig):
    with spawn_server(CONFIG, tmp_path) as (proc, url):
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(WsClient.connect(url)) for _ in range(10)]
            sessions = []
            for c in clients:  # 50 active streams on 10 connections
                for _ in range(5):
                    sid = await c.start_session()
                    await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 2000\nlong"})
                    sessions.append((c, sid))
            for c, sid in sessions:
                await c.wait_notification(lambda p, sid=sid: p["sessionId"] == sid and bool(p.get("chunk")))
            proc.send_signal(sig)
            for c, sid in sessions:
                ended = await c.wait_status(sid, "ended")
                assert ended["reason"] == "server_shutdown"
                finals = [p for p in c.session_notes(sid) if p.get("isFinal")]
                assert [p["finishReason"] for p in finals] == ["cancelled"]
            for c in clients:
                await c.wait_for(lambda c=c: c._reader.done())
                assert c.closed_code == 1001
        assert await asyncio.to_thread(proc.wait, 15) == 0


async def test_json_logs_carry_ids_and_never_secrets(tmp_path):
    """Structured logs: one JSON object per line, ids included, no contents or tokens."""
    import json as _json

    config = "server: {log_format: json, log_level: info}\nauth: {enabled: true}\n"
    with spawn_server(config, tmp_path, env={"AILOOP_AUTH_TOKENS": "sekrit-token"}) as (proc, url):
        async with WsClient.connect(url + "?token=sekrit-token") as c:  # the browser way: in the URL
            start = await c.call("startSession", {})
            await c.run_turn(start["sessionId"], "my private message")
            await c.call("stopSession", {"sessionId": start["sessionId"]})
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        err = proc.stderr.read()
    records = [_json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    started = next(r for r in records if r["msg"] == "session started")
    assert started["sessionId"] == start["sessionId"] and started["connectionId"].startswith("c_")
    assert any(r["msg"] == "connection opened" for r in records)
    for secret in ("sekrit-token", "my private message", start["resumeToken"]):
        assert secret not in err


async def test_refuses_non_loopback_without_auth(tmp_path):
    import subprocess
    import sys

    from tests.support import ROOT

    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {host: 0.0.0.0}\n")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "server", "--config", str(cfg)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "authentication off" in out.stderr

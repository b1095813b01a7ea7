"""`python -m server` as a real process: start-up line, SIGTERM/SIGINT shutdown."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.support import WsClient, spawn_server

CONFIG = """
server: {host: 127.0.0.1, log_level: warning}
simulator: {first_chunk_ms: 0, chunk_interval_ms: 5}
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_cleanly_telling_every_session(tmp_path, sig):
    with spawn_server(CONFIG, tmp_path) as (proc, url):
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        async with WsClient.connect(url) as a, WsClient.connect(url) as b:
            sessions = []
            for c in (a, b):
                for _ in range(2):
                    sid = await c.start_session()
                    await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 5000\nlong"})
                    sessions.append((c, sid))
            for c, sid in sessions:
                await c.wait_notification(lambda p, sid=sid: p["sessionId"] == sid and bool(p.get("chunk")))
            proc.send_signal(sig)
            for c, sid in sessions:
                ended = await c.wait_status(sid, "ended")
                assert ended["reason"] == "server_shutdown"
                finals = [p for p in c.session_notes(sid) if p.get("isFinal")]
                assert [p["finishReason"] for p in finals] == ["cancelled"]
            for c in (a, b):
                await c.wait_for(lambda c=c: c._reader.done())
                assert c.closed_code == 1001
        assert await asyncio.to_thread(proc.wait, 15) == 0

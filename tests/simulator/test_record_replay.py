"""Record a stream with its timing from a live server; replay it with the same timing,
in-process (as provider events) and over HTTP (byte for byte)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from server.loop.provider import Finish, ProviderError, TextDelta, ToolCall
from simulator import SimulatorProvider, VirtualClock
from simulator.http import SimulatedDrop, create_app
from simulator.record import Recording, record
from simulator.scenario import load_scenario_data
from simulator.script import Simulator
from tests.simulator.helpers import PY, ROOT, decode_sse, drive, timed, user


def replaying(path: Path) -> Simulator:
    return Simulator(load_scenario_data({"rules": [{"respond": {"replay": str(path)}}]}, base_dir=path.parent))


@pytest.fixture
async def recorded(server_a, tmp_path) -> tuple[Recording, Path]:
    body = {"stream": True, "messages": [user('look these up\n/sim tool a {"q": 1}\n/sim tool b {"q": 2}')]}
    rec = await record(server_a.url + "/api/v1/chat/completions", body, headers={"Authorization": "Bearer secret"})
    path = tmp_path / "tools.json"
    rec.save(path)
    return rec, path


async def test_recording_captures_events_and_timing(recorded):
    rec, path = recorded
    assert rec.status == 200 and rec.end == "done" and rec.is_sse
    assert rec.events[0].data == ": OPENROUTER PROCESSING"
    first_data = next(e for e in rec.events if e.data.startswith("data:"))
    assert first_data.at_ms >= 30  # the server's time to first chunk
    assert [e.at_ms for e in rec.events] == sorted(e.at_ms for e in rec.events)
    assert "secret" not in path.read_text()  # headers are never stored
    assert Recording.load(path) == rec


async def test_in_process_replay_has_the_recorded_timing(recorded):
    rec, path = recorded
    with VirtualClock() as clock:
        events = await timed(SimulatorProvider(simulator=replaying(path), clock=clock), clock, [user("anything")])
    decoded = decode_sse(b"".join(e.data.encode() + b"\n\n" for e in rec.events))
    assert "".join(e.text for _, e in events if isinstance(e, TextDelta)) == decoded.content
    assert [(c.id, c.name, c.raw_arguments) for _, c in events if isinstance(c, ToolCall)] == decoded.call_list()
    assert isinstance(events[-1][1], Finish) and events[-1][1].reason == "tool_calls"
    data_times = [e.at_ms / 1000 for e in rec.events if e.data.startswith("data: {") and '"content":""' not in e.data
                  and '"tool_calls"' not in e.data]
    text_times = [t for t, e in events if isinstance(e, TextDelta)]
    assert text_times == data_times  # exactly the recorded arrival times
    done_at = next(e.at_ms for e in rec.events if e.data == "data: [DONE]") / 1000
    assert events[-1][0] == done_at


async def test_http_replay_is_byte_identical_with_the_same_timing(recorded):
    rec, path = recorded
    with VirtualClock() as clock:
        cap = await drive(create_app(replaying(path), clock=clock), {"stream": True, "messages": [user("x")]}, clock)
    assert cap.status == 200 and cap.headers["content-type"] == rec.headers["content-type"]
    assert [p for _, p in cap.parts] == [e.data.encode() + b"\n\n" for e in rec.events]
    assert [t for t, _ in cap.parts] == pytest.approx([e.at_ms / 1000 for e in rec.events], abs=1e-9)


async def test_replay_cli_over_real_http(recorded):
    rec, path = recorded
    from tests.simulator.helpers import start_server

    srv = start_server("--replay", str(path))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(srv.url + "/api/v1/chat/completions", json={"stream": True, "messages": [user("?")]})
    finally:
        srv.stop()
    assert r.content == b"".join(e.data.encode() + b"\n\n" for e in rec.events)


async def test_dropped_and_error_streams_replay_as_such(server_a, tmp_path):
    url = server_a.url + "/api/v1/chat/completions"
    dropped = await record(url, {"stream": True, "messages": [user("a b c d\n/sim error drop")]})
    limited = await record(url, {"stream": True, "messages": [user("x\n/sim error rate_limit")]})
    assert dropped.end == "dropped" and limited.status == 429 and limited.headers["retry-after"] == "1"
    for rec, name in ((dropped, "dropped.json"), (limited, "limited.json")):
        rec.save(tmp_path / name)
    with VirtualClock() as clock:
        events = await timed(SimulatorProvider(simulator=replaying(tmp_path / "dropped.json"), clock=clock), clock, [user("?")])
        assert [type(e) for _, e in events] == [TextDelta] * 3  # truncated: no Finish
        cap = await drive(create_app(replaying(tmp_path / "dropped.json"), clock=clock), {"stream": True, "messages": [user("?")]}, clock)
        assert isinstance(cap.raised, SimulatedDrop)
        start = clock.now()
        (t, err), = await timed(SimulatorProvider(simulator=replaying(tmp_path / "limited.json"), clock=clock), clock, [user("?")])
    assert isinstance(err, ProviderError) and (err.kind, err.status, err.retry_after_s) == ("rate_limit", 429, 1.0)
    assert t - start == pytest.approx(limited.end_at_ms / 1000, abs=1e-12)


def test_record_cli(server_a, tmp_path):
    body = tmp_path / "body.json"
    body.write_text('{"stream": true, "messages": [{"role": "user", "content": "hi"}]}')
    out = tmp_path / "hi.json"
    proc = subprocess.run([PY, "-m", "simulator", "record", server_a.url + "/api/v1/chat/completions",
                           "--body", str(body), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    rec = Recording.load(out)
    assert rec.end == "done" and decode_sse("".join(e.data + "\n\n" for e in rec.events).encode()).content == "You said: hi"

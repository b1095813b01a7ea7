"""The terminal client (server/client.py): script mode and interactive mode against a real
server, exit codes, handshake options, and the commands shown in docs/client.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import serve as ws_serve

from server.client import ScriptError, parse_script
from tests.support import ROOT, TIMEOUT, make_settings, serve

EXAMPLES = ROOT / "scripts" / "examples"
DOC = ROOT / "docs" / "client.md"


async def run_client(*args: str, stdin: str | None = None, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """``python -m server.client ARGS``; returns (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.client", *args, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else b""), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def frames(stdout: str) -> list[tuple[str, Any]]:
    """Script-mode output: one ``> JSON`` or ``< JSON`` per line, nothing else."""
    out = []
    for line in stdout.splitlines():
        direction, _, text = line.partition(" ")
        assert direction in (">", "<"), f"not a frame line: {line!r}"
        out.append((direction, json.loads(text)))
    return out


def doc_block(name: str) -> str:
    """The fenced block after ``<!-- test: NAME -->`` in docs/client.md."""
    m = re.search(rf"<!-- test: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/client.md has no block marked 'test: {name}'"
    return m.group(1)


def doc_command(name: str, url: str) -> list[str]:
    """The documented ailoop-client command line, pointed at ``url``."""
    argv = shlex.split(doc_block(name).replace("\\\n", " "))
    assert argv[0] == "ailoop-client", argv
    return [url if a.startswith("ws://") else a for a in argv[1:]]


# --------------------------------------------------------------------------- script mode


async def test_script_mode_plays_the_documented_example():
    """docs/client.md's command plays scripts/examples/weather.script; every frame is printed."""
    async with serve(make_settings()) as srv:
        code, out, err = await run_client(*doc_command("script-command", srv.ws_url))
        assert code == 0, err
        await srv.wait_idle()
    fs = frames(out)
    sent = [m for d, m in fs if d == ">"]
    received = [m for d, m in fs if d == "<"]
    assert [m["method"] for m in sent] == [
        "initialize", "startSession",
        "sendUserMessage",                                          # Hello there
        "sendUserMessage", "provideToolResult",                     # Paris
        "sendUserMessage", "provideToolResult",                     # Atlantis (isError)
        "sendUserMessage", "provideToolResult", "provideToolResult",  # Oslo + Bergen, one step
        "stopSession",
    ]
    assert sent[1]["params"]["tools"] == json.loads((EXAMPLES / "weather-tools.json").read_text())
    results = [m["params"] for m in sent if m["method"] == "provideToolResult"]
    assert results[0]["result"] == {"tempC": 21, "sky": "clear"} and "isError" not in results[0]
    assert results[1] == {**results[1], "result": {"error": "city not found"}, "isError": True}
    assert results[2]["result"] == results[3]["result"] == {"tempC": 14}
    assert sent[7]["params"]["content"] == '/sim tool get_weather {"city": "Oslo"}\n/sim tool get_weather {"city": "Bergen"}'

    # Every request got its response; notifications are gap-free from seq 1.
    assert sorted(m["id"] for m in received if "id" in m) == sorted(m["id"] for m in sent)
    assert all("result" in m for m in received if "id" in m)
    notes = [m["params"] for m in received if "method" in m]
    assert [n["seq"] for n in notes] == list(range(1, len(notes) + 1))
    texts: dict[str, str] = {}
    for n in notes:
        if "isFinal" in n:
            texts[n["messageId"]] = texts.get(n["messageId"], "") + n["chunk"]
    replies = [t for t in texts.values() if t]
    assert replies == [
        "You said: Hello there",
        'Tool get_weather returned: {"tempC":21,"sky":"clear"}',
        'Tool get_weather returned: Error: {"error":"city not found"}',
        'Tool get_weather returned: {"tempC":14}\nTool get_weather returned: {"tempC":14}',
    ]
    assert notes[-1]["status"] == "ended" and notes[-1]["reason"] == "client_stop"
    assert sent[-1]["id"] == received[-1]["id"]  # ended before the stopSession response (ORD-6)


async def test_script_mode_expected_error_pause_resume_and_auto_stop(tmp_path: Path):
    script = tmp_path / "pause.script"
    script.write_text(
        "/start {\"systemPrompt\": \"Be brief.\"}\n"
        "/pause\n"
        "/expect-error -32002\n"
        "sent while paused\n"
        "/resume\n"
        "\\/not a command\n"
        "/send /sim chunks 3\n"
        "/wait idle\n"
    )
    async with serve(make_settings()) as srv:
        code, out, err = await run_client(srv.ws_url, "--script", str(script))
        await srv.wait_idle()
    assert code == 0, err
    fs = frames(out)
    sent = [m for d, m in fs if d == ">"]
    assert [m["method"] for m in sent] == ["initialize", "startSession", "pauseSession", "sendUserMessage",
                                          "resumeSession", "sendUserMessage", "sendUserMessage", "stopSession"]
    assert sent[1]["params"] == {"systemPrompt": "Be brief."}
    assert sent[5]["params"]["content"] == "/not a command"
    refused = next(m for d, m in fs if d == "<" and m.get("id") == sent[3]["id"])
    assert refused["error"]["code"] == -32002
    assert "failed as expected" in err


async def test_script_mode_exits_1_on_an_unexpected_error_response(tmp_path: Path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "bad name!"}}]))
    script = tmp_path / "s.script"
    script.write_text("hello\nnever sent\n")
    async with serve(make_settings()) as srv:
        code, out, err = await run_client(srv.ws_url, "--tools", str(tools), "--script", str(script))
        await srv.wait_idle()
    assert code == 1
    assert "startSession failed: -32602 INVALID_PARAMS" in err
    assert [m["method"] for d, m in frames(out) if d == ">"] == ["initialize", "startSession"]


async def test_script_mode_exits_1_when_a_wait_times_out(tmp_path: Path):
    script = tmp_path / "s.script"
    script.write_text("/start\n/wait paused\n")
    async with serve(make_settings()) as srv:
        code, _, err = await run_client(srv.ws_url, "--timeout", "0.3", "--script", str(script))
        await srv.wait_idle()
    assert code == 1 and "timed out after 0.3 s waiting for status paused" in err


async def test_script_mode_exits_2_for_a_tool_call_without_result(tmp_path: Path):
    script = tmp_path / "s.script"
    script.write_text('/sim tool get_weather {"city": "Paris"}\n')
    async with serve(make_settings()) as srv:
        code, _, err = await run_client(srv.ws_url, "--tools", str(EXAMPLES / "weather-tools.json"), "--script", str(script))
        await srv.wait_idle()  # the client closed; the server released the session
    assert code == 2 and "has no result" in err


async def test_exit_3_when_nothing_listens():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await run_client(f"ws://127.0.0.1:{port}/ws", "--script", str(EXAMPLES / "weather.script"))
    assert code == 3 and "cannot connect" in err


async def test_exit_2_for_bad_files(tmp_path: Path):
    bad = tmp_path / "bad.script"
    bad.write_text("/frobnicate\n")
    code, _, err = await run_client("ws://127.0.0.1:9/ws", "--script", str(bad))
    assert code == 2 and "script line 1: unknown command /frobnicate" in err
    code, _, err = await run_client("ws://127.0.0.1:9/ws", "--tool-results", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read tool results file" in err


# --------------------------------------------------------------------------- handshake and fake servers


@contextlib.asynccontextmanager
async def fake_server(replies: list[str] | None = None, status: int | None = None) -> AsyncIterator[dict[str, Any]]:
    """A WebSocket server that records the handshake headers and answers initialize with
    ``replies`` (raw frames) or a valid result; ``status`` refuses the handshake."""
    seen: dict[str, Any] = {}

    def process_request(connection: Any, request: Any) -> Any:
        seen["headers"] = dict(request.headers.raw_items())
        if status is not None:
            return connection.respond(status, "refused\n")
        return None

    async def handler(ws: Any) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if replies is not None:
                for r in replies:
                    await ws.send(r.replace("$ID", json.dumps(msg["id"])))
            else:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": 1, "serverInfo": {"name": "fake", "version": "0"},
                    "capabilities": {"backends": ["fake"]}, "limits": {}}}))

    async with ws_serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]
        seen["url"] = f"ws://127.0.0.1:{port}/ws"
        yield seen


async def test_token_and_origin_are_sent_in_the_handshake(tmp_path: Path):
    script = tmp_path / "empty.script"
    script.write_text("# nothing but initialize\n")
    async with fake_server() as seen:
        code, out, err = await run_client(seen["url"], "--token", "tok-123", "--origin", "https://app.example",
                                          "--script", str(script))
    assert code == 0, err
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["authorization"] == "Bearer tok-123"
    assert headers["origin"] == "https://app.example"
    assert headers["user-agent"].startswith("ailoop-client/")
    assert [m["method"] for d, m in frames(out) if d == ">"] == ["initialize"]


async def test_exit_3_when_the_handshake_is_refused(tmp_path: Path):
    async with fake_server(status=401) as seen:
        code, _, err = await run_client(seen["url"], "--script", str(EXAMPLES / "weather.script"))
    assert code == 3 and "HTTP 401" in err and "--token" in err


@pytest.mark.parametrize("reply, problem", [
    ("not json at all", "frame is not JSON"),
    ('{"jsonrpc":"2.0","method":"SessionStatusNotification","params":{"sessionId":"s_x","status":"idle","seq":5}}',
     "notification of unknown session"),
    ('{"jsonrpc":"1.0","id":$ID,"result":{}}', 'jsonrpc is not "2.0"'),
])
async def test_exit_1_on_a_malformed_frame(tmp_path: Path, reply: str, problem: str):
    script = tmp_path / "empty.script"
    script.write_text("")
    ok = '{"jsonrpc":"2.0","id":$ID,"result":{"protocolVersion":1}}'
    replies = [reply] if "$ID" in reply else [reply, ok]
    async with fake_server(replies=replies) as seen:
        code, out, err = await run_client(seen["url"], "--script", str(script))
    assert code == 1, (out, err)
    assert f"protocol violation: {problem}" in err
    assert out.splitlines()[1].startswith("< ")  # the bad frame is printed too (bug reports)


# --------------------------------------------------------------------------- interactive mode


def _mask(text: str) -> str:
    return re.sub(r"\b(s|call)_[A-Za-z0-9_-]+", r"\1_…", text)


async def test_interactive_mode_matches_the_documented_transcript():
    """The transcript in docs/client.md, replayed: messages and a tool result typed on stdin."""
    transcript = doc_block("interactive-transcript")
    typed, expected = [], []
    for line in transcript.splitlines():
        if line.startswith("you> "):
            typed.append(line[5:])
        elif line.startswith("tool> "):
            typed.append(line[6:])
            continue
        if line.startswith(("you> ", "ai> ", "[tool call", "[session ended")):
            expected.append(_mask(line))
    async with serve(make_settings()) as srv:
        code, out, err = await run_client(srv.ws_url, "--tools", str(EXAMPLES / "weather-tools.json"),
                                          stdin="\n".join(typed) + "\n")
        await srv.wait_idle()
    assert code == 0, err
    got = [_mask(line) for line in out.splitlines() if line.startswith(("you> ", "ai> ", "[tool call", "[session ended"))]
    assert got == expected


async def test_interactive_mode_with_canned_results_and_commands():
    stdin = "hello\n/sim tool get_weather {\"city\": \"Paris\"}\n/sim chunks 2\n/stop\n"
    async with serve(make_settings()) as srv:
        code, out, err = await run_client(
            srv.ws_url, "--tools", str(EXAMPLES / "weather-tools.json"),
            "--tool-results", str(EXAMPLES / "weather-results.json"), "--frames", stdin=stdin)
        await srv.wait_idle()
    assert code == 0, err
    assert "ai> You said: hello" in out
    assert '[tool call get_weather {"city":"Paris"} → {"tempC":21,"sky":"clear"}]' in out
    assert 'ai> Tool get_weather returned: {"tempC":21,"sky":"clear"}' in out
    assert "[session ended: client_stop]" in out
    # --frames: every frame on stderr, as in script mode.
    frame_lines = [line for line in err.splitlines() if line.startswith(("> ", "< "))]
    assert any('"method":"provideToolResult"' in line for line in frame_lines)


async def test_interactive_mode_exits_1_if_input_ends_with_a_tool_call_unanswered():
    async with serve(make_settings()) as srv:
        code, out, _ = await run_client(srv.ws_url, "--tools", str(EXAMPLES / "weather-tools.json"),
                                        stdin='/sim tool get_weather {"city": "Paris"}\n')
        await srv.wait_idle()
    assert code == 1 and "tool call unanswered" in out


# --------------------------------------------------------------------------- parsing


def test_parse_script():
    steps = parse_script(
        "# comment\n\nhello\n/sim tool a {} \\\n/sim tool b {}\n\\/pause\n/pause\n/tool-error x {\"e\": 1}\n"
        "/expect-error -32002\n/sleep 0.5\n/start\n/start {\"model\": \"m\"}\n/wait idle\n/send hi\n/quit\n")
    assert [(s.kind, s.text) for s in steps] == [
        ("message", "hello"), ("message", "/sim tool a {}\n/sim tool b {}"), ("message", "/pause"),
        ("pause", ""), ("tool-error", "x"), ("expect-error", ""), ("sleep", ""), ("start", ""),
        ("start", ""), ("wait", "idle"), ("send", "hi"), ("quit", "")]
    assert steps[4].value.result == {"e": 1} and steps[4].value.is_error
    assert steps[5].value == -32002 and steps[6].value == 0.5
    assert steps[7].value is None and steps[8].value == {"model": "m"}
    assert steps[1].lineno == 4


@pytest.mark.parametrize("text, message", [
    ("/wait soon", "line 1: /wait needs a status"),
    ("/tool x", "line 1: /tool needs a tool name and a JSON result"),
    ("ok\n/tool x {bad", "line 2: tool result is not valid JSON"),
    ("/pause now", "/pause takes no argument"),
    ("/start [1]", "params must be a JSON object"),
    ("a \\", "backslash continuation at the end of the file"),
])
def test_parse_script_errors(text: str, message: str):
    with pytest.raises(ScriptError, match=re.escape(message)):
        parse_script(text)


def test_documented_example_files_are_the_played_ones():
    """docs/client.md shows scripts/examples/weather.script verbatim."""
    assert doc_block("weather.script") == (EXAMPLES / "weather.script").read_text()
    assert json.loads(doc_block("weather-results.json")) == json.loads((EXAMPLES / "weather-results.json").read_text())


def test_console_script_is_declared():
    assert 'ailoop-client = "server.client:main"' in (ROOT / "pyproject.toml").read_text()


def test_client_imports_nothing_of_the_server():
    import ast

    tree = ast.parse((ROOT / "server" / "client.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [n for n in names if n.split(".")[0] in ("server", "simulator", "fastapi", "starlette", "uvicorn")], names
    assert websockets.__version__

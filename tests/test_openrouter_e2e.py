"""End to end: the server on `ai.backend: openrouter`, its base URL pointing at the
simulator's OpenAI-compatible HTTP face on loopback, driven over WebSocket (issue 4)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT, WsClient, free_port, spawn_server


@pytest.fixture
def simulator_http():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(port), "--seed", "3",
                             "--api-key", "test-key-123"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://" in line, proc.stderr.read()
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        proc.kill()
        proc.wait()


async def test_tool_call_session_over_openrouter_backend(simulator_http, tmp_path):
    config = f"""
ai: {{backend: openrouter, first_chunk_timeout_s: 10}}
openrouter: {{base_url: "{simulator_http}", model: "sim/model", max_retries: 0}}
limits: {{requests_per_s: 0}}
"""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    with spawn_server(config, tmp_path, env={"OPENROUTER_API_KEY": "test-key-123"}) as (proc, url):
        async with WsClient.connect(url) as c:
            init = await c.call("initialize")
            assert init["capabilities"]["backends"] == ["openrouter"]
            sid = await c.start_session(tools=tools, systemPrompt="Be brief.")
            notes = await c.run_turn(sid, "hello over http")
            assert "".join(p["chunk"] for p in notes if "chunk" in p) == "You said: hello over http"
            content = '/sim tool get_weather {"city": "Paris"}\n/sim tool get_time {}'
            notes = await c.run_turn(sid, content, tool_results=lambda call: {"for": call["name"]})
            calls = [p for p in notes if "toolCallId" in p]
            assert [(p["name"], p["arguments"]) for p in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
            finals = [p["finishReason"] for p in notes if p.get("isFinal")]
            assert finals == ["tool_calls", "stop"]
            text = "".join(p["chunk"] for p in notes if "chunk" in p)
            assert text == 'Tool get_weather returned: {"for":"get_weather"}\nTool get_time returned: {"for":"get_time"}'
            notes = await c.run_turn(sid, "/sim error rate_limit")
            err = next(p for p in notes if "code" in p)
            assert err["code"] == -32006 and err["data"]["retryable"] is True
        proc.terminate()
        assert proc.wait(15) == 0
        assert "test-key-123" not in proc.stderr.read()


async def test_openrouter_backend_without_key_refuses_to_start(tmp_path):
    import os

    cfg = tmp_path / "c.yaml"
    cfg.write_text("ai: {backend: openrouter}\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    out = subprocess.run([sys.executable, "-m", "server", "--config", str(cfg)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "OPENROUTER_API_KEY" in out.stderr

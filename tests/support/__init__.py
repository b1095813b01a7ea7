"""Test support: a real uvicorn server on loopback and a validating WebSocket client.

Every frame a :class:`WsClient` receives is validated against spec/ with
``jsonschema`` (independently of the generated models); responses are also checked
against the result schema of the method they answer. Any violation is recorded in
``client.violations`` and fails the test at the latest when the client closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets
from jsonschema import Draft202012Validator

from server.__main__ import uvicorn_config
from server.app import create_app
from server.config import Settings, load_settings
from server.loop.provider import ModelProvider

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "spec" / "protocol.schema.json").read_text())
TIMEOUT = float(os.environ.get("AILOOP_TEST_TIMEOUT", "10"))

__all__ = ["ROOT", "SCHEMA", "RunningServer", "WsClient", "make_settings", "serve", "serve_app", "spawn_server",
           "validator"]


@cache
def validator(def_name: str) -> Draft202012Validator:
    return Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{def_name}"})


def schema_errors(def_name: str, instance: Any) -> list[str]:
    return [f"{def_name}: {e.message} at {list(e.absolute_path)}" for e in validator(def_name).iter_errors(instance)]


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Settings for tests: zero-latency simulator, short timeouts, plus overrides."""
    base: dict[str, dict[str, Any]] = {
        "simulator": {"first_chunk_ms": 0, "chunk_interval_ms": 0, "seed": 7},
        "ai": {"first_chunk_timeout_s": 5, "idle_timeout_s": 5, "turn_timeout_s": 30},
        # The production path (frames built without the debug validator); the client
        # validates every frame against the spec with jsonschema anyway.
        "server": {"validate_outgoing": False},
        "limits": {"requests_per_s": 0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(None, **base)


@dataclass
class RunningServer:
    host: str
    port: int
    app: Any

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as c:
            r = await c.get(self.http_url + "/healthz")
            r.raise_for_status()
            return r.json()

    async def wait_idle(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until no session, connection or turn task is left; return /healthz."""
        async with asyncio.timeout(timeout):
            while True:
                h = await self.health()
                if h["sessions"] == 0 and h["connections"] == 0 and h["runningTurns"] == 0:
                    return h
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve(settings: Settings | None = None, provider: ModelProvider | None = None) -> AsyncIterator[RunningServer]:
    """Run the real app under uvicorn in this event loop on 127.0.0.1, a free port."""
    settings = settings or make_settings()
    async with serve_app(create_app(settings, provider), settings) as srv:
        yield srv


@contextlib.asynccontextmanager
async def serve_app(app: Any, settings: Settings | None = None) -> AsyncIterator[RunningServer]:
    """Run an already built ``app`` under uvicorn in this event loop on 127.0.0.1."""
    config = uvicorn_config(app, settings or make_settings(), "127.0.0.1", 0)
    config.log_level = "warning"
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(TIMEOUT):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer("127.0.0.1", port, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def spawn_server(config_text: str, tmp_path: Path, env: dict[str, str] | None = None):
    """Start ``python -m server`` as a child process; yield (process, ws_url)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(cfg), "--port", str(free_port())],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if "ws://" not in line:
            proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
        yield proc, line.strip().rsplit(" ", 1)[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class WsClient:
    """A JSON-RPC client over a real WebSocket that records and validates every frame."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        """Every frame received, parsed, in order."""
        self.notifications: list[dict[str, Any]] = []
        self.responses: dict[Any, Any] = {}
        self.violations: list[str] = []
        self._pending: dict[Any, str] = {}
        self._next_id = 1000  # raw frames in tests use small ids
        self._reader = asyncio.create_task(self._read())
        self._changed = asyncio.Event()
        self.closed_code: int | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, **kw: Any) -> AsyncIterator[WsClient]:
        async with websockets.connect(url, max_size=None, **kw) as ws:
            client = cls(ws)
            try:
                yield client
            finally:
                client._reader.cancel()
                with contextlib.suppress(BaseException):
                    await client._reader
        from tests.support.invariants import check_frames

        client.violations += check_frames(client.frames)
        assert not client.violations, client.violations

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.frames.append(msg)
                self._check(msg)
                self._changed.set()
        except websockets.ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd else None
        finally:
            if self.ws.close_code is not None:
                self.closed_code = self.ws.close_code
            self._changed.set()

    def _check(self, msg: Any) -> None:
        if isinstance(msg, list):
            self.violations += schema_errors("JsonRpcBatchResponse", msg)
            for item in msg:
                self._record_response(item)
            return
        if "method" in msg:
            method = msg.get("method")
            name = method if method in SCHEMA["x-methods"] and SCHEMA["x-methods"][method]["kind"] == "notification" else None
            if name is None:
                self.violations.append(f"unknown notification {method!r}")
            else:
                self.violations += schema_errors(name, msg)
            self.notifications.append(msg)
            return
        self.violations += schema_errors("JsonRpcResponse", msg)
        self._record_response(msg)

    def _record_response(self, msg: dict[str, Any]) -> None:
        key = json.dumps(msg.get("id"))
        if key in self.responses and key != "null":  # id null: errors for unreadable ids
            self.violations.append(f"second response for id {key}")
        self.responses[key] = msg
        method = self._pending.pop(key, None)
        if method and "result" in msg and method in SCHEMA["x-methods"]:
            self.violations += schema_errors(SCHEMA["x-methods"][method]["result"], msg["result"])

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_json(self, obj: Any) -> None:
        await self.ws.send(json.dumps(obj))

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(self, method: str, params: Any = None, *, id: Any = "auto", expect_error: bool | None = False) -> dict[str, Any]:
        """Send a request and wait for its response (the whole response object).

        ``expect_error``: False asserts success, True asserts an error, None accepts both.
        """
        rid = self.new_id() if id == "auto" else id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self._pending[json.dumps(rid)] = method
        await self.send_json(msg)
        resp = await self.response(rid)
        if expect_error is False:
            assert "result" in resp, resp
        elif expect_error is True:
            assert "error" in resp, resp
        return resp

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Request and return the result (asserting success)."""
        return (await self.request(method, params))["result"]

    async def response(self, rid: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        key = json.dumps(rid)
        await self.wait_for(lambda: key in self.responses, timeout)
        return self.responses[key]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self._reader.done():
                    if predicate():
                        return
                    raise ConnectionError(f"connection closed ({self.closed_code}) while waiting")
                self._changed.clear()
                await self._changed.wait()

    async def next_frame(self, timeout: float = TIMEOUT) -> Any:
        n = len(self.frames)
        await self.wait_for(lambda: len(self.frames) > n, timeout)
        return self.frames[n]

    def session_notes(self, session_id: str) -> list[dict[str, Any]]:
        return [n["params"] for n in self.notifications if n["params"]["sessionId"] == session_id]

    async def wait_notification(self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for a notification whose params satisfy ``pred``; return its params."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            for n in self.notifications:
                if pred(n["params"]):
                    found.append(n["params"])
                    return True
            return False

        await self.wait_for(check, timeout)
        return found[0]

    async def wait_status(self, session_id: str, status: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.wait_notification(
            lambda p: p["sessionId"] == session_id and p.get("status") == status and "isFinal" not in p, timeout)

    async def start_session(self, **params: Any) -> str:
        result = await self.call("startSession", params)
        sid = result["sessionId"]
        await self.wait_status(sid, "started")
        return sid

    async def run_turn(self, session_id: str, content: str, *, tool_results: Callable[[dict[str, Any]], Any] | None = None) -> list[dict[str, Any]]:
        """Send a message, answer tool calls with ``tool_results``, wait for the turn's end
        (status idle); return the turn's notification params."""
        result = await self.call("sendUserMessage", {"sessionId": session_id, "content": content})
        turn_id = result["turnId"]
        answered: set[str] = set()

        def turn_slice() -> tuple[int | None, list[dict[str, Any]]]:
            notes = self.session_notes(session_id)
            start = next((i for i, p in enumerate(notes) if p.get("turnId") == turn_id), None)
            if start is None:
                return None, []
            sl = notes[start:]
            end = next((i for i, p in enumerate(sl) if "isFinal" not in p and p.get("status") == "idle"), None)
            return end, sl

        while True:
            await self.wait_for(lambda: turn_slice()[0] is not None or any(
                p.get("toolCallId") and p["toolCallId"] not in answered for p in turn_slice()[1]))
            end, sl = turn_slice()
            calls = [p for p in sl if p.get("toolCallId") and p["toolCallId"] not in answered]
            if not calls:
                assert end is not None
                return sl[: end + 1]
            assert tool_results is not None, f"unexpected tool calls {calls}"
            for c in calls:
                answered.add(c["toolCallId"])
                await self.call("provideToolResult", {"sessionId": session_id, "toolCallId": c["toolCallId"], "result": tool_results(c)})


async def reply_text(url: str, content: str) -> str:
    """The reply text of an uninterrupted run (a plain, fast client: replies can be long)."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "startSession", "params": {}}))
        sid = json.loads(await ws.recv())["result"]["sessionId"]
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "sendUserMessage", "params": {"sessionId": sid, "content": content}}))
        parts = []
        async with asyncio.timeout(60):
            async for raw in ws:
                p = json.loads(raw).get("params", {})
                parts.append(p.get("chunk", ""))
                if p.get("status") == "idle":
                    break
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "stopSession", "params": {"sessionId": sid}}))
        async for raw in ws:
            if json.loads(raw).get("id") == 3:
                break
        return "".join(parts)


def message_texts(notes: list[dict[str, Any]]) -> dict[str, str]:
    """messageId → concatenated text of its chunks."""
    out: dict[str, str] = {}
    for p in notes:
        if "isFinal" in p:
            out[p["messageId"]] = out.get(p["messageId"], "") + p["chunk"]
    return out

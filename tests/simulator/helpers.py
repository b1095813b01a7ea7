"""Helpers for the simulator tests: requests, in-process runs, an ASGI driver, an SSE
decoder written from the OpenRouter reference (independent of the simulator's own)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.loop.provider import Finish, ModelRequest, ProviderError, ReasoningDelta, TextDelta, ToolCall

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
WAIT = 10.0

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                    "safe": {"type": "boolean"},
                    "lang": {"enum": ["en", "fr", "de"]},
                },
                "required": ["query", "limit", "lang"],
            },
        },
    },
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}},
]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def run(provider: Any, messages: Sequence[dict[str, Any]], tools: Sequence[Any] = (), **sampling: Any) -> list[Any]:
    """All events of one step; a raised ProviderError is the last item."""
    out: list[Any] = []
    try:
        async with asyncio.timeout(WAIT):
            async for ev in provider.stream(ModelRequest(list(messages), list(tools), None, sampling)):
                out.append(ev)
    except ProviderError as exc:
        out.append(exc)
    return out


async def timed(provider: Any, clock: Any, messages: Sequence[dict[str, Any]], tools: Sequence[Any] = ()) -> list[tuple[float, Any]]:
    """Like :func:`run`, with the clock's time at each event."""
    out: list[tuple[float, Any]] = []
    try:
        async for ev in provider.stream(ModelRequest(list(messages), list(tools))):
            out.append((clock.now(), ev))
    except ProviderError as exc:
        out.append((clock.now(), exc))
    return out


def text_of(events: Sequence[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls_of(events: Sequence[Any]) -> list[ToolCall]:
    return [e for e in events if isinstance(e, ToolCall)]


def assistant(events: Sequence[Any]) -> dict[str, Any]:
    """The assistant message a client records for a step (as server.loop.conversation does)."""
    calls = calls_of(events)
    text = text_of(events)
    msg: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}} for c in calls
        ]
    return msg


def results(calls: Sequence[ToolCall], answer: Callable[[ToolCall], str]) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": c.id, "content": answer(c)} for c in calls]


def describe(events: Sequence[Any]) -> list[Any]:
    """A comparable summary of a step's events."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, TextDelta):
            out.append(("text", e.text))
        elif isinstance(e, ReasoningDelta):
            out.append(("reasoning", e.text))
        elif isinstance(e, ToolCall):
            out.append(("call", e.id, e.name, e.raw_arguments))
        elif isinstance(e, Finish):
            out.append(("finish", e.reason, e.usage))
        elif isinstance(e, ProviderError):
            out.append(("error", e.kind, e.retryable, e.retry_after_s, e.status))
    return out


# ---------------------------------------------------------------------- SSE decoding
@dataclass
class Decoded:
    """What a careful OpenRouter client makes of a stream (reference section 8)."""

    content: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish: str | None = None
    finish_count: int = 0
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    done: bool = False
    comments: int = 0
    chunks: int = 0
    ids: set[str] = field(default_factory=set)

    def feed(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        self.ids.add(chunk["id"])
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("error"):
            self.error = chunk["error"]
        for choice in chunk.get("choices") or []:
            delta = choice["delta"]
            self.content += delta.get("content") or ""
            self.reasoning += delta.get("reasoning") or ""
            for frag in delta.get("tool_calls") or []:
                call = self.calls.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
                if frag.get("id"):
                    assert not call["id"], "id sent twice"
                    call["id"] = frag["id"]
                    call["name"] = frag["function"]["name"]
                call["arguments"] += frag.get("function", {}).get("arguments", "")
            if choice.get("finish_reason") and not chunk.get("usage"):
                self.finish_count += 1
                self.finish = self.finish or choice["finish_reason"]

    def call_list(self) -> list[tuple[str, str, str]]:
        return [(c["id"], c["name"], c["arguments"]) for _, c in sorted(self.calls.items())]


def decode_sse(raw: bytes) -> Decoded:
    """Decode raw SSE bytes (comments counted, events split on blank lines)."""
    d = Decoded()
    for event in raw.decode("utf-8").split("\n\n"):
        if not event:
            continue
        if event.startswith(":"):
            d.comments += 1
            continue
        assert event.startswith("data: "), event
        data = event[len("data: "):]
        if data == "[DONE]":
            d.done = True
            continue
        d.feed(json.loads(data))
    return d


# ---------------------------------------------------------------------- ASGI driver
@dataclass
class Captured:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    parts: list[tuple[float, bytes]] = field(default_factory=list)
    complete: bool = False
    raised: BaseException | None = None

    @property
    def body(self) -> bytes:
        return b"".join(p for _, p in self.parts)


async def drive(app: Any, body: dict[str, Any], clock: Any, *, path: str = "/api/v1/chat/completions", limit: float | None = None) -> Captured:
    """Call the ASGI app directly (no sockets), recording the clock's time of every
    body part. With ``limit``, the client disconnects after that many seconds."""
    cap = Captured()
    gone = asyncio.Event()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            cap.status = message["status"]
            cap.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                cap.parts.append((clock.now(), message["body"]))
            if not message.get("more_body", False):
                cap.complete = True

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        if limit is None:
            await task
        else:
            done, _ = await asyncio.wait({task}, timeout=limit)
            if not done:
                gone.set()
                await asyncio.wait_for(task, WAIT)
    except Exception as exc:  # noqa: BLE001 - a simulated drop surfaces here
        cap.raised = exc
    return cap


# ---------------------------------------------------------------------- subprocess server
@dataclass
class SimServer:
    proc: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(*args: str, env: dict[str, str] | None = None) -> SimServer:
    """Start ``python -m simulator --port 0 ARGS`` and wait until it says it listens
    and answers /health (never a fixed sleep)."""
    proc = subprocess.Popen(
        [PY, "-m", "simulator", "--port", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line or not line:
            break
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r} {proc.stdout.read()}")
    url = line.split("listening on ", 1)[1].split()[0]
    server = SimServer(proc, url)
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.02)
    server.stop()
    raise RuntimeError("simulator never became healthy")

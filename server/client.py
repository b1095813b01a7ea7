"""``ailoop-client`` / ``python -m server.client URL``: a terminal client for AILoop Interactive.

Two modes (docs/client.md):

* **interactive** (default): chat with streamed replies; tool calls are answered at a
  prompt or automatically from ``--tool-results FILE``; ``/pause``, ``/resume``,
  ``/cancel``, ``/stop``, ``/start``, ``/quit``, ``/help``.
* **script** (``--script FILE``): plays a conversation from a file and prints every
  frame, one JSON per line, ``> `` for frames sent and ``< `` for frames received.
  For smoke tests and bug reports.

Exit status: 0 success; 1 protocol error (malformed frame, seq gap, an error response
that was not expected, a timeout waiting for the server, the server closing the
connection); 2 usage error (bad option, unreadable or invalid file, script error,
a tool call with no result to give); 3 could not connect (refused, HTTP 401/403, ...).

This module speaks only the wire protocol; it imports nothing of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

__all__ = [
    "EXIT_CONNECT", "EXIT_OK", "EXIT_PROTOCOL", "EXIT_USAGE",
    "RpcClient", "ScriptError", "Step", "main", "parse_script",
]

EXIT_OK, EXIT_PROTOCOL, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
DEFAULT_URL = "ws://127.0.0.1:8765/ws"
PROTOCOL_VERSION = 1
LIVE = ("started", "idle", "streaming", "awaiting_tool_results", "paused")

try:
    from importlib.metadata import PackageNotFoundError, version

    VERSION = version("ailoop-interactive")
except PackageNotFoundError:  # pragma: no cover - source tree not installed
    VERSION = "0.0.0"


def _error_names() -> dict[int, str]:
    """Error code → name, from the spec shipped with the package (best effort)."""
    try:
        from importlib.resources import files

        schema = json.loads((files("spec") / "protocol.schema.json").read_text())
        return {e["code"]: e["name"] for e in schema.get("x-error-codes", [])}
    except Exception:  # noqa: BLE001 - the names are only decoration
        return {}


ERROR_NAMES = _error_names()


def error_text(err: dict[str, Any]) -> str:
    code = err.get("code")
    name = ERROR_NAMES.get(code, "") if isinstance(code, int) else ""
    data = err.get("data")
    extra = f" {json.dumps(data, ensure_ascii=False)}" if data else ""
    return f"{code}{' ' + name if name else ''}: {err.get('message', '')}{extra}"


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class ProtocolError(Exception):
    """The server broke the protocol, refused a request, or did not answer in time."""


class UsageError(Exception):
    """Bad options, files or script lines."""


class ScriptError(UsageError):
    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"script line {lineno}: {message}")
        self.lineno = lineno


# --------------------------------------------------------------------------- state


@dataclass
class ToolCall:
    session_id: str
    tool_call_id: str
    name: str
    arguments: Any
    turn_id: str | None = None


@dataclass
class SessionState:
    id: str
    status: str = "started"
    last_seq: int = 0
    turn_id: str | None = None
    turn_active: bool = False
    """From the sendUserMessage response to the turn's last final chunk."""
    pending_calls: deque[ToolCall] = field(default_factory=deque)
    end_reason: str | None = None

    @property
    def live(self) -> bool:
        return self.status != "ended"


@dataclass
class Event:
    """What the reader saw, in frame order: ``kind`` is ``notification``, ``response``
    or ``closed``; ``method``/``params`` are the request's for a response."""

    kind: str
    message: Any = None
    method: str | None = None
    params: Any = None


class RpcClient:
    """JSON-RPC over one WebSocket: requests with futures, per-session state kept in
    frame order by the reader, and a record of protocol violations."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        on_frame: Callable[[str, str], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.ws = ws
        self.on_frame = on_frame
        self.on_event = on_event
        self.sessions: dict[str, SessionState] = {}
        self.violations: list[str] = []
        self.error_responses: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closing = False
        self._next_id = 0
        self._pending: dict[Any, tuple[str, Any, asyncio.Future[dict[str, Any]]]] = {}
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="ailoop-client-reader")

    @property
    def closed(self) -> bool:
        return self._reader is not None and self._reader.done()

    # -- sending

    async def send_request(self, method: str, params: Any = None) -> asyncio.Future[dict[str, Any]]:
        self._next_id += 1
        rid = self._next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (method, params, fut)
        text = dumps(msg)
        if self.on_frame:
            self.on_frame(">", text)
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            self._pending.pop(rid, None)
            raise ProtocolError(f"connection closed before {method} could be sent ({exc})") from None
        return fut

    async def call(self, method: str, params: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send a request and wait for its response (the whole response object)."""
        fut = await self.send_request(method, params)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise ProtocolError(f"no response to {method} within {timeout:g} s") from None

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)

    # -- waiting

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    if self.closed:
                        if predicate():
                            return
                        raise ProtocolError(f"connection closed ({self.close_code}) while waiting for {what}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise ProtocolError(f"timed out after {timeout:g} s waiting for {what}") from None

    # -- reading

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    if self.on_frame:
                        self.on_frame("<", dumps({"binaryFrame": raw.hex()}))
                    self.violations.append(f"binary frame of {len(raw)} bytes")
                else:
                    if self.on_frame:
                        self.on_frame("<", raw if "\n" not in raw else raw.replace("\r", "").replace("\n", " "))
                    self._receive(raw)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            for _, _, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ProtocolError(f"connection closed ({self.close_code}) before the response"))
                    fut.exception()  # retrieved: interactive mode does not await every request
            self._pending.clear()
            if self.on_event:
                self.on_event(Event("closed"))
            self._changed.set()

    def _receive(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.violations.append(f"frame is not JSON: {raw[:200]!r}")
            return
        if isinstance(msg, list):
            self.violations.append("unexpected batch response (this client sends no batches)")
            for item in msg:
                if isinstance(item, dict):
                    self._message(item)
            return
        if not isinstance(msg, dict):
            self.violations.append(f"frame is not a JSON object: {raw[:200]!r}")
            return
        self._message(msg)

    def _message(self, msg: dict[str, Any]) -> None:
        if msg.get("jsonrpc") != "2.0":
            self.violations.append(f"jsonrpc is not \"2.0\": {dumps(msg)[:200]}")
        if "method" in msg:
            self._notification(msg)
        elif "result" in msg or "error" in msg:
            self._response(msg)
        else:
            self.violations.append(f"neither a notification nor a response: {dumps(msg)[:200]}")

    def _response(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        entry = self._pending.pop(rid, None) if isinstance(rid, (int, str)) else None
        if entry is None:
            if "error" in msg:
                self.error_responses.append(msg)
            self.violations.append(f"response to no pending request (id {rid!r}): {dumps(msg)[:200]}")
            return
        method, params, fut = entry
        if "error" in msg:
            self.error_responses.append(msg)
        else:
            result = msg.get("result")
            if method == "startSession" and isinstance(result, dict) and isinstance(result.get("sessionId"), str):
                self.sessions[result["sessionId"]] = SessionState(result["sessionId"], status=str(result.get("status", "started")))
            elif method == "sendUserMessage" and isinstance(result, dict):
                s = self.sessions.get(result.get("sessionId", ""))
                if s is not None:
                    s.turn_id = result.get("turnId")
                    s.turn_active = True
        if not fut.done():
            fut.set_result(msg)
        if self.on_event:
            self.on_event(Event("response", msg, method, params))

    def _notification(self, msg: dict[str, Any]) -> None:
        params = msg.get("params")
        method = msg.get("method")
        if not isinstance(params, dict) or not isinstance(params.get("sessionId"), str) or not isinstance(params.get("seq"), int):
            self.violations.append(f"notification without sessionId/seq: {dumps(msg)[:200]}")
            return
        sid, seq = params["sessionId"], params["seq"]
        s = self.sessions.get(sid)
        if s is None:
            self.violations.append(f"notification of unknown session {sid} (seq {seq})")
            s = self.sessions[sid] = SessionState(sid, last_seq=seq - 1)
        if seq != s.last_seq + 1:
            self.violations.append(f"session {sid}: seq {seq} after {s.last_seq}")
        s.last_seq = seq
        if method == "SessionStatusNotification":
            s.status = str(params.get("status"))
            if s.status == "ended":
                s.end_reason = params.get("reason")
                s.turn_active = False
                s.pending_calls.clear()
            elif s.status == "idle":
                s.turn_active = False
        elif method == "AIMessageChunkNotification":
            if params.get("isFinal") and params.get("finishReason") != "tool_calls":
                s.turn_active = False
                s.pending_calls.clear()
        elif method == "ToolCallNotification":
            s.pending_calls.append(ToolCall(sid, str(params.get("toolCallId")), str(params.get("name")),
                                            params.get("arguments"), params.get("turnId")))
        elif method != "ErrorNotification":
            pass  # a newer server's notification: shown, not interpreted
        if self.on_event:
            self.on_event(Event("notification", msg))


# --------------------------------------------------------------------------- files


def load_json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from None


def load_tools(path: str) -> list[Any]:
    data = load_json_file(path, "tools file")
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list):
        raise UsageError(f"tools file {path} must hold a JSON list of function tools")
    return data


@dataclass
class Canned:
    result: Any
    is_error: bool = False


def load_tool_results(path: str) -> dict[str, Canned]:
    data = load_json_file(path, "tool results file")
    if not isinstance(data, dict):
        raise UsageError(f"tool results file {path} must hold a JSON object: tool name → result")
    return {str(k): Canned(v) for k, v in data.items()}


def canned_for(results: dict[str, Canned], name: str) -> Canned | None:
    return results.get(name) or results.get("*")


def parse_answer(text: str) -> tuple[Any, bool]:
    """A typed tool answer: JSON if it parses, else the text; a leading ``!`` marks an error."""
    is_error = text.startswith("!")
    if is_error:
        text = text[1:].strip()
    try:
        return json.loads(text), is_error
    except ValueError:
        return text, is_error


# --------------------------------------------------------------------------- script

SCRIPT_HELP = """\
Script format (one step per line; see docs/client.md):
  # comment                 ignored, as are blank lines
  TEXT                      send TEXT as a user message; wait for the turn to end,
                            answering tool calls from the tool results
  TEXT \\                    a line ending in a backslash continues on the next line
                            (one message of several lines, e.g. parallel /sim tool lines)
  /sim ...                  a user message too (simulator directive)
  \\/TEXT                    a user message starting with "/" (the backslash is dropped)
  /start [JSON]             start a session (startSession params; default: from
                            --system/--tools/--model). A message with no live session
                            starts one by itself.
  /send TEXT                send a user message without waiting for the turn to end
  /wait STATUS              wait until the session's status is STATUS, answering tool calls
  /tool NAME JSON           from now on answer tool NAME with JSON (overrides --tool-results;
                            NAME * answers any tool)
  /tool-error NAME JSON     the same, with isError true
  /pause  /resume  /cancel  /stop
                            the requests of the same names, on the current session
  /expect-error CODE        the next request must fail with this error code
  /sleep SECONDS            wait
  /quit                     end the script here
"""

COMMANDS_WITH_ARG = {"start", "send", "wait", "tool", "tool-error", "expect-error", "sleep"}
COMMANDS_NO_ARG = {"pause", "resume", "cancel", "stop", "quit"}


@dataclass
class Step:
    lineno: int
    kind: str
    """``message`` or a command name (``start``, ``send``, ``pause`` ...)."""
    text: str = ""
    value: Any = None


def parse_script(text: str) -> list[Step]:
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i]
        i += 1
        # Joined continuation lines.
        while line.endswith("\\") and not line.endswith("\\\\"):
            line = line[:-1].rstrip()
            if i >= len(lines):
                raise ScriptError(lineno, "backslash continuation at the end of the file")
            line = line + "\n" + lines[i]
            i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("\\/"):
            steps.append(Step(lineno, "message", line.lstrip()[1:]))
            continue
        if not stripped.startswith("/") or stripped.startswith("/sim"):
            steps.append(Step(lineno, "message", line.strip("\n")))
            continue
        head, _, rest = stripped[1:].partition(" ")
        rest = rest.strip()
        if head in COMMANDS_NO_ARG:
            if rest:
                raise ScriptError(lineno, f"/{head} takes no argument")
            steps.append(Step(lineno, head))
        elif head in COMMANDS_WITH_ARG:
            steps.append(_parse_command(lineno, head, rest))
        else:
            raise ScriptError(lineno, f"unknown command /{head} (write \\/{head} to send it as a message)")
    return steps


def _json_arg(lineno: int, what: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ScriptError(lineno, f"{what} is not valid JSON: {exc}") from None


def _parse_command(lineno: int, head: str, rest: str) -> Step:
    if head == "start":
        params = _json_arg(lineno, "/start params", rest) if rest else None
        if params is not None and not isinstance(params, dict):
            raise ScriptError(lineno, "/start params must be a JSON object")
        return Step(lineno, head, value=params)
    if head == "send":
        if not rest:
            raise ScriptError(lineno, "/send needs a message")
        return Step(lineno, head, text=rest)
    if head == "wait":
        if rest not in LIVE + ("ended",):
            raise ScriptError(lineno, f"/wait needs a status, one of {', '.join(LIVE + ('ended',))}")
        return Step(lineno, head, text=rest)
    if head in ("tool", "tool-error"):
        name, _, payload = rest.partition(" ")
        if not name or not payload.strip():
            raise ScriptError(lineno, f"/{head} needs a tool name and a JSON result")
        return Step(lineno, head, text=name, value=Canned(_json_arg(lineno, "tool result", payload.strip()), head == "tool-error"))
    if head == "expect-error":
        try:
            return Step(lineno, head, value=int(rest))
        except ValueError:
            raise ScriptError(lineno, "/expect-error needs an integer error code") from None
    if head == "sleep":
        try:
            seconds = float(rest)
        except ValueError:
            raise ScriptError(lineno, "/sleep needs a number of seconds") from None
        if not 0 <= seconds <= 3600:
            raise ScriptError(lineno, "/sleep takes 0 to 3600 seconds")
        return Step(lineno, head, value=seconds)
    raise ScriptError(lineno, f"unknown command /{head}")  # pragma: no cover


def start_params(args: Any) -> dict[str, Any]:
    """startSession params from the command line (--system, --tools, --model)."""
    params: dict[str, Any] = {}
    if args.system:
        params["systemPrompt"] = args.system
    if args.tools_list is not None:
        params["tools"] = args.tools_list
    if args.model:
        params["model"] = args.model
    return params


class ScriptRunner:
    def __init__(self, client: RpcClient, args: argparse.Namespace, tool_results: dict[str, Canned], log: TextIO) -> None:
        self.client = client
        self.args = args
        self.results = dict(tool_results)
        self.timeout: float = args.timeout
        self.log = log
        self.session: SessionState | None = None
        self.expect: tuple[int, int] | None = None  # (code, script line)

    def note(self, text: str) -> None:
        print(f"# {text}", file=self.log, flush=True)

    async def request(self, step: Step, method: str, params: Any) -> dict[str, Any] | None:
        """The result, or None when an expected error came back."""
        resp = await self.client.call(method, params, self.timeout)
        expect, self.expect = self.expect, None
        if "error" in resp:
            err = resp["error"]
            if expect is not None and err.get("code") == expect[0]:
                self.note(f"line {step.lineno}: {method} failed as expected: {error_text(err)}")
                return None
            raise ProtocolError(f"line {step.lineno}: {method} failed: {error_text(err)}")
        if expect is not None:
            raise ProtocolError(f"line {expect[1]}: expected error {expect[0]}, but {method} succeeded")
        return resp["result"]

    def start_params(self) -> dict[str, Any]:
        return start_params(self.args)

    async def start(self, step: Step, params: dict[str, Any] | None) -> None:
        result = await self.request(step, "startSession", self.start_params() if params is None else params)
        if result is not None:
            self.session = self.client.sessions[result["sessionId"]]

    def current(self, step: Step) -> SessionState:
        if self.session is None:
            raise ScriptError(step.lineno, f"/{step.kind} with no session (use /start or send a message first)")
        return self.session

    async def answer_calls(self, s: SessionState) -> None:
        while s.pending_calls:
            call = s.pending_calls.popleft()
            canned = canned_for(self.results, call.name)
            if canned is None:
                raise UsageError(f"tool call {call.tool_call_id} of {call.name!r} has no result "
                                 "(give one with /tool in the script or with --tool-results)")
            params: dict[str, Any] = {"sessionId": s.id, "toolCallId": call.tool_call_id, "result": canned.result}
            if canned.is_error:
                params["isError"] = True
            await self.request(Step(0, "tool"), "provideToolResult", params)

    async def run_until(self, s: SessionState, pred: Callable[[], bool], what: str) -> None:
        while True:
            await self.client.wait_for(lambda: pred() or bool(s.pending_calls), self.timeout, what)
            if s.pending_calls:
                await self.answer_calls(s)
                continue
            return

    async def run(self, steps: list[Step]) -> None:
        await self.request(Step(0, "initialize"), "initialize",
                           {"protocolVersion": PROTOCOL_VERSION, "clientInfo": {"name": "ailoop-client", "version": VERSION}})
        for step in steps:
            if step.kind == "quit":
                break
            await self.step(step)
        if self.session is not None and self.session.live:
            await self.request(Step(0, "stop"), "stopSession", {"sessionId": self.session.id})

    async def step(self, step: Step) -> None:
        k = step.kind
        if k in ("message", "send"):
            if self.session is None or not self.session.live:
                await self.start(step, None)
                if self.session is None:
                    return
            s = self.session
            result = await self.request(step, "sendUserMessage", {"sessionId": s.id, "content": step.text})
            if result is not None and k == "message":
                await self.run_until(s, lambda: not s.turn_active and s.status in ("idle", "paused", "ended"),
                                     f"the end of the turn of line {step.lineno}")
        elif k == "start":
            await self.start(step, step.value)
        elif k == "wait":
            s = self.current(step)
            await self.run_until(s, lambda: s.status == step.text, f"status {step.text} (line {step.lineno})")
        elif k in ("tool", "tool-error"):
            self.results[step.text] = step.value
        elif k == "expect-error":
            self.expect = (step.value, step.lineno)
        elif k == "sleep":
            await asyncio.sleep(step.value)
        else:
            method = {"pause": "pauseSession", "resume": "resumeSession", "cancel": "cancelTurn", "stop": "stopSession"}[k]
            await self.request(step, method, {"sessionId": self.current(step).id})


# --------------------------------------------------------------------------- interactive

HELP = """\
Type a message and press Enter (end a line with \\ to continue on the next one).
Lines starting with /sim are simulator directives and are sent as messages.
Commands that act at once, even while a reply streams:
  /pause /resume /cancel   pause, resume, or cancel the turn in flight
  /stop                    end the session (the next message starts a new one)
  /help                    this text
Taken in order, like messages, once the turn in flight has ended:
  /start                   start a new session (after /stop)
  /quit                    stop the session and leave (end of input does the same)
A tool call without a canned result asks for its result: type JSON (or plain text);
start with ! to report an error (isError). Ctrl-C cancels the turn in flight, or quits.
"""

IMMEDIATE_COMMANDS = {"/pause", "/resume", "/cancel", "/stop", "/help"}
ORDERED_COMMANDS = {"/start", "/quit", "/exit"}


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> None:
    """A daemon thread: stdin lines onto the event queue (None at end of input)."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, Event("line", line.rstrip("\r\n")))
    except (OSError, ValueError):
        pass
    with contextlib.suppress(RuntimeError):  # loop closed
        loop.call_soon_threadsafe(queue.put_nowait, Event("eof"))


class Interactive:
    def __init__(self, args: argparse.Namespace, tool_results: dict[str, Canned], out: TextIO) -> None:
        self.args = args
        self.results = tool_results
        self.out = out
        self.tty = sys.stdin.isatty()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.client: RpcClient | None = None
        self.session: SessionState | None = None
        self.typed: deque[str] = deque()
        self.manual: deque[ToolCall] = deque()
        self.partial: list[str] = []
        self.eof = False
        self.starting = False
        self.sending = False
        self.quitting = False
        self.at_line_start = True
        self.open_message: str | None = None
        self.failed = False
        self.prompted = False
        self.backlog = 0
        """Protocol events queued but not handled yet."""

    # -- output

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        if text:
            self.at_line_start = text.endswith("\n")

    def line(self, text: str) -> None:
        if not self.at_line_start:
            self.write("\n")
        self.open_message = None
        self.write(text + "\n")
        self.prompted = False

    def prompt(self) -> None:
        if not self.tty or self.prompted or self.quitting:
            return
        if self.manual:
            c = self.manual[0]
            self.line(f"result for {c.name} ({c.tool_call_id}), JSON or text, ! for an error:")
            self.write("tool> ")
        elif self.ready_for_message():
            if not self.at_line_start:
                self.write("\n")
            self.write("you> ")
        else:
            return
        self.prompted = True

    # -- state

    def busy(self) -> bool:
        s = self.session
        return self.starting or self.sending or (s is not None and s.live and (s.turn_active or s.status in ("streaming", "awaiting_tool_results", "paused")))

    def ready_for_message(self) -> bool:
        # The reader's state runs ahead of the events still queued for display: only
        # when every protocol event has been shown does it describe what the user saw.
        return self.backlog == 0 and not self.busy() and not self.manual

    def on_event(self, ev: Event) -> None:
        """Called by the reader, in frame order."""
        self.backlog += 1
        self.events.put_nowait(ev)

    # -- main loop

    async def run(self, client: RpcClient) -> int:
        self.client = client
        loop = asyncio.get_running_loop()
        threading.Thread(target=_stdin_reader, args=(loop, self.events), daemon=True, name="stdin").start()
        if self.tty:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, lambda: self.events.put_nowait(Event("interrupt")))
        init = await client.call("initialize", {"protocolVersion": PROTOCOL_VERSION,
                                                "clientInfo": {"name": "ailoop-client", "version": VERSION}}, self.args.timeout)
        if "error" in init:
            self.line(f"initialize failed: {error_text(init['error'])}")
            return EXIT_PROTOCOL
        r = init["result"]
        caps = r.get("capabilities", {})
        self.line(f"connected to {self.args.url}: {r.get('serverInfo', {}).get('name')} {r.get('serverInfo', {}).get('version')}, "
                  f"backend {', '.join(caps.get('backends', [])) or '?'}")
        if self.tty:
            self.line("type /help for commands")
        await self.start_session()
        while not self.quitting:
            ev = await self.events.get()
            if ev.kind in ("notification", "response", "closed"):
                self.backlog -= 1
            await self.handle(ev)
            await self.pump()
            self.prompt()
        while not self.events.empty():  # what arrived while quitting (e.g. "ended")
            ev = self.events.get_nowait()
            if ev.kind == "notification":
                await self.on_notification(ev.message)
        return EXIT_PROTOCOL if (self.failed or client.violations or client.error_responses) else EXIT_OK

    async def start_session(self) -> None:
        assert self.client is not None
        self.starting = True
        await self.client.send_request("startSession", start_params(self.args))

    async def request(self, method: str, **params: Any) -> None:
        assert self.client is not None
        await self.client.send_request(method, params)

    async def handle(self, ev: Event) -> None:
        if ev.kind == "line":
            await self.on_line(ev.message)
        elif ev.kind == "eof":
            self.eof = True
        elif ev.kind == "interrupt":
            s = self.session
            if s is not None and s.live and s.turn_active:
                self.line("[cancelling the turn; Ctrl-C again to quit]")
                await self.request("cancelTurn", sessionId=s.id)
            else:
                await self.quit()
        elif ev.kind == "response":
            await self.on_response(ev)
        elif ev.kind == "notification":
            await self.on_notification(ev.message)
        elif ev.kind == "closed":
            assert self.client is not None
            if not self.client.closing:
                self.line(f"[connection closed by the server: {self.client.close_code} {self.client.close_reason}".rstrip() + "]")
                self.failed = True
            self.quitting = True

    async def on_line(self, text: str) -> None:
        if self.tty:  # the terminal echoed the user's Enter
            self.at_line_start = True
            self.prompted = False
            self.open_message = None
        if self.partial or (text.endswith("\\") and not text.endswith("\\\\")):
            more = text.endswith("\\") and not text.endswith("\\\\")
            self.partial.append(text[:-1] if more else text)
            if more:
                return
            text = "\n".join(self.partial)
            self.partial.clear()
        cmd = text.strip()
        if cmd in IMMEDIATE_COMMANDS:
            await self.command(cmd)
            return
        self.typed.append(text)  # messages, tool answers, /start and /quit: in order
        self.prompted = False

    async def command(self, cmd: str) -> None:
        s = self.session
        if cmd == "/help":
            self.line(HELP.rstrip())
        elif cmd in ("/quit", "/exit"):
            await self.quit()
        elif cmd == "/start":
            if s is not None and s.live:
                self.line("[a session is live; /stop it first]")
            else:
                await self.start_session()
        elif s is None or not s.live:
            self.line("[no live session]")
        else:
            method = {"/pause": "pauseSession", "/resume": "resumeSession", "/cancel": "cancelTurn", "/stop": "stopSession"}[cmd]
            await self.request(method, sessionId=s.id)

    async def quit(self) -> None:
        assert self.client is not None
        s = self.session
        if s is not None and s.live:
            with contextlib.suppress(ProtocolError):
                resp = await self.client.call("stopSession", {"sessionId": s.id}, self.args.timeout)
                if "error" in resp:
                    self.line(f"[stopSession failed: {error_text(resp['error'])}]")
        self.quitting = True

    async def pump(self) -> None:
        """Give queued input its turn: a tool answer, or the next message when idle."""
        s = self.session
        if self.quitting:
            return
        while self.manual and self.typed:
            call = self.manual.popleft()
            answer = self.typed.popleft()
            if not self.tty:
                self.line("tool> " + answer)
            result, is_error = parse_answer(answer)
            await self.provide(call, result, is_error)
        while self.typed and self.typed[0].strip() in ORDERED_COMMANDS and self.ready_for_message():
            cmd = self.typed.popleft().strip()
            if not self.tty:
                self.line("you> " + cmd)
            await self.command(cmd)
            if self.quitting:
                return
            s = self.session
        if self.typed and self.ready_for_message():
            text = self.typed.popleft()
            if s is None or not s.live:
                self.typed.appendleft(text)
                if not self.starting:
                    await self.start_session()
                return
            self.write_user(text)
            self.sending = True
            await self.request("sendUserMessage", sessionId=s.id, content=text)
            return
        if self.eof and not self.typed:
            if self.manual:
                self.line(f"[end of input with a tool call unanswered: {self.manual[0].name} ({self.manual[0].tool_call_id})]")
                self.failed = True
                await self.quit()
            elif self.backlog == 0 and not self.busy():
                await self.quit()

    def write_user(self, text: str) -> None:
        if not self.tty:
            self.line("you> " + text)
        self.prompted = False

    async def provide(self, call: ToolCall, result: Any, is_error: bool) -> None:
        params: dict[str, Any] = {"sessionId": call.session_id, "toolCallId": call.tool_call_id, "result": result}
        if is_error:
            params["isError"] = True
        assert self.client is not None
        await self.client.send_request("provideToolResult", params)

    async def on_response(self, ev: Event) -> None:
        msg = ev.message
        if ev.method == "startSession":
            self.starting = False
        if ev.method == "sendUserMessage":
            self.sending = False
        if "error" in msg:
            self.line(f"[{ev.method} failed: {error_text(msg['error'])}]")
            return
        r = msg.get("result") or {}
        assert self.client is not None
        if ev.method == "startSession":
            self.session = self.client.sessions.get(r.get("sessionId"))
            tools = ", ".join(r.get("tools", [])) or "none"
            self.line(f"[session {r.get('sessionId')} started: model {r.get('model')}, tools: {tools}]")
        elif ev.method == "cancelTurn":
            if not r.get("cancelled"):
                self.line("[nothing to cancel]")
        elif ev.method == "resumeSession":
            self.line(f"[resumed: {r.get('status')}]")

    async def on_notification(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if self.session is None or p.get("sessionId") != self.session.id:
            return
        if method == "AIMessageChunkNotification":
            if self.open_message != p.get("messageId") and (p.get("chunk") or not p.get("isFinal")):
                if not self.at_line_start:
                    self.write("\n")
                self.write("ai> ")
                self.open_message = p.get("messageId")
            if p.get("chunk"):
                self.write(p["chunk"])
            if p.get("isFinal"):
                reason = p.get("finishReason")
                if self.open_message == p.get("messageId"):
                    self.write("\n")
                    self.open_message = None
                if reason not in ("stop", "tool_calls"):
                    self.line(f"[message ended: {reason}]")
        elif method == "ToolCallNotification":
            args = dumps(p.get("arguments"))
            call = ToolCall(p["sessionId"], str(p.get("toolCallId")), str(p.get("name")), p.get("arguments"), p.get("turnId"))
            canned = canned_for(self.results, call.name)
            if canned is not None:
                self.line(f"[tool call {call.name} {args} → {dumps(canned.result)}{' (error)' if canned.is_error else ''}]")
                await self.provide(call, canned.result, canned.is_error)
            else:
                self.line(f"[tool call {call.name} {args}, id {call.tool_call_id}]")
                self.manual.append(call)
        elif method == "SessionStatusNotification":
            status = p.get("status")
            if status == "ended":
                self.manual.clear()
                self.line(f"[session ended: {p.get('reason')}]")
            elif status == "paused":
                self.line("[paused]")
            elif status == "idle":
                self.manual.clear()  # a turn that ended by cancel, error or timeout: its calls are moot
        elif method == "ErrorNotification":
            self.line(f"[error {error_text(p)}]")


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ailoop-client",
        description="Terminal client for AILoop Interactive (JSON-RPC 2.0 over WebSocket).",
        epilog=SCRIPT_HELP + "\nExit status: 0 ok, 1 protocol error, 2 usage error, 3 could not connect.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("AILOOP_TOKEN"),
                   help="bearer token, sent as 'Authorization: Bearer TOKEN' (default: $AILOOP_TOKEN)")
    p.add_argument("--origin", help="Origin header to send (for servers with an Origin allowlist)")
    p.add_argument("--system", help="system prompt of the session")
    p.add_argument("--model", help="model override for the session")
    p.add_argument("--tools", metavar="FILE", help="JSON list of OpenAI function tools to declare")
    p.add_argument("--tool-results", metavar="FILE", help="JSON object: tool name → canned result (\"*\": any tool)")
    p.add_argument("--script", metavar="FILE", help="play a conversation from FILE ('-' for stdin) and print every frame")
    p.add_argument("--frames", action="store_true", help="interactive mode: also print every frame to stderr")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server at each step (default 30)")
    return p


async def _connect(args: argparse.Namespace) -> ClientConnection:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    return await connect(
        args.url,
        additional_headers=headers,
        origin=args.origin,  # type: ignore[arg-type]
        user_agent_header=f"ailoop-client/{VERSION}",
        open_timeout=args.timeout,
        close_timeout=5,
        max_size=None,
        compression=None,
    )


async def _amain(args: argparse.Namespace, steps: list[Step] | None, tool_results: dict[str, Canned]) -> int:
    err = sys.stderr
    try:
        ws = await _connect(args)
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = {401: " (a token is required: --token or $AILOOP_TOKEN)", 403: " (token or Origin refused)",
                503: " (the server is at its connection limit)"}.get(status, "")
        print(f"ailoop-client: handshake refused by {args.url}: HTTP {status}{hint}", file=err)
        return EXIT_CONNECT
    except InvalidURI as exc:
        print(f"ailoop-client: invalid URL: {exc}", file=err)
        return EXIT_USAGE
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        print(f"ailoop-client: cannot connect to {args.url}: {exc or type(exc).__name__}", file=err)
        return EXIT_CONNECT

    if steps is not None:
        out = sys.stdout

        def print_frame(direction: str, text: str) -> None:
            out.write(f"{direction} {text}\n")
            out.flush()

        client = RpcClient(ws, on_frame=print_frame)
        client.start()
        runner = ScriptRunner(client, args, tool_results, err)
        code = EXIT_OK
        try:
            await runner.run(steps)
        except ProtocolError as exc:
            print(f"ailoop-client: {exc}", file=err)
            code = EXIT_PROTOCOL
        except UsageError as exc:
            print(f"ailoop-client: {exc}", file=err)
            code = EXIT_USAGE
        if client.closed and not client.closing and code == EXIT_OK:
            print(f"ailoop-client: the server closed the connection ({client.close_code} {client.close_reason})".rstrip(), file=err)
            code = EXIT_PROTOCOL
        await client.close()
        for v in client.violations:
            print(f"ailoop-client: protocol violation: {v}", file=err)
        if client.violations and code == EXIT_OK:
            code = EXIT_PROTOCOL
        return code

    ui = Interactive(args, tool_results, sys.stdout)

    def frame_to_stderr(direction: str, text: str) -> None:
        print(f"{direction} {text}", file=err, flush=True)

    client = RpcClient(ws, on_frame=frame_to_stderr if args.frames else None, on_event=ui.on_event)
    client.start()
    try:
        code = await ui.run(client)
    except ProtocolError as exc:
        print(f"ailoop-client: {exc}", file=err)
        code = EXIT_PROTOCOL
    await client.close()
    for v in client.violations:
        print(f"ailoop-client: protocol violation: {v}", file=err)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.tools_list = load_tools(args.tools) if args.tools else None
        tool_results = load_tool_results(args.tool_results) if args.tool_results else {}
        steps: list[Step] | None = None
        if args.script:
            try:
                text = sys.stdin.read() if args.script == "-" else Path(args.script).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read script {args.script}: {exc.strerror or exc}") from None
            steps = parse_script(text)
    except UsageError as exc:
        print(f"ailoop-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_amain(args, steps, tool_results))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

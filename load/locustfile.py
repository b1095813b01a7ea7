"""Locust users speaking JSON-RPC 2.0 over one WebSocket each.

Run through the scenario runner (``python -m load run SCENARIO``), or by hand,
standalone or distributed, with the same file::

    locust -f load/locustfile.py --headless -u 10 -r 10 -t 30s \
        --host ws://127.0.0.1:8765 --ailoop-scenario seed_target ChatUser

    locust -f load/locustfile.py --master --headless --expect-workers 2 -u 300 -r 50 -t 60s \
        --host ws://127.0.0.1:8765 --ailoop-scenario scale ChatUser
    locust -f load/locustfile.py --worker --master-host 127.0.0.1      # once per worker

Every phase is its own locust row (request type ``WS``): ``connect``,
``startSession``, ``sendUserMessage`` (its response), ``first chunk`` (request
sent → first AIMessageChunkNotification), ``full turn`` (request sent → status
idle), ``tool call``, ``provideToolResult``, ``tool round trip`` (last tool result
sent → first chunk of the continued reply), ``tool turn``, ``stopSession``; churn
and slow-consumer users have rows of their own. On quitting, the master (or the
standalone process) checks the rows against ``--ailoop-thresholds`` for
``--ailoop-scenario`` and sets the exit code.
"""

from __future__ import annotations

import json
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from locust import User, events, task
from locust.runners import WorkerRunner

from load.thresholds import check_rows, format_checks, load_thresholds
from load.wsclient import ProtocolViolation, RpcSocket, Turn

__all__ = ["ChatUser", "ChurnUser", "SlowConsumerUser", "ToolUser"]

TOOLS = [
    {"type": "function", "function": {"name": "lookup", "description": "Look a key up.",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers.",
                                      "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                                                      "b": {"type": "number"}}}}},
]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("AILoop")
    g.add_argument("--ailoop-scenario", default="", help="scenario name (thresholds section)")
    g.add_argument("--ailoop-thresholds", default=str(Path(__file__).with_name("thresholds.yaml")))
    g.add_argument("--ailoop-check-file", default="", help="write the threshold checks here (JSON)")
    g.add_argument("--ailoop-think", default="0.5,1.5", help="seconds between a user's turns: MIN,MAX")
    g.add_argument("--ailoop-chunks", type=int, default=0, help="chunks per reply (/sim chunks N); 0: plain text")
    g.add_argument("--ailoop-rotate", type=int, default=0, help="stop and restart the session every N turns (0: never)")
    g.add_argument("--ailoop-timeout", type=float, default=30.0, help="seconds before a silent server is a failure")
    g.add_argument("--ailoop-parallel-tools", type=int, default=2, help="tool_heavy: at most this many calls per step")
    g.add_argument("--ailoop-slow-read-ms", type=float, default=10.0, help="slow consumer: pause before each read")
    g.add_argument("--ailoop-slow-chunks", type=int, default=300, help="slow consumer: chunks per reply")
    g.add_argument("--ailoop-slow-users", type=int, default=2, help="slow consumer: how many of the users are slow")


@events.init.add_listener
def _init(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is not None and getattr(opts, "ailoop_slow_users", None) is not None:
        SlowConsumerUser.fixed_count = opts.ailoop_slow_users


@events.quitting.add_listener
def _check(environment: Any, **_kw: Any) -> None:
    """Per-row thresholds on the final (aggregated) stats; sets the exit code."""
    if isinstance(environment.runner, WorkerRunner):
        return
    opts = environment.parsed_options
    scenario = getattr(opts, "ailoop_scenario", "") if opts else ""
    if not scenario:
        return
    try:
        rules = load_thresholds(opts.ailoop_thresholds, scenario)["rows"]
    except (OSError, KeyError) as exc:
        print(f"[ailoop] thresholds: {exc}", file=sys.stderr)
        environment.process_exit_code = 2
        return
    # entry.serialize(), not stats.serialize_stats(): the latter resets the entries
    # (and --json-file, written after this listener, would come out empty).
    entries = [e.serialize() for e in environment.stats.entries.values() if e.num_requests or e.num_failures]
    checks = check_rows(entries, rules)
    failed = [c for c in checks if not c.ok]
    errors = [{"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
              for e in environment.stats.errors.values()]
    print(f"[ailoop] {scenario}: {len(checks) - len(failed)}/{len(checks)} row thresholds passed", file=sys.stderr)
    print(format_checks(checks), file=sys.stderr)
    for e in errors:
        print(f"[ailoop] error x{e['occurrences']} in {e['name']}: {e['error']}", file=sys.stderr)
    if opts.ailoop_check_file:
        Path(opts.ailoop_check_file).write_text(
            json.dumps({"checks": [c.as_dict() for c in checks], "errors": errors}, indent=2))
    if failed:
        environment.process_exit_code = 1


class RpcUser(User):
    """Base: one WebSocket and (usually) one session per user, phases as rows."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.opts = environment.parsed_options
        host = (self.host or "ws://127.0.0.1:8765").rstrip("/")
        self.url = host if host.endswith("/ws") else host + "/ws"
        self.sock: RpcSocket | None = None
        self.sid: str | None = None
        self.turns = 0
        self.busy = False
        """A task is in the middle of an exchange with the server."""

    # ------------------------------------------------------------------ rows
    def fire(self, name: str, seconds: float, length: int = 0, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=seconds * 1000.0, response_length=length,
            exception=exc, context={},
        )

    @contextmanager
    def phase(self, name: str):  # type: ignore[no-untyped-def]
        """Time a phase; an exception fails its row and drops the connection."""
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.fire(name, time.perf_counter() - t0, 0, exc)
            self.drop()
            raise _Reported(exc) from exc
        self.fire(name, time.perf_counter() - t0)

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.abort()
        self.sock, self.sid = None, None

    def wait_time(self) -> float:
        lo, _, hi = (self.opts.ailoop_think if self.opts else "0.5,1.5").partition(",")
        return random.uniform(float(lo), float(hi or lo))

    @property
    def timeout(self) -> float:
        return self.opts.ailoop_timeout if self.opts else 30.0

    # ------------------------------------------------------------------ lifecycle
    def open(self, start_params: dict[str, Any] | None = None, rcvbuf: int | None = None) -> None:
        self.sock = RpcSocket(self.url, timeout=self.timeout, rcvbuf=rcvbuf)
        with self.phase("connect"):
            self.sock.connect()
        with self.phase("startSession"):
            self.sid = self.sock.start_session(**(start_params or {}))
        self.turns = 0

    def ensure_open(self, **kw: Any) -> None:
        if self.sock is None or not self.sock.connected or self.sid is None:
            self.drop()
            self.open(**kw)

    def on_stop(self) -> None:
        if self.busy:
            self.drop()
            return
        if self.sock is not None and self.sid is not None and self.sock.connected:
            try:
                with self.phase("stopSession"):
                    self.sock.stop_session(self.sid)
            except _Reported:
                pass
        if self.sock is not None:
            self.sock.close()
        self.sock, self.sid = None, None

    def run_turn(self, content: str, *, first: str = "first chunk", full: str = "full turn") -> Turn:
        """sendUserMessage, then the turn's notifications until idle; fires the rows."""
        assert self.sock is not None and self.sid is not None
        sock, sid = self.sock, self.sid
        turn = Turn()
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        with self.phase("sendUserMessage"):
            sock.response(sock.send_request("sendUserMessage", {"sessionId": sid, "content": content}), deadline)
            turn.response = time.perf_counter() - t0
        try:
            sock.read_turn(sid, turn, t0, deadline)
        except Exception as exc:
            if turn.first_chunk is None:
                self.fire(first, time.perf_counter() - t0, 0, exc)
            self.fire(full, time.perf_counter() - t0, 0, exc)
            self.drop()
            raise _Reported(exc) from exc
        self.fire(first, turn.first_chunk if turn.first_chunk is not None else turn.done or 0.0)
        self.fire(full, turn.done or 0.0, turn.bytes)
        self.turns += 1
        self.maybe_rotate()
        return turn

    def maybe_rotate(self) -> None:
        every = self.opts.ailoop_rotate if self.opts else 0
        if every and self.turns >= every and self.sock is not None and self.sid is not None:
            with self.phase("stopSession"):
                self.sock.stop_session(self.sid)
            self.sid = None
            with self.phase("startSession"):
                self.sid = self.sock.start_session()
            self.turns = 0


class _Reported(Exception):
    """A failure already reported as a failed row; ends the task iteration quietly."""


def _quiet(fn):  # type: ignore[no-untyped-def]
    """Tasks end quietly on an already-reported failure (locust would log it again)."""

    def wrapper(self: RpcUser) -> None:
        self.busy = True
        try:
            fn(self)
        except _Reported:
            pass
        # Not in a finally: a task killed mid-exchange (locust stopping the user)
        # leaves ``busy`` set, and on_stop then drops the connection instead of
        # sending stopSession into a half-read exchange.
        self.busy = False

    wrapper.__name__ = fn.__name__
    return wrapper


_PHRASES = [
    "hello there, how are you today",
    "tell me about the weather in a few words",
    "what is the capital of a small country",
    "summarize this conversation so far please",
    "write one sentence about load testing",
]


class ChatUser(RpcUser):
    """Chats: one session, a turn every few seconds (think time ``--ailoop-think``)."""

    weight = 10

    def on_start(self) -> None:
        try:
            self.open()
        except _Reported:
            pass

    @task
    @_quiet
    def chat(self) -> None:
        self.ensure_open()
        chunks = self.opts.ailoop_chunks if self.opts else 0
        text = random.choice(_PHRASES)
        content = f"/sim chunks {chunks}\n{text}" if chunks else text
        self.run_turn(content)


class ToolUser(RpcUser):
    """Tool-heavy turns: the model calls 1..N tools in parallel; the user answers each
    with provideToolResult; the turn continues with a reply quoting the results."""

    weight = 10

    def on_start(self) -> None:
        try:
            self.open({"tools": TOOLS})
        except _Reported:
            pass

    @task
    @_quiet
    def tool_turn(self) -> None:
        self.ensure_open(start_params={"tools": TOOLS})
        assert self.sock is not None and self.sid is not None
        sock, sid = self.sock, self.sid
        k = random.randint(1, max(1, self.opts.ailoop_parallel_tools if self.opts else 2))
        lines = [f'/sim tool lookup {{"q": "key-{random.randint(1, 10**6)}"}}' if i % 2 == 0
                 else f'/sim tool add {{"a": {random.randint(1, 99)}, "b": {random.randint(1, 99)}}}'
                 for i in range(k)]
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        turn = Turn()
        with self.phase("sendUserMessage"):
            sock.response(sock.send_request("sendUserMessage", {"sessionId": sid, "content": "\n".join(lines)}),
                          deadline)
        with self.phase("tool call"):
            sock.read_turn(sid, turn, t0, deadline, stop_at_tool_calls=True)
            if len(turn.tool_calls) != k:
                raise ProtocolViolation(f"expected {k} tool calls, got {len(turn.tool_calls)}")
        cont = Turn()
        t_last = 0.0
        for i, call in enumerate(turn.tool_calls):
            keep: list[dict[str, Any]] = []
            with self.phase("provideToolResult"):
                if i == len(turn.tool_calls) - 1:
                    t_last = time.perf_counter()
                result = {"value": f"result of {call['name']}", "n": i}
                r = sock.call("provideToolResult", {"sessionId": sid, "toolCallId": call["toolCallId"],
                                                     "result": result}, keep=keep)
                if r["pendingToolCalls"] != len(turn.tool_calls) - 1 - i:
                    raise ProtocolViolation(f"pendingToolCalls {r['pendingToolCalls']}")
            sock.push_back(keep)
        try:
            sock.read_turn(sid, cont, t_last, deadline)
        except Exception as exc:
            self.fire("tool round trip", time.perf_counter() - t_last, 0, exc)
            self.fire("tool turn", time.perf_counter() - t0, 0, exc)
            self.drop()
            return
        self.fire("tool round trip", cont.first_chunk if cont.first_chunk is not None else cont.done or 0.0)
        self.fire("tool turn", time.perf_counter() - t0, cont.bytes)
        self.turns += 1
        self.maybe_rotate()


class ChurnUser(RpcUser):
    """Connects, starts a session, and leaves at a random point: before a response,
    mid-stream (TCP dropped), after a turn without stopSession, or cleanly."""

    weight = 10
    KINDS = ("after start", "before response", "mid-stream abort", "mid-stream close", "after turn", "clean stop")

    @task
    @_quiet
    def churn(self) -> None:
        kind = random.choice(self.KINDS)
        t0 = time.perf_counter()
        self.open()
        assert self.sock is not None and self.sid is not None
        sock, sid = self.sock, self.sid
        try:
            if kind == "after start":
                pass
            elif kind == "before response":
                sock.send_request("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 20\nbye"})
            elif kind in ("mid-stream abort", "mid-stream close"):
                deadline = time.monotonic() + self.timeout
                sock.response(sock.send_request("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 20\nx"}),
                              deadline)
                sock.read_turn(sid, Turn(), t0, deadline, max_frames=random.randint(1, 10))
                if kind == "mid-stream abort":
                    sock.abort()
            else:
                self.run_turn(random.choice(_PHRASES))
                if kind == "clean stop":
                    with self.phase("stopSession"):
                        sock.stop_session(sid)
        except _Reported:
            return
        except Exception as exc:
            self.fire(f"churn: {kind}", time.perf_counter() - t0, 0, exc)
            self.drop()
            return
        sock.close()
        self.sock, self.sid = None, None
        self.fire(f"churn: {kind}", time.perf_counter() - t0)


class SlowConsumerUser(RpcUser):
    """Asks for long replies and reads them slowly through a small receive buffer:
    the server's output backs up for this connection only. Its rows are prefixed
    ``slow:``; the other users' rows show whether they suffered."""

    fixed_count = 2

    def on_start(self) -> None:
        try:
            self.open(rcvbuf=4096)
        except _Reported:
            pass

    @task
    @_quiet
    def slow_turn(self) -> None:
        self.ensure_open(rcvbuf=4096)
        assert self.sock is not None and self.sid is not None
        sock, sid = self.sock, self.sid
        n = self.opts.ailoop_slow_chunks if self.opts else 300
        pause = (self.opts.ailoop_slow_read_ms if self.opts else 10.0) / 1000.0
        t0 = time.perf_counter()
        deadline = time.monotonic() + max(self.timeout, n * pause * 3 + 10)
        turn = Turn()
        with self.phase("slow: sendUserMessage"):
            sock.response(sock.send_request("sendUserMessage", {"sessionId": sid, "content": f"/sim chunks {n}"}),
                          deadline)
        try:
            while turn.done is None:
                time.sleep(pause)
                sock.read_turn(sid, turn, t0, deadline, max_frames=1)
        except Exception as exc:
            self.fire("slow: full turn", time.perf_counter() - t0, 0, exc)
            self.drop()
            return
        # The server may merge queued text chunks for a reader that lags (BP-1), so
        # fewer chunk frames than requested is fine; the turn must still end with its
        # final chunk, with seq unbroken (checked by RpcSocket).
        if turn.final_reason != "stop" or not 1 < turn.chunks <= n + 1:
            self.fire("slow: full turn", turn.done, 0,
                      ProtocolViolation(f"{turn.chunks} chunk frames (asked {n}), finish {turn.final_reason}"))
            return
        self.fire("slow: full turn", turn.done, turn.bytes)

"""The oracle: a model of the protocol that watches every frame and records broken promises.

The :class:`Observer` sees every frame the client sends (``on_send``) and receives
(``on_receive``) on every connection, in order. From the sent frames alone it predicts
what the spec requires (which responses, with which ids and error codes; what a session
may send next); from the received frames it checks those predictions and the
invariants of the spec, eagerly, frame by frame:

* every frame validates against spec/protocol.schema.json (jsonschema);
* every response matches exactly one outstanding request (RPC-1), batches answer as
  one array (RPC-6), bad frames get the documented error (RPC-2..5, RPC-7);
* per session: seq gap-free on every connection's stream and in the session's history
  (SEQ-1); ``started`` first (ORD-1), after the startSession response (ORD-2); turn
  output after the sendUserMessage response (ORD-3); chunks in order, one final per
  message, nothing after it (ORD-4); tool calls before the step's ``tool_calls`` final
  (ORD-5); ``ended`` before the stopSession response and nothing after (ORD-6); cancel
  semantics (ORD-7); one terminal final per turn, then ``idle`` (ORD-8);
  ErrorNotification right before the ``error`` final (ORD-9); x-state-machine
  (STATE-1); isolation (ISO-1, ISO-2); tool results (TOOL-1, TOOL-2); pause (PAUSE-1,
  PAUSE-2); replay after attachSession identical to the original, gap-free, then live
  (REPLAY-1..3); idempotency keys (IDEM-1); ping (HB-1); RATE_LIMITED (LIM-1);
* on the simulator: the chunks of each message concatenate to the scripted text.

A request's outcome is judged when its response arrives: the server answers the
requests of a connection in order and queues every notification it emitted before
handling a request ahead of that response, so the model's state at that moment is the
state the server acted on. Liveness (a turn ends, a response comes, released sessions
leave /healthz) is checked by :meth:`Observer.busy` while the harness settles.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from contract_tests import simmodel
from contract_tests.protocol import (
    CODE,
    ERROR_CODES,
    INITIAL_STATUS,
    NOTIFICATION_METHODS,
    PROTOCOL_VERSION,
    REQUEST_METHODS,
    SCHEMA,
    TRANSITIONS,
    id_key,
    is_valid,
    schema_errors,
    valid_request_id,
)
from contract_tests.transcript import Transcript

__all__ = ["Limits", "Observer", "Violation"]

MAX_VIOLATIONS = 40
DEEP = 200
"""Frames nested deeper than this may get -32700 instead (parsers limit nesting; RFC 8259 §9)."""
GRACE_SLACK_S = 0.25
_MISSING = object()
ENDED_REASONS = tuple(
    re.findall(r"`([a-z_]+)`", SCHEMA["$defs"]["SessionStatusParams"]["properties"]["reason"].get("description", ""))
)
"""The documented reasons of `ended` (from SessionStatusParams.reason)."""
RATE_LIMITED = CODE.get("RATE_LIMITED")
IDEMPOTENCY_CONFLICT = CODE.get("IDEMPOTENCY_CONFLICT")
NO_EFFECT = {c for c in (RATE_LIMITED, CODE.get("STORE_UNAVAILABLE")) if c is not None}
"""Errors that may answer any request and mean "nothing was changed, retry later"."""
TURN_LOST = {c for c in (CODE["PROVIDER_TIMEOUT"], CODE.get("SESSION_OWNER_LOST")) if c is not None}
"""Turn failures no script predicts (a slow moment, a lost owner process)."""


class Limits:
    """The server's advertised limits (initialize ``limits``), by spec name."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = dict(raw)

    @classmethod
    def from_initialize(cls, raw: dict[str, Any]) -> Limits:
        return cls(raw)

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)

    @property
    def max_frame_bytes(self) -> int:
        return int(self.raw["maxFrameBytes"])

    @property
    def max_batch_size(self) -> int:
        return int(self.raw["maxBatchSize"])

    @property
    def max_message_chars(self) -> int:
        return int(self.raw["maxMessageChars"])

    @property
    def max_sessions_per_connection(self) -> int:
        return int(self.raw["maxSessionsPerConnection"])

    @property
    def max_tools_per_session(self) -> int:
        return int(self.raw["maxToolsPerSession"])

    @property
    def max_pending_tool_calls(self) -> int | None:
        return self.raw.get("maxPendingToolCalls")

    @property
    def resume_grace_s(self) -> float:
        return float(self.raw.get("resumeGraceMs", 0)) / 1000.0

    @property
    def replay_log_size(self) -> int | None:
        return self.raw.get("replayLogSize")


@dataclass
class Violation:
    req: str
    text: str
    conn: str | None
    index: int

    def __str__(self) -> str:
        where = f"{self.conn} " if self.conn else ""
        return f"[{self.req}] {where}{self.text} (transcript i={self.index})"


# ---------------------------------------------------------------------- expectations
@dataclass
class ExpectedError:
    """A frame or batch member that must get an error with one of ``codes``."""

    id: Any
    codes: frozenset[int]
    req: str
    why: str

    @property
    def key(self) -> tuple[str, str]:
        return id_key(self.id)


@dataclass
class Call:
    """A valid request whose outcome depends on the session model."""

    conn: str
    id: Any
    method: str
    params: dict[str, Any]
    index: int
    sid: str | None = None
    exact: bool = True
    """No other request for this session was outstanding when it was sent."""
    was_live: bool = False
    was_paused: bool = False
    turn_at_send: str | None = None
    notes_at_send: int = 0
    status_notes_at_send: int = 0
    paused_notes_at_send: int = 0
    sent_at: float = 0.0
    consumed: bool = False
    """resumeSession: a status notification leaving `paused` was matched to it."""
    in_batch: bool = False
    """Sent in a batch: the notifications of later members precede its response."""

    @property
    def key(self) -> tuple[str, str]:
        return id_key(self.id)


Expectation = ExpectedError | Call


@dataclass
class Unit:
    """What one sent frame must be answered with."""

    members: list[Expectation]
    batch: bool
    index: int
    alt_parse_error: bool = False
    surrogates: bool = False
    """The frame holds a lone UTF-16 surrogate escape (valid JSON, not valid Unicode,
    RFC 8259 §8.2): any error answer is acceptable, a dropped connection is not."""


# ---------------------------------------------------------------------- session model
@dataclass
class ToolCallInfo:
    id: str
    name: str
    arguments: Any
    turn: str
    step: int
    answered: bool | None = False
    """None: a result was sent but its response was lost with the connection."""


@dataclass
class Message:
    id: str
    turn: str
    step: int
    chunks: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None
    tool_calls: list[str] = field(default_factory=list)


@dataclass
class Turn:
    id: str
    content: str | None
    script: simmodel.Script | None
    step: int = 0
    phase: str = "pending"
    """pending (no output yet), streaming, awaiting."""
    step_calls: list[str] = field(default_factory=list)
    step_closed: bool = False
    answers: dict[int, list[tuple[str, Any, str, bool]]] = field(default_factory=dict)
    """Successful tool results by model step, in the order they were answered."""
    messages: list[str] = field(default_factory=list)
    ended: bool = False
    end_reason: str | None = None
    error_code: int | None = None
    uncertain: bool = False
    """A tool result of this turn was lost with its connection: no text prediction."""
    streamed: bool = False
    """A `streaming` status of this turn was seen."""
    cancel_deferred: bool = False
    """Cancelled in the batch that started it: its notifications follow the batch (ORD-7)."""


@dataclass
class Session:
    id: str
    conn: str | None
    """The connection it is attached to; None while detached."""
    tools: list[str]
    token: str | None = None
    lenient: bool = False
    """Unpredictable (started or driven by client notifications): structure checks only."""
    seq: int = 0
    """Highest seq processed (from any connection)."""
    history: dict[int, tuple[str, str]] = field(default_factory=dict)
    status: str | None = None
    ended: bool = False
    stop_responded: bool = False
    released: bool = False
    detached_until: float | None = None
    detached_since: float | None = None
    turn: Turn | None = None
    turns: dict[str, Turn] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    calls: dict[str, ToolCallInfo] = field(default_factory=dict)
    expect_after_terminal: str | None = None
    expect_error_final: str | None = None
    pending: Counter[str] = field(default_factory=Counter)
    """Outstanding requests for this session, by method."""
    lost: Counter[str] = field(default_factory=Counter)
    """Requests whose responses were lost with their connection (effect unknown)."""
    lost_sends: list[str] = field(default_factory=list)
    """Contents of sendUserMessage requests whose responses were lost."""
    attaching: int = 0
    """attachSession requests in flight for this session (from any connection)."""
    resumes: list[Any] = field(default_factory=list)
    """resumeSession requests in flight (each may leave `paused` once)."""
    idem: OrderedDict[str, tuple[str, str, Any]] = field(default_factory=OrderedDict)
    """idempotencyKey -> (method, params fingerprint, first result)."""
    notes: int = 0
    status_notes: int = 0
    paused_notes: int = 0
    resync: bool = False
    """The client skipped notifications (attach past its last seq): the next status
    need not follow from the last one seen."""

    @property
    def live(self) -> bool:
        return not (self.ended or self.stop_responded or self.released)

    @property
    def detached(self) -> bool:
        return self.live and self.conn is None


@dataclass
class ConnState:
    name: str
    closing: bool = False
    closed: bool = False
    close_code: int | None = None
    expect_close: frozenset[int] | None = None
    units: list[Unit] = field(default_factory=list)
    anon_starts: int = 0
    stream_seq: dict[str, int] = field(default_factory=dict)
    """Last seq of each session received on this connection."""
    taken_over: dict[str, int] = field(default_factory=dict)
    """Sessions attached elsewhere: the last seq this connection may still receive."""


# ---------------------------------------------------------------------- observer
class Observer:
    def __init__(self, transcript: Transcript, limits: Limits, *, simulator: bool = True) -> None:
        self.transcript = transcript
        self.limits = limits
        self.simulator = simulator
        self.violations: list[Violation] = []
        self.conns: dict[str, ConnState] = {}
        self.sessions: dict[str, Session] = {}
        self.phantoms: list[float] = []
        """Deadlines of sessions a lost startSession response may have created."""

    # ------------------------------------------------------------------ helpers
    def violate(self, req: str, text: str, conn: str | None = None, index: int | None = None) -> None:
        if index is None:
            index = len(self.transcript.entries) - 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(Violation(req, text, conn, index))
            self.transcript.add(conn, "violation", req=req, text=text)

    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.live and not self._expired(s)]

    def _expired(self, s: Session, slack: float = 0.0) -> bool:
        return s.detached_until is not None and s.conn is None and time.monotonic() > s.detached_until + slack

    def health_expectation(self) -> tuple[int, int, int]:
        """(attached live sessions, detached sessions certainly kept, detached possibly kept)."""
        now = time.monotonic()
        attached = certain = possible = 0
        for s in self.sessions.values():
            if not s.live:
                continue
            if s.conn is not None:
                attached += 1
            elif s.detached_until is not None:
                if now < s.detached_until - GRACE_SLACK_S:
                    certain += 1
                if now < s.detached_until + GRACE_SLACK_S:
                    possible += 1
        possible += sum(1 for d in self.phantoms if now < d)
        return attached, certain, possible

    def owned(self, conn: str, sid: Any) -> Session | None:
        s = self.sessions.get(sid) if isinstance(sid, str) else None
        return s if s is not None and s.conn == conn else None

    # ------------------------------------------------------------------ connections
    def on_open(self, conn: str) -> None:
        self.conns[conn] = ConnState(conn)

    def on_client_close(self, conn: str) -> None:
        c = self.conns[conn]
        c.closing = True
        for s in self.sessions.values():
            if s.conn == conn and s.live and s.turn is not None:
                s.pending["__close__"] += 1

    def on_closed(self, conn: str, code: int | None, index: int) -> None:
        c = self.conns[conn]
        c.closed = True
        c.close_code = code
        if not c.closing:
            legit = (c.expect_close is not None and code in c.expect_close) or code == 1008 or code == 1001
            if code == 1000 and (self.limits.get("idleTimeoutMs") or 0) > 0:
                legit = True
            if not legit:
                expected = f"expected close {sorted(c.expect_close)}" if c.expect_close else "nothing asked for a close"
                req = "RPC-7" if c.expect_close else "RPC-2"
                self.violate(req, f"server closed the connection with code {code} ({expected})", conn, index)
        grace = self.limits.resume_grace_s
        now = time.monotonic()
        for u in c.units:
            for m in u.members:
                if not isinstance(m, Call):
                    continue
                self._forget_call(m)
                if m.method == "startSession":
                    self.phantoms.append(now + grace + GRACE_SLACK_S)
                ls = self.sessions.get(m.sid) if m.sid else None
                if ls is None:
                    continue
                ls.lost[m.method] += 1
                if m.method == "sendUserMessage":
                    ls.lost_sends.append(m.params["content"])
                if m.method == "provideToolResult":
                    info = ls.calls.get(m.params["toolCallId"])
                    if info is not None and info.answered is False:
                        info.answered = None
                        t = ls.turns.get(info.turn)
                        if t is not None:
                            t.uncertain = True
        c.units.clear()
        detach = grace > 0 and code != 1001
        for s in self.sessions.values():
            if s.conn == conn and s.live:
                if detach:
                    s.conn = None
                    s.detached_since = now
                    s.detached_until = now + grace
                else:
                    s.released = True

    # ------------------------------------------------------------------ sending
    def on_send(self, conn: str, data: str | bytes, kind: str, index: int) -> None:
        """Classify a frame the client is sending and register what must answer it."""
        c = self.conns[conn]
        if kind == "binary":
            c.units.append(Unit([ExpectedError(None, frozenset({CODE["INVALID_REQUEST"]}), "RPC-7", "binary frame")], False, index))
            return
        if kind == "invalid_utf8":
            c.expect_close = frozenset({1007})
            return
        assert isinstance(data, str)
        if len(data.encode("utf-8", "surrogatepass")) > self.limits.max_frame_bytes:
            c.expect_close = frozenset({1009})
            return
        try:
            value = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            c.units.append(Unit([ExpectedError(None, frozenset({CODE["PARSE_ERROR"]}), "RPC-2", "not JSON")], False, index))
            return
        alt = _depth(value) > DEEP
        surrogates = _has_surrogate(value)
        invalid = CODE["INVALID_REQUEST"]
        if isinstance(value, list):
            if not value:
                c.units.append(Unit([ExpectedError(None, frozenset({invalid}), "RPC-6", "empty batch")], False, index, alt))
                return
            if len(value) > self.limits.max_batch_size:
                c.units.append(Unit([ExpectedError(None, frozenset({invalid}), "RPC-6", "batch over maxBatchSize")], False, index, alt))
                return
            members = [m for m in (self._member(c, v, index) for v in value) if m is not None]
            for m in members:
                if isinstance(m, Call):
                    m.in_batch = True
            if members:
                c.units.append(Unit(members, True, index, alt, surrogates))
            return
        member = self._member(c, value, index)
        if member is not None:
            c.units.append(Unit([member], False, index, alt, surrogates))

    def _member(self, c: ConnState, v: Any, index: int) -> Expectation | None:
        invalid = frozenset({CODE["INVALID_REQUEST"]})
        if not isinstance(v, dict):
            return ExpectedError(None, invalid, "RPC-3", "not an object")
        has_id = "id" in v
        rid = v["id"] if has_id and valid_request_id(v["id"]) else None
        if has_id and not valid_request_id(v["id"]):
            return ExpectedError(None, invalid, "RPC-3", "id of a wrong type")
        if not (is_valid("JsonRpcRequest", v) or is_valid("JsonRpcNotification", v)):
            return ExpectedError(rid, invalid, "RPC-3", "not a valid request object")
        method = v["method"]
        params = v.get("params", _MISSING)
        if not has_id:
            self._client_notification(c, method, params)
            return None
        if method not in REQUEST_METHODS:
            return ExpectedError(rid, frozenset({CODE["METHOD_NOT_FOUND"]}), "RPC-4", f"unknown method {method[:40]!r}")
        if not _params_valid(method, params):
            return ExpectedError(rid, frozenset({CODE["INVALID_PARAMS"]}), "RPC-5", "params do not match the schema")
        p: dict[str, Any] = {} if params is _MISSING else params
        call = Call(c.name, rid, method, p, index, sent_at=time.monotonic())
        sid = p.get("sessionId")
        if isinstance(sid, str):
            call.sid = sid
            s = self.sessions.get(sid)
            if s is not None and method == "attachSession":
                s.attaching += 1
            if s is not None and s.conn == c.name:
                call.exact = sum(s.pending.values()) == 0
                call.was_live = s.live
                call.was_paused = s.status == "paused"
                call.turn_at_send = s.turn.id if s.turn else None
                call.notes_at_send = s.notes
                call.status_notes_at_send = s.status_notes
                call.paused_notes_at_send = s.paused_notes
            if s is not None:
                s.pending[method] += 1
                if method == "resumeSession":
                    s.resumes.append(call)
        return call

    def _client_notification(self, c: ConnState, method: str, params: Any) -> None:
        """A request without id: no response ever (RPC-1), but it may still act."""
        if method not in REQUEST_METHODS or not _params_valid(method, params):
            return
        p = {} if params is _MISSING else params
        if method == "startSession":
            c.anon_starts += 1
        s = self.owned(c.name, p.get("sessionId"))
        if s is not None and method not in ("initialize", "ping"):
            s.lenient = True

    # ------------------------------------------------------------------ receiving
    def on_receive(self, conn: str, data: str | bytes, index: int) -> None:
        if isinstance(data, bytes):
            self.violate("SCHEMA", "server sent a binary frame (the protocol is text frames)", conn, index)
            return
        try:
            msg = json.loads(data)
        except ValueError:
            self.violate("SCHEMA", "server sent a frame that is not JSON", conn, index)
            return
        if isinstance(msg, list):
            for e in schema_errors("JsonRpcBatchResponse", msg)[:3]:
                self.violate("SCHEMA", e, conn, index)
            if msg and all(isinstance(m, dict) for m in msg):
                self._batch_response(conn, msg, index)
            return
        if not isinstance(msg, dict):
            self.violate("SCHEMA", "server frame is neither an object nor an array", conn, index)
            return
        if "method" in msg:
            method = msg.get("method")
            spec = NOTIFICATION_METHODS.get(method) if isinstance(method, str) else None
            if spec is None:
                self.violate("SCHEMA", f"server sent unknown method {method!r}", conn, index)
                return
            errs = schema_errors(spec["message"], msg)
            for e in errs[:3]:
                self.violate("SCHEMA", e, conn, index)
            if not errs:
                self._notification(conn, method, msg["params"], index)
            return
        errs = schema_errors("JsonRpcResponse", msg)
        for e in errs[:3]:
            self.violate("SCHEMA", e, conn, index)
        if not errs:
            self._single_response(conn, msg, index)

    # ------------------------------------------------------------------ responses
    def _single_response(self, conn: str, resp: dict[str, Any], index: int) -> None:
        c = self.conns[conn]
        key = id_key(resp["id"])
        for u in c.units:
            lenient = (u.alt_parse_error and resp.get("error", {}).get("code") == CODE["PARSE_ERROR"]) or (
                u.surrogates and "error" in resp and not any(m.key == key for m in u.members)
            )
            if lenient and resp["id"] is None:
                c.units.remove(u)
                for m in u.members:
                    self._forget_call(m)
                return
            for m in u.members:
                if m.key == key:
                    if u.batch:
                        self.violate("RPC-6", f"response to batch member id {resp['id']!r} sent outside the batch's array", conn, index)
                    u.members.remove(m)
                    if not u.members:
                        c.units.remove(u)
                    if u.surrogates and "error" in resp:
                        self._forget_call(m)
                        return  # a lone surrogate may be refused with any error
                    self._check(conn, m, resp, index)
                    return
        self.violate("RPC-1", f"response with id {resp['id']!r} matches no outstanding request", conn, index)

    def _batch_response(self, conn: str, resps: list[dict[str, Any]], index: int) -> None:
        c = self.conns[conn]
        got = Counter(id_key(r.get("id")) for r in resps)
        unit = next((u for u in c.units if u.batch and Counter(m.key for m in u.members) == got), None)
        if unit is None:
            unit = next((u for u in c.units if u.batch and any(m.key in got for m in u.members)), None)
            if unit is None:
                self.violate("RPC-6", f"batch response (ids {[r.get('id') for r in resps]}) matches no batch sent", conn, index)
                return
            want = [m.id for m in unit.members]
            self.violate("RPC-6", f"batch response has ids {[r.get('id') for r in resps]}, the batch needs one response per request: {want}", conn, index)
        c.units.remove(unit)
        members = list(unit.members)
        for r in resps:
            k = id_key(r.get("id"))
            m = next((m for m in members if m.key == k), None)
            if m is not None:
                members.remove(m)
                self._check(conn, m, r, index)
        for m in members:
            self._forget_call(m)

    def _forget_call(self, m: Expectation) -> None:
        if isinstance(m, Call) and m.sid:
            s = self.sessions.get(m.sid)
            if s is not None:
                s.pending[m.method] -= 1
                if s.pending[m.method] <= 0:
                    del s.pending[m.method]
                if m.method == "attachSession":
                    s.attaching = max(0, s.attaching - 1)
                if m in s.resumes:
                    s.resumes.remove(m)

    def _check(self, conn: str, exp: Expectation, resp: dict[str, Any], index: int) -> None:
        err = resp.get("error")
        if err is not None:
            self._check_error_object(conn, err, index)
        if isinstance(exp, ExpectedError):
            if err is None:
                self.violate(exp.req, f"{exp.why}: expected error {sorted(exp.codes)}, got a result", conn, index)
            elif err["code"] not in exp.codes and err["code"] not in NO_EFFECT:
                self.violate(exp.req, f"{exp.why}: expected error {sorted(exp.codes)}, got {err['code']}", conn, index)
            return
        self._forget_call(exp)
        if err is not None and err["code"] in NO_EFFECT:
            return  # LIM-1 / store unavailable: refused, nothing changed
        if err is None:
            errs = schema_errors(REQUEST_METHODS[exp.method]["result"], resp["result"])
            for e in errs[:3]:
                self.violate("SCHEMA", f"{exp.method} result: {e}", conn, index)
            if errs:
                return
        handler = getattr(self, f"_on_{exp.method}", None)
        if handler is not None:
            handler(conn, exp, err, resp.get("result"), index)

    def _check_error_object(self, conn: str, err: dict[str, Any], index: int) -> None:
        code = err["code"]
        doc = ERROR_CODES.get(code)
        if doc is None:
            self.violate("SCHEMA", f"error code {code} is not in x-error-codes", conn, index)
            return
        if code == CODE["INTERNAL_ERROR"]:
            self.violate("BUG", f"INTERNAL_ERROR ({err.get('message')!r}): the spec calls -32603 a server bug", conn, index)
        data = err.get("data")
        if -32099 <= code <= -32000:
            for e in schema_errors("ErrorData", data)[:2]:
                self.violate("SCHEMA", f"error {code} data: {e}", conn, index)
        if isinstance(data, dict) and isinstance(data.get("retryable"), bool) and data["retryable"] != doc["retryable"]:
            self.violate("SCHEMA", f"error {code} data.retryable {data['retryable']} but x-error-codes says {doc['retryable']}", conn, index)
        if code == RATE_LIMITED and not (isinstance(data, dict) and isinstance(data.get("retryAfterMs"), int)):
            self.violate("LIM-1", "RATE_LIMITED without data.retryAfterMs", conn, index)

    def _expect_code(self, conn: str, err: dict[str, Any] | None, want: int | None, req: str, why: str, index: int) -> bool:
        """Check the outcome: ``want`` None means success. Returns True when as expected."""
        got = None if err is None else err["code"]
        if got == want:
            return True
        if got == CODE["LIMIT_REACHED"] and ((err or {}).get("data") or {}).get("limit") in ("maxSessions", "maxConnections"):
            return False  # a server-wide limit the client cannot see
        desc = "success" if want is None else f"error {want}"
        self.violate(req, f"{why}: expected {desc}, got {'success' if got is None else f'error {got}'}", conn, index)
        return False

    def _session_for(self, conn: str, call: Call) -> tuple[Session | None, bool, str]:
        """For session methods: (the session if this connection may act on it, lenient?, tag).

        ``None`` means SESSION_NOT_FOUND is the only right answer."""
        s = self.sessions.get(call.sid) if call.sid else None
        if s is None:
            return None, False, "RPC-1"
        if call.in_batch and call.was_live:
            return s, True, "RPC-1"  # a later member of the batch may have moved it on
        if s.conn != conn or not s.live:
            return None, False, ("ISO-2" if s.conn is not None and s.conn != conn else "RPC-1")
        # In a batch every member is handled before the one array of responses: the
        # state at response time may include later members' effects.
        return s, s.lenient or s.attaching > 0 or call.in_batch, "RPC-1"

    def _not_found(self, conn: str, call: Call, err: Any, tag: str, index: int) -> None:
        s = self.sessions.get(call.sid) if call.sid else None
        if s is not None and (s.attaching > 0 or s.lenient) and err is None:
            return  # an attach in flight may have moved it here
        self._expect_code(conn, err, CODE["SESSION_NOT_FOUND"], tag, f"{call.method} for a session this connection does not hold", index)

    def _idempotent(self, conn: str, s: Session, call: Call, err: Any, res: Any, index: int) -> bool:
        """IDEM-1: a repeated idempotencyKey. Returns True when the request was a repeat."""
        key = call.params.get("idempotencyKey")
        if key is None or key not in s.idem:
            return False
        method, fingerprint, first = s.idem[key]
        if method != call.method or fingerprint != _fingerprint(call.params):
            self._expect_code(conn, err, IDEMPOTENCY_CONFLICT, "IDEM-1", f"idempotencyKey {key!r} reused with different params", index)
        elif self._expect_code(conn, err, None, "IDEM-1", f"repeat of idempotencyKey {key!r}", index) and res != first:
            self.violate("IDEM-1", f"repeat of idempotencyKey {key!r} answered {res}, the first answer was {first}", conn, index)
        return True

    def _remember(self, s: Session, call: Call, res: Any) -> None:
        key = call.params.get("idempotencyKey")
        if key is not None:
            s.idem[key] = (call.method, _fingerprint(call.params), res)
            while len(s.idem) > 256:
                s.idem.popitem(last=False)

    # --- per method -------------------------------------------------------------
    def _on_initialize(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        version = call.params.get("protocolVersion")
        want = None if version in (None, PROTOCOL_VERSION) else CODE["UNSUPPORTED_PROTOCOL_VERSION"]
        if self._expect_code(conn, err, want, "RPC-1", f"initialize(protocolVersion={version})", index) and res:
            if res["protocolVersion"] != PROTOCOL_VERSION:
                self.violate("RPC-1", f"initialize answered protocolVersion {res['protocolVersion']}, spec is {PROTOCOL_VERSION}", conn, index)

    def _on_ping(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        if self._expect_code(conn, err, None, "HB-1", "ping", index):
            if "data" in call.params and res.get("data") != call.params["data"]:
                self.violate("HB-1", f"ping data {call.params['data']!r} echoed as {res.get('data')!r}", conn, index)
            if "data" not in call.params and "data" in res:
                self.violate("HB-1", "ping without data answered with data", conn, index)

    def _on_startSession(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        tools = [t["function"]["name"] for t in call.params.get("tools") or []]
        owned = sum(1 for s in self.sessions.values() if s.conn == conn and s.live)
        if err is not None:
            code = err["code"]
            if code == CODE["LIMIT_REACHED"]:
                limit = (err.get("data") or {}).get("limit")
                if limit in ("maxSessions", "maxConnections"):
                    return
                if limit == "maxSessionsPerConnection" and owned >= self.limits.max_sessions_per_connection:
                    return
                if limit == "maxToolsPerSession" and len(tools) > self.limits.max_tools_per_session:
                    return
            if code == CODE["INVALID_PARAMS"] and len(set(tools)) != len(tools):
                return  # duplicate tool names: refused (not stated by the spec, tolerated)
            self.violate("RPC-1", f"startSession refused with {code} ({err.get('message')!r}) for schema-valid params", conn, index)
            return
        if owned >= self.limits.max_sessions_per_connection:
            self.violate("RPC-1", f"startSession accepted a session over maxSessionsPerConnection ({owned} held)", conn, index)
        if len(tools) > self.limits.max_tools_per_session:
            self.violate("RPC-1", f"startSession accepted {len(tools)} tools over maxToolsPerSession", conn, index)
        sid = res["sessionId"]
        if sid in self.sessions:
            self.violate("ISO-1", f"startSession returned session id {sid} that already exists", conn, index)
            return
        if res["tools"] != tools:
            self.violate("RPC-1", f"startSession result tools {res['tools']} != declared {tools}", conn, index)
        if res["status"] != INITIAL_STATUS:
            self.violate("STATE-1", f"startSession result status {res['status']!r}, expected {INITIAL_STATUS!r}", conn, index)
        self.sessions[sid] = Session(sid, conn, tools, token=res.get("resumeToken"))
        self.conns[conn].stream_seq[sid] = 0

    def _on_attachSession(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        p = call.params
        s = self.sessions.get(p["sessionId"])
        if s is not None:
            s.attaching = max(0, s.attaching - 1)
        not_found = CODE["SESSION_NOT_FOUND"]
        if s is None or s.token is None or p["resumeToken"] != s.token:
            if s is not None and s.token is None and s.lenient:
                return  # a session started by a client notification: its token is unknown
            self._expect_code(conn, err, not_found, "REPLAY-3", "attachSession with an unknown session or a wrong resumeToken", index)
            return
        if not s.live:
            self._expect_code(conn, err, not_found, "REPLAY-4", "attachSession of a session that ended", index)
            return
        if s.detached:
            if self._expired(s, GRACE_SLACK_S):
                if self._expect_code(conn, err, not_found, "REPLAY-4", f"attachSession {time.monotonic() - (s.detached_since or 0):.2f}s after the disconnect (resumeGraceMs {self.limits.get('resumeGraceMs')})", index):
                    s.released = True
                return
            if self._expired(s, -GRACE_SLACK_S) and err is not None and err["code"] == not_found:
                s.released = True  # the grace period ran out about now
                return
        after = p["afterSeq"]
        size = self.limits.replay_log_size
        known = s.conn is not None and s.turn is None and not s.pending.get("sendUserMessage") and not s.lenient
        if err is not None:
            code = err["code"]
            if code == CODE.get("REPLAY_WINDOW_EXPIRED"):
                data = err.get("data") or {}
                snap = data.get("snapshot")
                for e in schema_errors("SessionSnapshot", snap)[:3]:
                    self.violate("REPLAY-2", f"REPLAY_WINDOW_EXPIRED snapshot: {e}", conn, index)
                oldest = data.get("oldestSeq")
                if not isinstance(oldest, int) or after + 1 >= oldest:
                    self.violate("REPLAY-2", f"REPLAY_WINDOW_EXPIRED for afterSeq {after} but oldestSeq is {oldest!r}", conn, index)
                if isinstance(snap, dict):
                    if snap.get("lastSeq", 0) < s.seq:
                        self.violate("REPLAY-2", f"snapshot lastSeq {snap.get('lastSeq')} is older than seq {s.seq} already received", conn, index)
                    if size and isinstance(oldest, int) and snap.get("lastSeq", 0) - oldest + 1 > size:
                        self.violate("REPLAY-2", f"replay log spans seq {oldest}..{snap.get('lastSeq')}, more than replayLogSize {size}", conn, index)
                if known and size and s.seq - after <= size:
                    self.violate("REPLAY-2", f"REPLAY_WINDOW_EXPIRED although only {s.seq - after} notifications follow afterSeq {after} (replayLogSize {size})", conn, index)
                return
            if code == CODE["INVALID_PARAMS"] and after > s.seq:
                return  # maybe beyond the last seq (the client cannot always tell)
            if code == CODE["LIMIT_REACHED"]:
                return
            self.violate("REPLAY-1", f"attachSession refused with {code} ({err.get('message')!r})", conn, index)
            return
        if known and size and s.seq - after > size:
            self.violate("REPLAY-2", f"attachSession from afterSeq {after} succeeded, but {s.seq - after} notifications followed it and replayLogSize is {size}", conn, index)
        if res["lastSeq"] < s.seq:
            self.violate("REPLAY-1", f"attachSession lastSeq {res['lastSeq']} is below seq {s.seq} already received", conn, index)
        if res["replayed"] != res["lastSeq"] - after:
            self.violate("REPLAY-1", f"attachSession replayed {res['replayed']}, lastSeq {res['lastSeq']} - afterSeq {after} = {res['lastSeq'] - after}", conn, index)
        if after > s.seq:
            # The client skipped notifications on purpose (e.g. from a snapshot after
            # REPLAY_WINDOW_EXPIRED): structure checks only from here on.
            s.seq = after
            s.lenient = s.resync = True
            s.expect_after_terminal = s.expect_error_final = None
            if s.turn is not None:
                s.turn.script, s.turn.uncertain = None, True
        old = s.conn
        if old is not None and old != conn:
            self.conns[old].taken_over[s.id] = res["lastSeq"]
        s.conn = conn
        s.detached_until = s.detached_since = None
        s.pending.pop("__close__", None)
        self.conns[conn].stream_seq[s.id] = after
        self.conns[conn].taken_over.pop(s.id, None)

    def _on_sendUserMessage(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        content = call.params["content"]
        s, lenient, tag = self._session_for(conn, call)
        if len(content) > self.limits.max_message_chars:
            if s is None and err is not None and err["code"] == CODE["SESSION_NOT_FOUND"]:
                return  # either check may come first
            self._expect_code(conn, err, CODE["INVALID_PARAMS"], "RPC-5", f"content of {len(content)} chars > maxMessageChars", index)
            return
        if s is None:
            self._not_found(conn, call, err, tag, index)
            return
        if self._idempotent(conn, s, call, err, res, index):
            return
        if lenient:
            if err is None:
                self._register_turn(s, res["turnId"], content, conn, index)
                self._remember(s, call, res)
            return
        if s.status == "paused":
            if self._expect_code(conn, err, CODE["INVALID_SESSION_STATE"], "PAUSE-2", "sendUserMessage while paused", index):
                if (err.get("data") or {}).get("status") != "paused":
                    self.violate("PAUSE-2", f"INVALID_SESSION_STATE data.status {(err.get('data') or {}).get('status')!r}, expected 'paused'", conn, index)
            return
        if s.turn is not None:
            self._expect_code(conn, err, CODE["INVALID_SESSION_STATE"], "ORD-8", f"sendUserMessage while turn {s.turn.id} is in flight", index)
            return
        if self._expect_code(conn, err, None, "RPC-1", "sendUserMessage to an idle session", index):
            self._register_turn(s, res["turnId"], content, conn, index)
            self._remember(s, call, res)

    def _register_turn(self, s: Session, turn_id: str, content: str | None, conn: str, index: int) -> None:
        existing = s.turns.get(turn_id)
        if existing is not None and existing.content is not None:
            self.violate("ORD-3", f"turnId {turn_id} was already used in this session", conn, index)
            return
        script = simmodel.parse(content) if (content is not None and self.simulator and not s.lenient) else None
        if existing is not None:  # output arrived before the response (already reported)
            existing.content, existing.script = content, script
            return
        t = Turn(turn_id, content, script)
        s.turns[turn_id] = t
        s.turn = t

    def _on_provideToolResult(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        s, lenient, tag = self._session_for(conn, call)
        if s is None:
            self._not_found(conn, call, err, tag, index)
            return
        if self._idempotent(conn, s, call, err, res, index):
            return
        tc_id = call.params["toolCallId"]
        info = s.calls.get(tc_id)
        t = s.turn
        awaiting = info is not None and t is not None and info.turn == t.id and info.step == t.step and tc_id in t.step_calls and not info.answered
        if lenient or (info is not None and info.answered is None):
            if info is not None and (err is None or err["code"] == CODE["UNKNOWN_TOOL_CALL"]):
                was, info.answered = info.answered, True
                if err is None:
                    self._remember(s, call, res)
                    owner = s.turns.get(info.turn)
                    if owner is not None and was is not True:
                        owner.answers.setdefault(info.step, []).append(
                            (info.name, call.params["result"], tc_id, bool(call.params.get("isError", False)))
                        )
            return
        if not awaiting:
            why = "unknown" if info is None else ("already answered" if info.answered else "of an ended turn or step")
            self._expect_code(conn, err, CODE["UNKNOWN_TOOL_CALL"], "TOOL-2", f"provideToolResult for a tool call id {why}", index)
            return
        if not self._expect_code(conn, err, None, "TOOL-2", "provideToolResult for a tool call awaiting its result", index):
            return
        assert info is not None and t is not None
        info.answered = True
        self._remember(s, call, res)
        t.answers.setdefault(info.step, []).append((info.name, call.params["result"], tc_id, bool(call.params.get("isError", False))))
        total = len(t.step_calls)
        if not t.step_closed and t.step == 0 and t.script is not None and not t.script.unknown:
            total = max(total, len(t.script.tools))
        want = total - sum(1 for cid in t.step_calls if s.calls[cid].answered)
        if res["pendingToolCalls"] != want and not t.uncertain:
            self.violate(
                "TOOL-1",
                f"pendingToolCalls {res['pendingToolCalls']}, but {want} tool call(s) of the step still wait "
                f"(step has {total} scripted calls, {len(t.step_calls)} announced so far)",
                conn,
                index,
            )

    def _on_stopSession(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        s = self.sessions.get(call.sid) if call.sid else None
        if s is None or s.conn != conn:
            self._not_found(conn, call, err, "ISO-2" if s is not None and s.conn else "RPC-1", index)
            return
        if err is not None:
            if err["code"] == CODE["SESSION_NOT_FOUND"] and (not call.was_live or not call.exact or s.lenient or not s.live):
                return
            self.violate("ORD-6", f"stopSession of a live session refused with {err['code']}", conn, index)
            return
        if s.stop_responded or (not call.was_live and call.exact and not s.lenient):
            self.violate("ORD-6", "stopSession of an ended session succeeded (expected SESSION_NOT_FOUND)", conn, index)
        if not s.ended:
            self.violate("ORD-6", "stopSession response arrived before SessionStatusNotification `ended`", conn, index)
        s.ended = True
        s.stop_responded = True

    def _on_pauseSession(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        s, lenient, tag = self._session_for(conn, call)
        if s is None:
            self._not_found(conn, call, err, tag, index)
            return
        if lenient or not self._expect_code(conn, err, None, "PAUSE-1", "pauseSession of a live session", index):
            return
        if s.status != "paused":
            self.violate("PAUSE-1", "pauseSession response arrived before SessionStatusNotification `paused`", conn, index)
        if call.exact:
            sent = s.paused_notes - call.paused_notes_at_send
            want = 0 if call.was_paused else 1
            if sent != want:
                self.violate("PAUSE-1", f"pauseSession ({'already paused' if call.was_paused else 'not paused'}) sent {sent} `paused` notification(s), expected {want}", conn, index)

    def _on_resumeSession(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        s, lenient, tag = self._session_for(conn, call)
        if s is None:
            self._not_found(conn, call, err, tag, index)
            return
        if lenient or not self._expect_code(conn, err, None, "PAUSE-1", "resumeSession of a live session", index):
            return
        if s.status == "paused":
            self.violate("PAUSE-1", "resumeSession answered but no status notification left `paused` before it", conn, index)
        if res["status"] != s.status:
            self.violate("STATE-1", f"resumeSession result status {res['status']!r}, last notified status {s.status!r}", conn, index)
        if call.exact:
            sent = s.status_notes - call.status_notes_at_send
            want = 1 if call.was_paused else 0
            if sent != want:
                self.violate("PAUSE-1", f"resumeSession ({'paused' if call.was_paused else 'not paused'}) sent {sent} status notification(s), expected {want}", conn, index)

    def _on_cancelTurn(self, conn: str, call: Call, err: Any, res: Any, index: int) -> None:
        s, lenient, tag = self._session_for(conn, call)
        if s is None:
            self._not_found(conn, call, err, tag, index)
            return
        if call.in_batch and err is None and res["cancelled"]:
            t = s.turns.get(res["turnId"]) if res["turnId"] else None
            if t is not None and not t.ended:
                t.cancel_deferred = True  # ORD-7: started in this batch, ends after its answer
        if lenient or not self._expect_code(conn, err, None, "ORD-7", "cancelTurn is never an error", index):
            return
        if res["cancelled"]:
            t = s.turns.get(res["turnId"]) if res["turnId"] else None
            if t is None:
                self.violate("ORD-7", f"cancelTurn cancelled unknown turn {res['turnId']!r}", conn, index)
            elif not t.ended or t.end_reason != "cancelled":
                self.violate("ORD-7", f"cancelTurn answered cancelled for turn {t.id}, whose final chunk before the response was {t.end_reason!r}", conn, index)
            elif s.status not in ("idle", "paused"):
                self.violate("ORD-7", f"cancelTurn answered before status `idle` (status is {s.status!r})", conn, index)
        else:
            if res["turnId"] is not None:
                self.violate("ORD-7", "cancelTurn with cancelled false must have turnId null", conn, index)
            if s.turn is not None:
                self.violate("ORD-7", f"cancelTurn answered cancelled false while turn {s.turn.id} is in flight", conn, index)
            if call.exact and call.turn_at_send is None and s.notes != call.notes_at_send:
                self.violate("ORD-7", "cancelTurn with nothing in flight sent notifications", conn, index)

    # ------------------------------------------------------------------ notifications
    def _notification(self, conn: str, method: str, p: dict[str, Any], index: int) -> None:
        c = self.conns[conn]
        sid = p["sessionId"]
        s = self.sessions.get(sid)
        if s is None:
            if c.anon_starts and method == "SessionStatusNotification" and p["status"] == INITIAL_STATUS and p["seq"] == 1:
                c.anon_starts -= 1
            else:
                starting = any(isinstance(m, Call) and m.method == "startSession" for u in c.units for m in u.members)
                if starting:
                    self.violate("ORD-2", f"notification of session {sid} before the startSession response", conn, index)
                else:
                    self.violate("ISO-1", f"notification of session {sid}, which this connection never started", conn, index)
            s = self.sessions[sid] = Session(sid, conn, [], lenient=True)
            c.stream_seq[sid] = 0
        seq = p["seq"]
        if s.conn != conn:
            limit = c.taken_over.get(sid)
            if limit is None or seq > limit:
                owner = s.conn or "nobody (detached)"
                self.violate("ISO-1", f"{_describe(method, p)} of session {sid} (seq {seq}, attached to {owner}) reached {conn}", conn, index)
                return
        last = c.stream_seq.get(sid)
        if last is None:
            self.violate("ISO-1", f"{_describe(method, p)} of session {sid} on {conn}, which never held it", conn, index)
            last = seq - 1
        if seq != last + 1:
            self.violate("SEQ-1", f"session {sid}: seq {seq} follows seq {last} on {conn} (expected {last + 1})", conn, index)
        c.stream_seq[sid] = seq
        fingerprint = _fingerprint({"m": method, "p": p})
        if seq <= s.seq:
            original = s.history.get(seq)
            if original is not None and original != (method, fingerprint):
                self.violate("REPLAY-1", f"seq {seq} of session {sid} replayed as {_describe(method, p)}, different from the original", conn, index)
            return
        if s.stop_responded:
            self.violate("ORD-6", f"{method} of session {sid} after the stopSession response", conn, index)
            return
        if s.ended:
            self.violate("ORD-6", f"{method} of session {sid} after `ended`", conn, index)
            return
        if seq != s.seq + 1:
            self.violate("SEQ-1", f"session {sid}: seq {seq} follows seq {s.seq} in the session's history", conn, index)
        s.seq = seq
        s.history[seq] = (method, fingerprint)
        s.notes += 1
        if s.expect_error_final is not None:
            ok = method == "AIMessageChunkNotification" and p["isFinal"] and p.get("finishReason") == "error" and p["turnId"] == s.expect_error_final
            if not ok:
                self.violate("ORD-9", f"after the ErrorNotification of turn {s.expect_error_final}, the next notification is {_describe(method, p)}, not its `error` final chunk", conn, index)
            s.expect_error_final = None
        if s.expect_after_terminal is not None:
            ok = method == "SessionStatusNotification" and p["status"] in ("idle", "ended")
            if not ok:
                self.violate("ORD-8", f"after the final chunk of turn {s.expect_after_terminal}, the next notification is {_describe(method, p)}, not status idle", conn, index)
            s.expect_after_terminal = None
        if method == "SessionStatusNotification":
            self._status(conn, s, p, index)
            return
        if s.status is None:
            self.violate("ORD-1", f"first notification of session {sid} is {method}, not status `started`", conn, index)
        t = self._turn_of(conn, s, p, method, index)
        if t is None:
            return
        if t.ended:
            m = s.messages.get(p.get("messageId", ""))
            if m is not None and m.final is not None:
                self.violate("ORD-4", f"{_describe(method, p)} of message {m.id} after its final chunk ({t.end_reason})", conn, index)
            else:
                self.violate("ORD-8", f"{_describe(method, p)} of turn {t.id} after the turn's final chunk ({t.end_reason})", conn, index)
            return
        paused = s.status == "paused"
        if method == "ErrorNotification":
            self._error_notification(conn, s, t, p, paused, index)
            return
        msg = self._message_of(conn, s, t, p, index)
        if msg is None:
            return
        if method == "ToolCallNotification":
            if paused:
                self.violate("PAUSE-1", f"ToolCallNotification of turn {t.id} delivered while paused", conn, index)
            if p["toolCallId"] in s.calls:
                self.violate("ORD-5", f"toolCallId {p['toolCallId']} announced twice", conn, index)
                return
            s.calls[p["toolCallId"]] = ToolCallInfo(p["toolCallId"], p["name"], p["arguments"], t.id, t.step)
            t.step_calls.append(p["toolCallId"])
            msg.tool_calls.append(p["toolCallId"])
            return
        if not p["isFinal"]:
            if paused:
                self.violate("PAUSE-1", f"chunk of message {msg.id} delivered while paused", conn, index)
            msg.chunks.append(p["chunk"])
            return
        reason = p["finishReason"]
        if paused and reason != "cancelled":
            self.violate("PAUSE-1", f"final chunk ({reason}) of message {msg.id} delivered while paused", conn, index)
        if p["chunk"] != "":
            self.violate("ORD-4", f"final chunk of message {msg.id} carries text {p['chunk'][:40]!r} (always empty)", conn, index)
            msg.chunks.append(p["chunk"])
        msg.final = p
        if reason == "tool_calls":
            if not msg.tool_calls:
                self.violate("ORD-5", f"message {msg.id} ended with finishReason tool_calls but no ToolCallNotification came before it", conn, index)
            t.step_closed = True
            self._check_text(conn, s, t, msg, index)
            return
        if msg.tool_calls and reason in ("stop", "length"):
            self.violate("ORD-5", f"message {msg.id} announced tool calls but ended with finishReason {reason}", conn, index)
        if reason == "error" and t.error_code is None and not s.lenient:
            self.violate("ORD-9", f"turn {t.id} ended with finishReason error without an ErrorNotification before it", conn, index)
        if reason == "cancelled" and not (_inflight(s, "cancelTurn") or _inflight(s, "stopSession") or s.pending.get("__close__") or s.lenient or t.cancel_deferred):
            self.violate("ORD-7", f"turn {t.id} ended `cancelled` without a cancelTurn or stopSession in flight", conn, index)
        self._check_text(conn, s, t, msg, index)
        t.ended, t.end_reason = True, reason
        if s.turn is t:
            s.turn = None
        s.expect_after_terminal = t.id

    def _error_notification(self, conn: str, s: Session, t: Turn, p: dict[str, Any], paused: bool, index: int) -> None:
        if paused:
            self.violate("PAUSE-1", f"ErrorNotification of turn {t.id} delivered while paused", conn, index)
        s.expect_error_final = t.id
        t.error_code = p["code"]
        doc = ERROR_CODES.get(p["code"])
        if doc is None:
            self.violate("SCHEMA", f"ErrorNotification code {p['code']} is not in x-error-codes", conn, index)
            return
        if p["data"]["retryable"] != doc["retryable"]:
            self.violate("SCHEMA", f"ErrorNotification {p['code']} retryable {p['data']['retryable']}, x-error-codes says {doc['retryable']}", conn, index)
        if p["code"] == CODE["INTERNAL_ERROR"]:
            self.violate("BUG", f"ErrorNotification INTERNAL_ERROR in turn {t.id} ({p['message']!r}): a server bug", conn, index)
        if p["code"] == CODE.get("TOOL_RESULT_TIMEOUT"):
            if t.phase != "awaiting" or not (self.limits.get("toolResultTimeoutMs") or 0):
                self.violate("TOOL-1", f"TOOL_RESULT_TIMEOUT in turn {t.id} (phase {t.phase}, toolResultTimeoutMs {self.limits.get('toolResultTimeoutMs')})", conn, index)
            return
        sc = t.script
        if sc is None or sc.unknown or t.step != 0 or p["code"] in TURN_LOST:
            return
        cap = self.limits.max_pending_tool_calls
        if p["code"] == CODE["LIMIT_REACHED"] and cap is not None and len(sc.tools) > cap:
            return
        if sc.error_code is None:
            self.violate("SIM", f"turn {t.id} failed with {p['code']} ({p['message']!r}) but the message scripted no fault", conn, index)
        elif p["code"] != sc.error_code:
            self.violate("SIM", f"fault {sc.error} should give {sc.error_code}, got {p['code']}", conn, index)

    def _turn_of(self, conn: str, s: Session, p: dict[str, Any], method: str, index: int) -> Turn | None:
        tid = p.get("turnId")
        if tid is None:
            return None  # an ErrorNotification not tied to a turn
        t = s.turns.get(tid)
        if t is None and s.lost_sends and not s.pending.get("sendUserMessage"):
            content = s.lost_sends.pop(0)  # its response was lost with the connection
            self._register_turn(s, tid, content, conn, index)
            t = s.turns[tid]
        if t is None:
            if not s.lenient:
                sending = s.pending.get("sendUserMessage")
                what = "before the sendUserMessage response that starts it" if sending else "of a turn no sendUserMessage response announced"
                self.violate("ORD-3", f"{_describe(method, p)} of turn {tid} {what}", conn, index)
            t = s.turns[tid] = Turn(tid, None, None)
            if s.turn is None:
                s.turn = t
        if t.phase == "pending":
            t.phase = "streaming"
        return t

    def _message_of(self, conn: str, s: Session, t: Turn, p: dict[str, Any], index: int) -> Message | None:
        mid = p["messageId"]
        msg = s.messages.get(mid)
        if msg is None:
            if t.messages:
                prev = s.messages[t.messages[-1]]
                if prev.final is None:
                    self.violate("ORD-4", f"message {mid} started before message {prev.id} had its final chunk", conn, index)
                    prev.final = {"finishReason": "?"}
                if prev.final.get("finishReason") == "tool_calls":
                    t.step += 1
                    t.step_calls, t.step_closed = [], False
            msg = s.messages[mid] = Message(mid, t.id, t.step)
            t.messages.append(mid)
            aborting = p.get("isFinal") and p.get("finishReason") in ("cancelled", "error")
            if t.phase == "awaiting" and not aborting and not s.lenient:
                self.violate("TOOL-1", f"turn {t.id} streamed message {mid} while still awaiting tool results", conn, index)
            return msg
        if msg.turn != t.id:
            self.violate("ORD-4", f"message {mid} of turn {msg.turn} continued under turn {t.id}", conn, index)
            return None
        if msg.final is not None:
            what = "ToolCallNotification" if "toolCallId" in p else "AIMessageChunkNotification"
            self.violate("ORD-4", f"{_describe(what, p)} of message {mid} after its final chunk", conn, index)
            return None
        return msg

    def _status(self, conn: str, s: Session, p: dict[str, Any], index: int) -> None:
        status = p["status"]
        prev = s.status
        s.status_notes += 1
        if s.resync:
            s.resync = False
        elif prev is None:
            if status != INITIAL_STATUS:
                self.violate("ORD-1", f"first notification of session {s.id} is status {status!r}, not {INITIAL_STATUS!r}", conn, index)
        elif status not in TRANSITIONS.get(prev, []):
            self.violate("STATE-1", f"session {s.id}: status {prev!r} -> {status!r} is not in x-state-machine", conn, index)
        s.status = status
        if status == "paused":
            s.paused_notes += 1
            if not (_inflight(s, "pauseSession") or s.lenient):
                self.violate("PAUSE-1", f"session {s.id} paused without a pauseSession in flight", conn, index)
            return
        if prev == "paused" and status != "ended":
            # Each resumeSession leaves `paused` at most once (one status notification).
            resume = next((r for r in s.resumes if not r.consumed), None)
            if resume is not None:
                resume.consumed = True
            elif not (s.lost.get("resumeSession") or s.lenient):
                self.violate("PAUSE-1", f"session {s.id} left `paused` ({status!r}) without a resumeSession to answer for it", conn, index)
        t = s.turn
        if status == "ended":
            reason = p.get("reason")
            if reason not in ENDED_REASONS:
                self.violate("ORD-6", f"`ended` with reason {reason!r}, not one of {list(ENDED_REASONS)}", conn, index)
            if s.pending.get("stopSession") and reason != "client_stop" and not s.lenient:
                self.violate("ORD-6", f"session ended by stopSession with reason {reason!r}", conn, index)
            if not _inflight(s, "stopSession") and reason == "client_stop" and not s.lenient:
                self.violate("ORD-6", "session ended (client_stop) without a stopSession in flight", conn, index)
            if t is not None:
                self.violate("ORD-8", f"session ended while turn {t.id} had no final chunk", conn, index)
                s.turn = None
            s.ended = True
            return
        tid = p.get("turnId")
        if status in ("streaming", "awaiting_tool_results"):
            if tid is None:
                self.violate("STATE-1", f"status {status!r} without a turnId", conn, index)
                return
            t = self._turn_of(conn, s, p, "SessionStatusNotification", index)
            if t is None:
                return
            if t.ended:
                self.violate("ORD-8", f"status {status!r} for turn {t.id} after its final chunk", conn, index)
                return
            if status == "awaiting_tool_results":
                if not t.step_closed and not s.lenient:
                    self.violate("ORD-5", f"turn {t.id} awaiting tool results before its step's tool_calls final chunk", conn, index)
                t.phase = "awaiting"
                return
            t.streamed = True
            if t.phase == "awaiting":
                unanswered = [cid for cid in t.step_calls if s.calls[cid].answered is False]
                if unanswered and not s.lenient:
                    self.violate("TOOL-1", f"turn {t.id} continued (streaming) while tool call(s) {unanswered} had no result", conn, index)
            t.phase = "streaming"
            return
        if status == "idle" and t is not None and tid is None:
            if not s.lenient:
                self.violate("ORD-8", f"status idle while turn {t.id} had no final chunk", conn, index)
            s.turn = None

    def _check_text(self, conn: str, s: Session, t: Turn, msg: Message, index: int) -> None:
        """On the simulator: the message's chunks against the scripted text."""
        if not self.simulator or s.lenient or t.script is None or t.script.unknown:
            return
        if msg.step > 0 and t.uncertain:
            return
        text = "".join(msg.chunks)
        reason = (msg.final or {}).get("finishReason")
        sc = t.script
        if msg.step == 0:
            exact, prefix = sc.exact, sc.prefix
            if reason == "tool_calls":
                calls = [(s.calls[c].name, s.calls[c].arguments) for c in msg.tool_calls]
                if calls != sc.tools:
                    self.violate("SIM", f"message {msg.id}: tool calls {calls} != scripted {sc.tools}", conn, index)
            elif sc.tools and reason in ("stop", "length"):
                self.violate("SIM", f"message {msg.id}: scripted tool calls {sc.tools} but finishReason {reason}", conn, index)
            if sc.chunks is not None and reason in ("stop", "length"):
                n = len(msg.chunks)
                if n > sc.chunks or (sc.chunks > 0 and n == 0):
                    # BP-1 lets a congested server merge chunks, never split or add them.
                    self.violate("SIM", f"message {msg.id}: {n} non-final chunks, `/sim chunks {sc.chunks}` scripted", conn, index)
            if sc.error in ("rate_limit", "unavailable", "hang") and reason not in ("error", "cancelled"):
                self.violate("SIM", f"message {msg.id}: fault {sc.error} scripted, finishReason {reason}", conn, index)
            if sc.error == "midstream" and reason in ("stop", "length"):
                self.violate("SIM", f"message {msg.id}: midstream fault scripted, finishReason {reason}", conn, index)
        else:
            answers = t.answers.get(msg.step - 1)
            if not answers:
                return
            # The reply quotes each result; the order (results given, or calls made) is
            # the simulator's choice: accept both.
            given = [simmodel.tool_reply_line(n, r, e) for n, r, _cid, e in answers]
            order = {cid: i for i, cid in enumerate(c for c in s.calls if s.calls[c].turn == t.id and s.calls[c].step == msg.step - 1)}
            by_call = [line for _, line in sorted(zip((order.get(a[2], 0) for a in answers), given), key=lambda x: x[0])]
            for candidate in ("\n".join(given), "\n".join(by_call)):
                if text == candidate or (reason not in ("stop", "length") and candidate.startswith(text)):
                    return
            exact = prefix = "\n".join(given)
        if reason in ("stop", "length", "tool_calls") and exact is not None:
            if text != exact and not (reason == "length" and exact.startswith(text)):
                self.violate("SIM", f"message {msg.id}: chunks concatenate to {text[:200]!r}, scripted {exact[:200]!r}", conn, index)
        elif prefix:
            n = min(len(text), len(prefix))
            if text[:n] != prefix[:n]:
                self.violate("SIM", f"message {msg.id}: chunks {text[:200]!r} do not follow the scripted text {prefix[:200]!r}", conn, index)

    # ------------------------------------------------------------------ liveness
    def busy(self) -> list[tuple[str, str]]:
        """What the client is still waiting for: (requirement, description). Empty: quiet."""
        out: list[tuple[str, str]] = []
        for c in self.conns.values():
            if c.closed:
                continue
            if c.closing:
                out.append(("RPC-2", f"{c.name}: waiting for the connection to close"))
                continue
            if c.expect_close is not None:
                out.append(("RPC-7", f"{c.name}: waiting for close code {sorted(c.expect_close)}"))
                continue
            for u in c.units:
                ids = [m.id for m in u.members]
                out.append(("RPC-1", f"{c.name}: no response yet to {'batch ' if u.batch else ''}frame i={u.index} (ids {ids})"))
        for s in self.sessions.values():
            if not s.live or s.conn is None:
                continue
            c = self.conns[s.conn]
            if c.closed or c.closing:
                continue
            if s.status is None:
                out.append(("ORD-1", f"session {s.id}: no `started` notification"))
                continue
            if s.expect_after_terminal and s.status != "paused":
                out.append(("ORD-8", f"session {s.id}: no status idle after the final chunk of turn {s.expect_after_terminal}"))
            if s.expect_error_final:
                out.append(("ORD-9", f"session {s.id}: no `error` final chunk after the ErrorNotification of turn {s.expect_error_final}"))
            t = s.turn
            if t is None or s.status == "paused":
                continue
            if t.phase == "awaiting":
                if all(s.calls[c].answered for c in t.step_calls):
                    out.append(("TOOL-1", f"session {s.id}: every tool call of turn {t.id} has a result, but the turn did not continue"))
                continue
            out.append(("ORD-8", f"session {s.id}: turn {t.id} has not ended (phase {t.phase})"))
        return out

    def pending_tool_calls(self, sid: str) -> list[str]:
        s = self.sessions.get(sid)
        if s is None or s.turn is None:
            return []
        return [c for c in s.turn.step_calls if not s.calls[c].answered]


def _inflight(s: Session, method: str) -> bool:
    return bool(s.pending.get(method) or s.lost.get(method))


def _params_valid(method: str, params: Any) -> bool:
    if params is _MISSING:
        return bool(REQUEST_METHODS[method].get("paramsOptional"))
    if not isinstance(params, dict):
        return False
    return is_valid(REQUEST_METHODS[method]["params"], params)


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any("\ud800" <= ch <= "\udfff" for ch in v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def _describe(method: str, p: dict[str, Any]) -> str:
    if method == "SessionStatusNotification":
        return f"status {p.get('status')!r}"
    if method == "AIMessageChunkNotification":
        return f"final chunk ({p.get('finishReason')})" if p.get("isFinal") else "a chunk"
    if method == "ToolCallNotification":
        return f"tool call {p.get('toolCallId')}"
    return method

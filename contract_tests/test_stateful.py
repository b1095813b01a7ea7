"""A hypothesis RuleBasedStateMachine driving random interleavings over several
connections and sessions, with the oracle checking every frame.

Rules: open and close connections (cleanly or by dropping TCP); startSession with
random tool sets; sendUserMessage with random text and `/sim` directives (tool calls,
chunk counts, faults); requests pipelined behind a message (cancel, pause, stop,
disconnect, a second message, a result) so they land mid-stream; provideToolResult
with right, wrong, duplicate and late ids (with and without idempotency keys, and
retries of keyed requests); pause/resume; cancelTurn; stopSession; acting on other
connections' and ended sessions; attachSession from another connection (takeover,
reconnect, wrong token); waiting out the resume grace period; ping; junk frames;
batches.

After every step the harness settles (bounded) and checks /healthz against the model;
the oracle records every broken promise (ordering, seq, scripted text, one final per
message, nothing after ended, no leakage, state machine, ...) and the example fails
with the violations and its transcript. Teardown stops what is live, closes every
connection and requires /healthz to return to zero sessions, zero running turns and
zero connections.

One asyncio.Runner per machine instance (hypothesis has no async rules): the
connections live on that loop across rules; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as conjecture_engine
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from contract_tests.harness import Harness, Target
from contract_tests.oracle import GRACE_SLACK_S, Session
from contract_tests import profiles
from contract_tests.profiles import contract_settings

TOOL_NAMES = ["lookup", "calc", "fetch_page", "weather"]
SHRINK_SECONDS = {"quick": 120, "deep": 300}
MAX_CONNS = 3

# ---------------------------------------------------------------------- strategies
_text_chars = st.one_of(
    st.characters(blacklist_characters="/", blacklist_categories=("Cs", "Cc")),
    st.sampled_from(["\n", " ", " ", "\t", "\r"]),
)
texts = st.text(_text_chars, max_size=40)
_arg_values = st.one_of(st.integers(-1000, 1000), st.text(_text_chars, max_size=8), st.booleans(), st.none())
tool_args = st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5), _arg_values, max_size=3)
_floats = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda f: "e" not in repr(f))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), _floats, st.text(_text_chars, max_size=10)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text("abcdef", max_size=4), c, max_size=3)),
    max_leaves=6,
)
results = st.one_of(st.text(_text_chars, max_size=20), _json)


@dataclass(frozen=True)
class Plain:
    text: str
    chunks: int | None = None


@dataclass(frozen=True)
class Tools:
    calls: tuple[tuple[int, Any], ...]
    text: str


@dataclass(frozen=True)
class Fault:
    kind: str
    text: str


@dataclass(frozen=True)
class Long:
    n: int


messages = st.one_of(
    st.builds(Plain, texts),
    st.builds(Plain, texts, st.integers(0, 30)),
    st.builds(Tools, st.lists(st.tuples(st.integers(0, 3), tool_args), min_size=1, max_size=3).map(tuple), texts),
    st.builds(Fault, st.sampled_from(["rate_limit", "unavailable", "midstream", "hang"]), texts),
    st.builds(Long, st.integers(60, 300)),
)


def long_text(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))[: max(n * 3, 10)]


def content_of(msg: Any, tools: list[str], hang_ok: bool = True) -> str:
    if isinstance(msg, Plain):
        return msg.text if msg.chunks is None else f"/sim chunks {msg.chunks}\n{msg.text}"
    if isinstance(msg, Tools):
        lines = []
        for idx, args in msg.calls:
            name = tools[idx % len(tools)] if tools else f"tool{idx}"
            lines.append(f"/sim tool {name} {json.dumps(args, ensure_ascii=False)}")
        return "\n".join([*lines, msg.text]) if msg.text else "\n".join(lines)
    if isinstance(msg, Fault):
        kind = msg.kind if msg.kind != "hang" or hang_ok else "unavailable"
        return f"/sim error {kind}\n{msg.text}"
    return f"/sim chunks {msg.n}\n{long_text(msg.n)}"


JUNK: list[tuple[str, Any]] = [
    ("text", "{"),
    ("text", "[]"),
    ("text", "[1, 2]"),
    ("text", '{"jsonrpc":"2.0","method":"nope","id":"j1"}'),
    ("text", '{"jsonrpc":"2.0","id":"j2","method":"sendUserMessage","params":{}}'),
    ("text", '{"jsonrpc":"1.0","method":"ping","id":"j3"}'),
    ("text", '{"jsonrpc":"2.0","method":"ping","id":true}'),
    ("text", '{"jsonrpc":"2.0","method":"ping"}'),
    ("binary", b"\x00\x01"),
]


# ---------------------------------------------------------------------- the machine
class ContractMachine(RuleBasedStateMachine):
    """Rules have no preconditions and draw all their data up front; a rule with nothing
    to act on does nothing. So the data hypothesis draws never depends on what the
    server did -- a precondition on server state makes shrinking fail with
    FlakyStrategyDefinition."""

    target: Target

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.h = Harness(self.target, "state_machine")
        self.keyed: list[tuple[str, dict[str, Any]]] = []
        self.waited = False

    # ------------------------------------------------------------------ plumbing
    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return self.runner.run(asyncio.wait_for(coro, timeout or 4 * self.target.settle_timeout))

    def act(self, what: str, body: Any) -> None:
        if self.h.observer.violations:
            return  # reported at teardown; every step still draws the same data
        event(f"acted: {what.split(' ', 1)[0]}")
        self.h.note(what)
        self.run(body())
        self.run(self.h.settle())
        self.run(self.h.check_health())

    def conns(self) -> list[str]:
        return self.h.open_conns()

    def live(self) -> list[Session]:
        open_ = set(self.conns())
        return [s for s in self.h.observer.sessions.values() if s.live and s.conn in open_]

    def sessions(self) -> list[Session]:
        """Live sessions; when there is none, open a connection if needed and start one
        (so that session rules act instead of idling -- decided by state, not by draws)."""
        if not self.live() and not self.h.observer.violations:
            if not self.conns():
                self.act("open a connection (for a session)", self.h.open)
            c = self.conns()[0] if self.conns() else None
            if c is not None:
                tools = {"tools": [{"type": "function", "function": {"name": n}} for n in TOOL_NAMES[:2]]}
                self.act(f"startSession on {c} (for a session rule)", lambda: self.h.send_request(c, "startSession", tools))
        return self.live()

    @staticmethod
    def pick(items: list[Any], i: int) -> Any:
        return items[i % len(items)] if items else None

    def hang_ok(self) -> bool:
        fct = self.target.first_chunk_timeout_s
        return fct is not None and fct <= 2

    # ------------------------------------------------------------------ connections
    @initialize()
    def first_connection(self) -> None:
        self.run(self.h.take_baseline())
        self.act("open c0", self.h.open)

    @rule()
    def open_connection(self) -> None:
        if len(self.conns()) < MAX_CONNS:
            self.act("open a connection", self.h.open)

    @rule(i=st.integers(0, 7), abrupt=st.booleans())
    def close_connection(self, i: int, abrupt: bool) -> None:
        c = self.pick(self.conns(), i)
        if c is not None:
            self.act(f"close {c} ({'drop TCP' if abrupt else 'close frame'})", lambda: self.h.close(c, abrupt=abrupt))

    # ------------------------------------------------------------------ sessions
    @rule(i=st.integers(0, 7), tools=st.lists(st.sampled_from(TOOL_NAMES), unique=True, max_size=3), prompt=st.booleans())
    def start_session(self, i: int, tools: list[str], prompt: bool) -> None:
        c = self.pick(self.conns(), i)
        if c is None:
            return
        params: dict[str, Any] = {"tools": [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in tools]}
        if prompt:
            params["systemPrompt"] = "You are under test."
        self.act(f"startSession on {c} tools={tools}", lambda: self.h.send_request(c, "startSession", params))

    @rule(i=st.integers(0, 15), msg=messages, key=st.booleans())
    def send_message(self, i: int, msg: Any, key: bool) -> None:
        s = self.pick(self.sessions(), i)
        if s is None:
            return
        params: dict[str, Any] = {"sessionId": s.id, "content": content_of(msg, s.tools, self.hang_ok())}
        if key:
            params["idempotencyKey"] = f"k{len(self.keyed)}-{i}"
            self.keyed.append(("sendUserMessage", params))
        self.act(f"sendUserMessage to {s.id}: {msg}", lambda: self.h.send_request(s.conn, "sendUserMessage", params))

    @rule(
        i=st.integers(0, 15),
        msg=messages,
        then=st.sampled_from(["cancelTurn", "pauseSession", "stopSession", "close", "abort", "sendUserMessage", "resumeSession", "ping", "attach"]),
    )
    def send_then(self, i: int, msg: Any, then: str) -> None:
        """A message and, without waiting, another action: it lands mid-turn."""
        s = self.pick(self.sessions(), i)
        if s is None:
            return
        c = s.conn

        async def body() -> None:
            await self.h.send_request(c, "sendUserMessage", {"sessionId": s.id, "content": content_of(msg, s.tools, self.hang_ok())})
            if then in ("close", "abort"):
                await self.h.close(c, abrupt=then == "abort")
            elif then == "attach":
                other = [x for x in self.conns() if x != c] or [await self.h.open()]
                await self.h.send_request(other[0], "attachSession", {"sessionId": s.id, "resumeToken": s.token, "afterSeq": s.seq})
            elif then == "sendUserMessage":
                await self.h.send_request(c, then, {"sessionId": s.id, "content": "a second message"})
            elif then == "ping":
                await self.h.send_request(c, "ping", {"data": "mid-turn"})
            else:
                await self.h.send_request(c, then, {"sessionId": s.id})

        self.act(f"sendUserMessage to {s.id}: {msg}, then at once {then}", body)

    @rule(
        i=st.integers(0, 15),
        which=st.sampled_from(["right", "right", "right", "wrong", "duplicate", "late"]),
        result=results,
        is_error=st.booleans(),
        key=st.booleans(),
    )
    def tool_result(self, i: int, which: str, result: Any, is_error: bool, key: bool) -> None:
        s = self.pick(self.sessions(), i)
        if s is None:
            return
        pending = self.h.observer.pending_tool_calls(s.id)
        answered = [c for c, info in s.calls.items() if info.answered]
        ended = [c for c, info in s.calls.items() if s.turns[info.turn].ended]
        pool = {"right": pending, "duplicate": answered, "late": ended}.get(which) or []
        call_id = pool[i % len(pool)] if pool else f"call_unknown_{i}"
        params: dict[str, Any] = {"sessionId": s.id, "toolCallId": call_id, "result": result}
        if is_error:
            params["isError"] = True
        if key:
            params["idempotencyKey"] = f"k{len(self.keyed)}-{i}"
            self.keyed.append(("provideToolResult", params))
        self.act(f"provideToolResult ({which}) {call_id} to {s.id}", lambda: self.h.send_request(s.conn, "provideToolResult", params))

    @rule(i=st.integers(0, 15), answers=st.lists(results, min_size=3, max_size=3))
    def answer_all(self, i: int, answers: list[Any]) -> None:
        """Every pending tool call of a session answered, back to back."""
        s = self.pick(self.sessions(), i)
        if s is None:
            return

        async def body() -> None:
            for call_id, result in zip(self.h.observer.pending_tool_calls(s.id), answers):
                await self.h.send_request(s.conn, "provideToolResult", {"sessionId": s.id, "toolCallId": call_id, "result": result})

        self.act(f"answer every tool call of {s.id}", body)

    @rule(i=st.integers(0, 15), same=st.booleans())
    def retry_keyed(self, i: int, same: bool) -> None:
        """Repeat a request with an idempotencyKey: same params (the first answer again)
        or changed ones (IDEMPOTENCY_CONFLICT)."""
        if not self.keyed:
            return
        method, params = self.pick(self.keyed, i)
        s = self.h.observer.sessions.get(params["sessionId"])
        if s is None or not s.live or s.conn not in self.conns():
            return
        p = dict(params)
        if not same:
            p["content" if method == "sendUserMessage" else "result"] = "changed"
        self.act(f"retry {method} key {p['idempotencyKey']} ({'same' if same else 'changed'} params)", lambda: self.h.send_request(s.conn, method, p))

    @rule(i=st.integers(0, 15), method=st.sampled_from(["pauseSession", "resumeSession", "cancelTurn", "stopSession"]))
    def control(self, i: int, method: str) -> None:
        s = self.pick(self.sessions(), i)
        if s is not None:
            self.act(f"{method} {s.id}", lambda: self.h.send_request(s.conn, method, {"sessionId": s.id}))

    @rule(i=st.integers(0, 15), j=st.integers(0, 7), method=st.sampled_from(["sendUserMessage", "provideToolResult", "pauseSession", "cancelTurn", "stopSession"]))
    def foreign(self, i: int, j: int, method: str) -> None:
        """Act on a session this connection does not hold (another's, or ended)."""
        s = self.pick(list(self.h.observer.sessions.values()), i)
        if s is None:
            return
        c = self.pick([c for c in self.conns() if c != s.conn], j)
        if c is None:
            return
        params: dict[str, Any] = {"sessionId": s.id}
        if method == "sendUserMessage":
            params["content"] = "not yours"
        if method == "provideToolResult":
            params.update(toolCallId=next(iter(s.calls), "call_x"), result="not yours")
        self.act(f"{method} on {s.id} from {c}", lambda: self.h.send_request(c, method, params))

    @rule(i=st.integers(0, 15), back=st.integers(0, 8), fresh=st.booleans(), wrong_token=st.booleans())
    def attach(self, i: int, back: int, fresh: bool, wrong_token: bool) -> None:
        """attachSession: take a session over from its connection, or pick up a
        detached one, replaying from `back` notifications before the last seen."""
        s = self.pick([s for s in self.h.observer.sessions.values() if s.token and s.live], i)
        if s is None:
            return
        token = "t" * 43 if wrong_token else s.token

        async def body() -> None:
            others = [c for c in self.conns() if c != s.conn]
            c = others[0] if others and not fresh else await self.h.open()
            await self.h.send_request(c, "attachSession", {"sessionId": s.id, "resumeToken": token, "afterSeq": max(0, s.seq - back)})

        self.act(f"attachSession {s.id} (back {back}, {'new connection' if fresh else 'other connection'}{', wrong token' if wrong_token else ''})", body)

    @rule()
    def outwait_grace(self) -> None:
        """Let detached sessions outlive their resume grace period (then released).
        At most once per example: it costs real time."""
        ends = [s.detached_until for s in self.h.observer.sessions.values() if s.detached and s.detached_until]
        if self.waited or not ends:
            return
        self.waited = True
        wait = max(ends) - time.monotonic() + GRACE_SLACK_S + 0.05
        if 0 < wait < 2.5:
            self.act("wait out the resume grace period", lambda: self.h.sleep(wait))

    # ------------------------------------------------------------------ misc
    @rule(i=st.integers(0, 7), data=st.one_of(st.none(), _json), junk=st.one_of(st.none(), st.sampled_from(JUNK)))
    def ping_or_junk(self, i: int, data: Any, junk: tuple[str, Any] | None) -> None:
        """ping (HB-1), or a junk frame (RPC-2..4, RPC-7) the connection must survive."""
        c = self.pick(self.conns(), i)
        if c is None:
            return
        if junk is not None:
            self.act(f"junk frame on {c}", lambda: self.h.send_raw(c, junk[1], junk[0]))
        else:
            params = {} if data is None else {"data": data}
            self.act(f"ping on {c}", lambda: self.h.send_request(c, "ping", params))

    @rule(i=st.integers(0, 15), kinds=st.lists(st.sampled_from(["ping", "pauseSession", "resumeSession", "cancelTurn", "result", "initialize", "send", "stopSession"]), min_size=2, max_size=4))
    def batch(self, i: int, kinds: list[str]) -> None:
        s = self.pick(self.sessions(), i)
        if s is None:
            return
        calls: list[tuple[str, Any]] = []
        for k in kinds:
            if k == "ping":
                calls.append(("ping", {"data": len(calls)}))
            elif k == "initialize":
                calls.append(("initialize", {}))
            elif k == "result":
                pending = self.h.observer.pending_tool_calls(s.id)
                calls.append(("provideToolResult", {"sessionId": s.id, "toolCallId": pending[0] if pending else "call_none", "result": "batched"}))
            elif k == "send":
                calls.append(("sendUserMessage", {"sessionId": s.id, "content": "from a batch"}))
            else:
                calls.append((k, {"sessionId": s.id}))
        self.act(f"batch {[m for m, _ in calls]} for {s.id}", lambda: self.h.batch(s.conn, calls))

    # ------------------------------------------------------------------ checks
    def teardown(self) -> None:
        """Violations are raised here, at the end of the example: raising as soon as one
        shows would make the step a failure is noticed at depend on timing (flaky
        shrinking); after the first one the remaining steps are skipped instead."""
        try:
            try:
                if not self.h.observer.violations:
                    self.run(self.h.finish(stop_sessions=True), timeout=60)
            except (TimeoutError, ConnectionError) as exc:
                self.h.observer.violate("LIFE-1", f"teardown did not finish: {exc!r}")
            self.run(self.h.aclose(), timeout=30)
        finally:
            self.runner.close()
        self.h.raise_if_violations()


@pytest.mark.requirement(
    "RPC-1", "RPC-2", "RPC-3", "RPC-4", "RPC-6", "RPC-7", "SEQ-1", "ORD-1", "ORD-2", "ORD-3", "ORD-4", "ORD-5", "ORD-6",
    "ORD-7", "ORD-8", "ORD-9", "ISO-1", "ISO-2", "TOOL-1", "TOOL-2", "PAUSE-1", "PAUSE-2", "STATE-1", "LIFE-1",
    "REPLAY-1", "REPLAY-2", "REPLAY-3", "REPLAY-4", "IDEM-1", "HB-1",
)
@pytest.mark.timeout(600)
def test_random_interleavings_keep_every_promise(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random interleavings of every client action over several connections and
    sessions; the oracle checks every frame and /healthz after every step."""
    if not target.simulator:
        pytest.skip("needs the simulator backend (/sim directives script the model)")
    ContractMachine.target = target
    # Every shrink step replays an example against the real server: cap the time spent
    # shrinking a failure (hypothesis' own cap is 300 s).
    monkeypatch.setattr(conjecture_engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS[profiles.ACTIVE])
    run_state_machine_as_test(ContractMachine, settings=contract_settings(examples=40, steps=40))


"""Sessions across processes: ownership, relaying, hand-over and take-over.

One :class:`Cluster` per process sits between the session manager and a shared store
(:class:`~server.store.redis.RedisStore`). The rules:

- **A session has one owner**, the process whose memory holds its ``AILoop``. The owner
  mirrors every notification into the shared log, saves the conversation context at
  every status change, and renews the session's keys.
- **A turn belongs to the process running it.** When a client attaches on process B a
  session owned by A, B asks A (control channel). A checks the token and the cursor,
  detaches its own client (takeover) and then either
  - *hands the session over at once* when no turn is in flight: the state travels in the
    reply, B rebuilds the loop, the ``seq`` counter continues; or
  - lets B **relay** the running turn: B replays the log from the cursor, then follows
    it live (XREAD on the session's log stream), in order, without gaps or duplicates.
    Tool results given on B are forwarded to A (all results of a step, then A lets the
    turn go on); cancelTurn and stopSession are forwarded too, and answered once their
    notifications have been relayed. When the turn ends, A saves the final state and
    hands the session over (a ``handover`` event after the last notification); later
    turns run on B.
- **An owner that dies** (its liveness key expires) loses its sessions to the first
  process that needs them (a relay, or an attachSession): that process claims the
  registry entry atomically, rebuilds the loop from the saved context and ends a turn
  that was in flight with ``SESSION_OWNER_LOST`` (ErrorNotification, final chunk
  ``error``, status ``idle``). The session stays usable.

The rest of the server is unaware of all this: a relayed session looks like any other
to the handlers, with a :class:`RemoteLoop` standing in for its ``AILoop``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from server.loop.conversation import Conversation
from server.loop.engine import AILoop, LoopStateError, UnknownToolCallError
from server.loop.events import AIChunk, StatusChanged
from server.loop.provider import ToolCall
from server.protocol.errors import (
    SESSION_OWNER_LOST,
    InvalidParams,
    LimitReached,
    ReplayWindowExpiredError,
    SessionNotFound,
    StoreUnavailable,
)
from server.session.bridge import DelegateBridge, ReplayWindowExpired
from server.session.outbox import Note
from server.store.redis import OpTimeout, RedisStore

if TYPE_CHECKING:
    from server.session.manager import InteractiveSessionManager, ServerSession

__all__ = ["Cluster", "RemoteLoop"]

log = logging.getLogger("ailoop.cluster")

_MSG_NUM = re.compile(r"msg_(\d+)$")
_TURN_NUM = re.compile(r"turn_(\d+)$")
OWNER_LOST_MESSAGE = "the process running this turn stopped before the turn ended"


def _token_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Entry = tuple[int, str]
"""A replay-log entry as the bridge keeps it: (seq, frame text)."""


def _frame_note(seq: int, frame: str) -> tuple[Entry, str, dict[str, Any]]:
    """A logged frame as a replay-log entry, with its method and params."""
    msg = orjson.loads(frame)
    return (seq, frame), msg["method"], msg["params"]


def _entry(item: Any) -> Entry:
    """(seq, frame) of a replay-log item (a tuple, or a Note)."""
    if type(item) is tuple:
        return item
    return item.seq, item.encode()


def _note_params(item: Any) -> tuple[str, dict[str, Any]]:
    if type(item) is not tuple and item.params is not None:
        return item.method, item.params
    msg = orjson.loads(_entry(item)[1])
    return msg.get("method", ""), msg.get("params", {})


class RemoteLoop:
    """Stands in for the AILoop of a session whose turn runs on another process.

    Its state is what the relayed notifications say. Turns can't start here until the
    owner hands the session over (INVALID_SESSION_STATE, retryable); tool results are
    checked here and forwarded to the owner once every call of the step has one;
    cancelTurn is forwarded; pause and resume are refused while the turn runs elsewhere.
    """

    has_running_task = False

    def __init__(self, cluster: Cluster, session_id: str, status: str, turn_id: str | None,
                 pending: list[dict[str, Any]], messages: list[dict[str, Any]], system_prompt: str | None) -> None:
        self.cluster = cluster
        self.session_id = session_id
        self._status = status
        self.turn_id = turn_id
        self.pending: dict[str, ToolCall] = {}
        for c in pending:
            self.pending[c["toolCallId"]] = ToolCall(c["toolCallId"], c["name"], c["arguments"],
                                                     orjson.dumps(c["arguments"]).decode())
        self.results: dict[str, tuple[Any, bool]] = {}
        self.conversation = Conversation(system_prompt, 1 << 30)
        self.conversation.messages = list(messages)

    @property
    def status(self) -> str:
        return self._status

    def pending_tool_calls(self) -> list[ToolCall]:
        return [c for i, c in self.pending.items() if i not in self.results]

    def observe(self, method: str, params: dict[str, Any]) -> None:
        """Follow the owner's state from one relayed notification."""
        if method == "SessionStatusNotification":
            status = params["status"]
            self._status = status
            if status != "paused":
                self.turn_id = params.get("turnId")
            if status in ("streaming", "idle", "ended"):
                self.pending.clear()
                self.results.clear()
        elif method == "ToolCallNotification":
            args = params["arguments"]
            self.pending[params["toolCallId"]] = ToolCall(params["toolCallId"], params["name"], args,
                                                          orjson.dumps(args).decode())
        elif method == "AIMessageChunkNotification" and params.get("isFinal") \
                and params.get("finishReason") != "tool_calls":
            self.pending.clear()
            self.results.clear()

    def _elsewhere(self, what: str) -> LoopStateError:
        return LoopStateError(f"{what}: the turn in flight runs on another process; retry when it ends",
                              self._status)  # type: ignore[arg-type]

    def start(self) -> None:
        pass

    def prepare_turn(self, content: str) -> str:
        raise self._elsewhere("a turn is already in flight")

    def begin_turn(self) -> None:
        pass

    def provide_tool_result(self, tool_call_id: str, result: Any, is_error: bool = False) -> int:
        if tool_call_id not in self.pending or tool_call_id in self.results:
            raise UnknownToolCallError(tool_call_id)
        self.results[tool_call_id] = (result, is_error)
        return len(self.pending) - len(self.results)

    def continue_turn(self) -> None:
        if self.pending and len(self.results) == len(self.pending):
            results = [[i, r, e] for i, (r, e) in self.results.items()]
            self.cluster.forward_results(self.session_id, results)

    async def cancel_turn(self) -> str | None:
        return await self.cluster.remote_cancel(self.session_id)

    def pause(self) -> bool:
        raise self._elsewhere("cannot pause")

    def resume(self) -> bool:
        raise self._elsewhere("cannot resume")

    async def stop(self, reason: str) -> None:  # the manager routes stops to Cluster.stop_relayed
        pass


class Relay:
    """The relaying side of one session (process B while the turn runs on A)."""

    def __init__(self, owner: str, epoch: int) -> None:
        self.owner = owner
        self.epoch = epoch
        self.task: asyncio.Task[None] | None = None
        self.ev_last = "0-0"
        self.pos = 0
        """Seq of the last log entry read (delivered or held)."""
        self.held: list[Entry] = []
        """The turn's closing notifications, held until the session is handed over here,
        so that a client seeing ``idle`` can start the next turn at once."""
        self.held_since = 0.0
        self.closed = False
        self.finished = asyncio.Event()
        """Set when relaying stopped (hand-over, take-over, moved, ended)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def advanced(self, seq: int) -> None:
        if self._waiters:
            still = []
            for want, fut in self._waiters:
                if seq >= want:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((want, fut))
            self._waiters = still

    async def reached(self, bridge: DelegateBridge, seq: int, timeout: float) -> None:
        """Wait until the relay has delivered up to ``seq`` (or stopped relaying)."""
        if bridge.seq >= seq or self.finished.is_set():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        fin = asyncio.ensure_future(self.finished.wait())
        try:
            await asyncio.wait({fut, fin}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fin.cancel()

    def close(self) -> None:
        self.closed = True
        self.finished.set()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters = []
        task = self.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()


class Cluster:
    """This process's side of sharing sessions with others through a store."""

    def __init__(self, manager: InteractiveSessionManager, store: RedisStore) -> None:
        self.m = manager
        self.store = store
        self.me = store.process_id
        self.limits = manager.limits
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def owned_ids(self) -> list[str]:
        return [s.id for s in self.m._sessions.values() if s.remote is None and not s.handing_over]

    def _static(self, s: ServerSession) -> dict[str, Any]:
        loop = s.loop
        return {
            "token": s.token_hash.hex(),
            "model": s.model,
            "tool_names": orjson.dumps(s.tool_names).decode(),
            "metadata": orjson.dumps(s.metadata).decode(),
            "system_prompt": orjson.dumps(loop.conversation.system_prompt).decode(),
            "tools": orjson.dumps(loop.tools).decode(),
            "req_model": orjson.dumps(loop.model).decode(),
            "sampling": orjson.dumps(loop.sampling).decode(),
            "deadline": str(s.deadline_ms),
        }

    def _dynamic(self, s: ServerSession) -> tuple[dict[str, Any], list[dict[str, Any]], list[list[Any]]]:
        """The session's mutable state now (messages and keys copied, serialized later)."""
        loop = s.loop
        fields = {
            "turns": str(loop._turns),
            "msgs": str(loop._messages),
            "status": loop._status,
            "paused": "1" if loop._paused else "0",
            "turn": loop.turn_id or "",
            "seq": str(s.bridge.seq),
        }
        idem = [[k, fp, res] for k, (fp, res) in s.idempotency.items()]
        return fields, list(loop.conversation.messages), idem

    def _save(self, s: ServerSession, *, full: bool = False, **extra: str) -> None:
        """Queue a write of the session's registry entry and context (values copied now)."""
        fields, messages, idem = self._dynamic(s)
        if full:
            fields.update(self._static(s))
        fields.update(extra)
        key, ttl = self.store.k_sess(s.id), int(self.store.ttl_s * 1000)

        def put(p: Any) -> None:
            p.hset(key, mapping={**fields, "messages": orjson.dumps(messages), "idem": orjson.dumps(idem)})
            p.pexpire(key, ttl)
        self.store.write(put)

    def _record(self, s: ServerSession, **extra: str) -> dict[str, str]:
        fields, messages, idem = self._dynamic(s)
        return {**fields, **self._static(s), "messages": orjson.dumps(messages).decode(),
                "idem": orjson.dumps(idem).decode(), **extra}

    def _mirror(self, s: ServerSession) -> Callable[[Note], None]:
        put, sid = self.store.note, s.id

        def mirror(note: Note) -> None:
            put(sid, note)
            method = note.method
            if method == "SessionStatusNotification" or (
                    method == "AIMessageChunkNotification" and note.params is not None and note.params["isFinal"]):
                self._milestone(s, note)
        return mirror

    def _milestone(self, s: ServerSession, note: Note) -> None:
        p = note.params or {}
        if note.method == "SessionStatusNotification":
            if p.get("status") != "ended":
                self._save(s)
            elif s.handover_to is not None:
                return
        elif p.get("finishReason") == "tool_calls":
            return
        if s.handover_to is not None and not s.handing_over:
            asyncio.get_running_loop().call_soon(self._maybe_handover, s)

    # ------------------------------------------------------------------ hooks from the manager
    async def reserve(self, session_id: str) -> None:
        if not self.store.healthy:
            raise StoreUnavailable("redis is unreachable")
        if not await self.store.reserve(session_id, self.limits.max_sessions):
            raise LimitReached("maxSessions", self.limits.max_sessions)

    def unreserve(self, session_id: str) -> None:
        key = self.store.k_slots
        self.store.write(lambda p: p.zrem(key, session_id))

    def on_created(self, s: ServerSession) -> None:
        s.deadline_ms = int((time.time() + self.limits.max_lifetime_s) * 1000) if self.limits.max_lifetime_s > 0 else 0
        self._save(s, full=True, owner=self.me, state="attached", created=str(int(time.time() * 1000)))
        s.bridge.mirror = self._mirror(s)

    def on_attached(self, s: ServerSession, connection_id: str) -> None:
        if s.remote is not None:
            relay = s.remote
            if relay.task is None:
                relay.task = asyncio.get_running_loop().create_task(self._relay(s), name=f"relay-{s.id}")
            return
        if s.relay is not None:  # it was relayed by another process: that one gets nothing more
            self.store.event(s.id, {"type": "moved", "epoch": s.epoch, "to": self.me})
            s.relay = s.handover_to = None
        self._save(s, owner=self.me, state="attached")

    def on_detached(self, s: ServerSession) -> None:
        if s.remote is None:
            self._save(s, state="detached", expires=str(int((time.time() + self.limits.resume_grace_s) * 1000)))

    def on_stopped(self, s: ServerSession) -> None:
        """The owner stopped the session: its `ended` is in the log; drop its keys (the
        log and events after the margin, for a relay still reading them)."""
        sid, st = s.id, self.store
        ev = orjson.dumps({"type": "ended", "epoch": s.epoch, "lastSeq": s.bridge.seq})
        margin = int(st.ttl_margin_s * 1000)
        s.bridge.mirror = None

        def put(p: Any) -> None:
            p.delete(st.k_sess(sid))
            p.zrem(st.k_slots, sid)
            p.xadd(st.k_ev(sid), {"m": ev}, maxlen=32, approximate=False)
            p.pexpire(st.k_ev(sid), margin)
            p.pexpire(st.k_log(sid), margin)
        st.write(put)
        s.relay = s.handover_to = None

    # ------------------------------------------------------------------ owner side: hand-over
    def _maybe_handover(self, s: ServerSession) -> None:
        if s.handover_to is None or s.handing_over or s.loop.turn_id is not None or s.id not in self.m._sessions:
            return
        self._spawn(self._handover(s))

    async def _handover(self, s: ServerSession) -> None:
        to, epoch = s.handover_to, s.epoch
        assert to is not None
        s.handing_over = True
        self._save(s, full=True, owner=to, state="attached")
        self.store.event(s.id, {"type": "handover", "epoch": epoch, "to": to, "lastSeq": s.bridge.seq})
        if await self.store.confirm():
            self._handed_over(s, to)
        else:
            s.handing_over = False  # retried by the heartbeat (or resync sorts out the owner)

    def _handed_over(self, s: ServerSession, to: str) -> None:
        log.info("session handed over", extra={"sessionId": s.id, "to": to, "lastSeq": s.bridge.seq})
        s.bridge.mirror = None
        s.relay = s.handover_to = None
        self.m._forget(s)

    # ------------------------------------------------------------------ owner side: requests from other processes
    async def on_op(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            log.warning("unknown control message", extra={"op": op})
            return
        await handler(msg)

    def _owned(self, msg: dict[str, Any]) -> ServerSession | None:
        s = self.m._sessions.get(msg.get("sid", ""))
        if s is None or s.remote is not None:
            return None
        return s

    def _relayed_by_sender(self, msg: dict[str, Any]) -> ServerSession | None:
        s = self._owned(msg)
        if s is None or s.relay != msg.get("from") or s.epoch != msg.get("epoch"):
            return None
        return s

    async def _op_attach(self, msg: dict[str, Any]) -> None:
        st, s = self.store, self._owned(msg)
        if s is None or s.handing_over or not hmac.compare_digest(s.token_hash.hex(), str(msg.get("token", ""))):
            st.reply(msg, error="not_found")
            return
        after = int(msg["afterSeq"])
        try:
            s.bridge.check_cursor(after)
        except ReplayWindowExpired as exc:
            st.reply(msg, error="expired", oldest=exc.oldest_seq, snapshot=s.snapshot())
            return
        except ValueError:
            st.reply(msg, error="beyond", lastSeq=s.bridge.seq)
            return
        to = msg["from"]
        if s.connection_id is not None:  # takeover: its current client gets nothing more
            self.m._unbind(s)
        self.m._cancel_grace(s)
        if s.relay is not None and s.relay != to:
            st.event(s.id, {"type": "moved", "epoch": s.epoch, "to": to})
        s.epoch += 1
        s.relay = s.handover_to = to
        log.info("session attached on another process", extra={"sessionId": s.id, "to": to, "afterSeq": after,
                                                               "turnId": s.loop.turn_id})
        if s.loop.turn_id is None:
            # No turn in flight: hand it over now, the state travels in the reply.
            s.handing_over = True
            record = self._record(s, owner=to, state="attached")
            key, ttl = st.k_sess(s.id), int(st.ttl_s * 1000)

            def put(p: Any) -> None:
                p.hset(key, mapping=record)
                p.pexpire(key, ttl)
            st.write(put)
            st.reply(msg, ok=True, mode="handover", epoch=s.epoch, lastSeq=s.bridge.seq, state=record)
            if await st.confirm():
                self._handed_over(s, to)
            else:  # lost: keep it here, detached (the requester times out with STORE_UNAVAILABLE)
                s.handing_over = False
                s.relay = s.handover_to = None
                self.m._detach_with_grace(s)
            return
        loop = s.loop
        st.reply(msg, ok=True, mode="relay", epoch=s.epoch, lastSeq=s.bridge.seq, status=loop.status,
                 turnId=loop.turn_id,
                 pending=[{"toolCallId": c.id, "name": c.name, "arguments": c.arguments}
                          for c in loop.pending_tool_calls()],
                 idem=[[k, fp, res] for k, (fp, res) in s.idempotency.items()],
                 messages=list(loop.conversation.messages))

    async def _op_detach(self, msg: dict[str, Any]) -> None:
        s = self._relayed_by_sender(msg)
        if s is None or s.handing_over:
            self.store.reply(msg, kept=False)
            return
        s.relay = s.handover_to = None
        self.store.reply(msg, kept=True)
        self.m._detach_with_grace(s, msg.get("reason", "disconnect"))

    async def _op_tool_results(self, msg: dict[str, Any]) -> None:
        s = self._relayed_by_sender(msg)
        if s is None:
            log.warning("tool results for a session not relayed by the sender", extra={"sessionId": msg.get("sid")})
            return
        for call_id, result, is_error in msg.get("results", ()):
            try:
                s.loop.provide_tool_result(call_id, result, bool(is_error))
            except (UnknownToolCallError, LoopStateError):
                log.info("forwarded tool result not awaited", extra={"sessionId": s.id, "toolCallId": call_id})
        s.loop.continue_turn()

    async def _op_cancel(self, msg: dict[str, Any]) -> None:
        s = self._relayed_by_sender(msg)
        if s is None:
            self.store.reply(msg, error="not_found")
            return
        try:
            turn_id = await s.loop.cancel_turn()
        except LoopStateError as exc:
            self.store.reply(msg, error="state", status=exc.status, message=str(exc))
            return
        self.store.reply(msg, ok=True, turnId=turn_id, lastSeq=s.bridge.seq)

    async def _op_stop(self, msg: dict[str, Any]) -> None:
        s = self._relayed_by_sender(msg)
        if s is None:
            self.store.reply(msg, error="not_found")
            return
        await self.m.stop(s, msg.get("reason", "client_stop"))
        self.store.reply(msg, ok=True, lastSeq=s.bridge.seq)

    # ------------------------------------------------------------------ relaying side
    def forward_results(self, sid: str, results: list[list[Any]]) -> None:
        s = self.m._sessions.get(sid)
        if s is None or s.remote is None:
            return
        self.store.send(s.remote.owner, {"op": "tool_results", "sid": sid, "epoch": s.remote.epoch,
                                         "from": self.me, "results": results})

    async def remote_cancel(self, sid: str) -> str | None:
        s = self.m._sessions.get(sid)
        if s is None or s.remote is None:
            raise LoopStateError("session moved", "idle")
        relay = s.remote
        try:
            reply = await self.store.request(relay.owner, "cancel", {"sid": sid, "epoch": relay.epoch})
        except OpTimeout:
            raise StoreUnavailable("the process running the turn did not answer") from None
        if reply.get("error") == "state":
            raise LoopStateError(reply.get("message", "invalid state"), reply.get("status", "idle"))
        if reply.get("error"):
            await relay.reached(s.bridge, 1 << 62, self.store.op_timeout_s)
            if s.remote is None and s.id in self.m._sessions:  # handed over meanwhile
                return await s.loop.cancel_turn()
            raise SessionNotFound(sid)
        await relay.reached(s.bridge, int(reply["lastSeq"]), self.store.op_timeout_s)
        return reply.get("turnId")

    async def stop_relayed(self, s: ServerSession, reason: str) -> None:
        relay = s.remote
        assert relay is not None
        try:
            reply = await self.store.request(relay.owner, "stop", {"sid": s.id, "epoch": relay.epoch,
                                                                    "reason": reason})
        except (OpTimeout, StoreUnavailable) as exc:
            log.warning("stopping a relayed session: its owner did not answer",
                        extra={"sessionId": s.id, "owner": relay.owner, "error": str(exc)})
            relay.close()
            self.m._forget(s)
            return
        if reply.get("error"):
            # Handed over (or moved) meanwhile: wait for the relay to settle it.
            await relay.reached(s.bridge, 1 << 62, self.store.op_timeout_s)
            if s.remote is None and s.id in self.m._sessions:
                await self.m.stop(s, reason)
                return
            relay.close()
            self.m._forget(s)
            return
        await relay.reached(s.bridge, int(reply["lastSeq"]), self.store.op_timeout_s)
        relay.close()
        self.m._forget(s)

    async def release_relayed(self, s: ServerSession, reason: str) -> None:
        """The client of a relayed session went away (its connection is already unbound)."""
        grace = self.limits.resume_grace_s if reason in ("disconnect", "slow_consumer") else 0.0
        if grace <= 0:
            await self.stop_relayed(s, reason)
            return
        relay = s.remote
        assert relay is not None
        kept = False
        try:
            reply = await self.store.request(relay.owner, "detach", {"sid": s.id, "epoch": relay.epoch,
                                                                      "reason": reason})
            kept = bool(reply.get("kept"))
        except (OpTimeout, StoreUnavailable):
            pass
        if kept and s.remote is relay:
            relay.close()
            self.m._forget(s)
            return
        # A hand-over is under way (or the owner did not answer): keep it here, detached.
        if s.id in self.m._sessions:
            self.m._detach_with_grace(s, reason)

    async def attach_remote(self, connection_id: str, sid: str, token: str, after_seq: int
                            ) -> tuple[ServerSession, int]:
        """attachSession of a session this process does not hold."""
        rec = await self.store.load(sid)
        th = _token_hex(token)
        if rec is None or not hmac.compare_digest(rec.get("token", ""), th):
            raise SessionNotFound(sid)
        if len(self.m._by_connection.get(connection_id, {})) >= self.limits.max_sessions_per_connection:
            raise LimitReached("maxSessionsPerConnection", self.limits.max_sessions_per_connection)
        for _ in range(4):
            owner = rec.get("owner", "")
            if owner == self.me:
                raise SessionNotFound(sid)
            if await self._dead(owner):
                if await self.store.claim(sid, owner):
                    return await self._adopt(sid, rec, after_seq)
            else:
                try:
                    reply = await self.store.request(owner, "attach", {"sid": sid, "token": th, "afterSeq": after_seq})
                except OpTimeout:
                    if not await self._dead(owner):
                        raise StoreUnavailable("the process owning the session did not answer") from None
                    continue  # dead: claim it on the next round
                err = reply.get("error")
                if err == "expired":
                    raise ReplayWindowExpiredError(int(reply["oldest"]), reply["snapshot"])
                if err == "beyond":
                    raise InvalidParams(f"afterSeq {after_seq} is beyond the last seq {reply['lastSeq']}",
                                        {"errors": [{"loc": "afterSeq", "msg": "beyond the last seq"}],
                                         "lastSeq": reply["lastSeq"]})
                if not err:
                    if reply["mode"] == "handover":
                        return await self._take_handover(sid, reply, after_seq)
                    return await self._start_relay(sid, rec, reply, after_seq)
            fresh = await self.store.load(sid)  # not there any more: moved, or stopped
            if fresh is None or fresh.get("owner") == owner:
                raise SessionNotFound(sid)
            rec = fresh
        raise StoreUnavailable("the session is moving between processes; retry")

    async def _dead(self, pid: str) -> bool:
        """The process's liveness key is gone (checked twice, a heartbeat apart, so that a
        Redis that restarted empty is not mistaken for dead owners)."""
        if not pid or pid == self.me:
            return False
        if await self.store.alive(pid):
            return False
        await asyncio.sleep(min(2 * self.store.heartbeat_s, self.store.owner_timeout_s))
        return not await self.store.alive(pid)

    async def _fill(self, s: ServerSession, after: int = 0) -> list[tuple[Note, str, dict[str, Any]]]:
        """Copy the shared log (seq > after) into the session's bridge log."""
        out = []
        for seq, frame in await self.store.log_range(s.id, after):
            if seq <= s.bridge.seq and s.bridge.log:
                continue
            item = _frame_note(seq, frame)
            s.bridge.log.append(item[0])
            s.bridge.seq = seq
            out.append(item)
        return out

    def _cursor(self, s: ServerSession, after_seq: int) -> int:
        try:
            return s.bridge.check_cursor(after_seq)
        except ReplayWindowExpired as exc:
            raise ReplayWindowExpiredError(exc.oldest_seq, s.snapshot()) from None
        except ValueError as exc:
            raise InvalidParams(str(exc), {"errors": [{"loc": "afterSeq", "msg": "beyond the last seq"}],
                                           "lastSeq": s.bridge.seq}) from None

    def _build(self, sid: str, rec: dict[str, Any]) -> ServerSession:
        """A session owned here, rebuilt from a registry record (seq, log filled by the caller)."""
        from server.session.manager import ServerSession

        m = self.m
        bridge = DelegateBridge(sid, None, m._validate, self.limits.replay_log_size, m.metrics)
        loop = AILoop(m.provider, bridge, system_prompt=orjson.loads(rec.get("system_prompt", "null")),
                      tools=orjson.loads(rec.get("tools", "[]")), model=orjson.loads(rec.get("req_model", "null")),
                      sampling=orjson.loads(rec.get("sampling", "{}")), config=m.loop_config, label=sid)
        _restore_loop(loop, rec)
        s = ServerSession(sid, None, loop, bridge, rec.get("model", ""), orjson.loads(rec.get("tool_names", "[]")),
                          orjson.loads(rec.get("metadata", "{}")), bytes.fromhex(rec.get("token", "")))
        for k, fp, res in orjson.loads(rec.get("idem", "[]")):
            s.remember(k, fp, res)
        s.deadline_ms = int(rec.get("deadline", "0") or 0)
        bridge.seq = int(rec.get("seq", "0") or 0)
        return s

    def _adopt_local(self, s: ServerSession) -> None:
        """Make a rebuilt session one of ours: timers, mirror, registry."""
        m = self.m
        m._sessions[s.id] = s
        if s.deadline_ms:
            left = max(0.0, s.deadline_ms / 1000 - time.time())
            s.timers.append(asyncio.get_running_loop().call_later(left, m._spawn_stop, s, "max_lifetime"))
        s.bridge.mirror = self._mirror(s)
        self._save(s, full=True, owner=self.me, state="detached")
        # Until complete_attach binds it (normally at once): never an orphan.
        m._detach_with_grace(s, announce=False)

    async def _take_handover(self, sid: str, reply: dict[str, Any], after_seq: int) -> tuple[ServerSession, int]:
        s = self._build(sid, reply["state"])
        s.bridge.seq = 0
        try:
            await self._fill(s)
        except StoreUnavailable:
            pass
        s.bridge.seq = max(s.bridge.seq, int(reply["lastSeq"]))
        self._adopt_local(s)
        log.info("session taken over (hand-over)", extra={"sessionId": sid, "lastSeq": s.bridge.seq})
        return s, self._cursor(s, after_seq)

    async def _start_relay(self, sid: str, rec: dict[str, Any], reply: dict[str, Any], after_seq: int
                           ) -> tuple[ServerSession, int]:
        from server.session.manager import ServerSession

        m, owner = self.m, rec["owner"]
        bridge = DelegateBridge(sid, None, m._validate, self.limits.replay_log_size, m.metrics)
        view = RemoteLoop(self, sid, reply["status"], reply.get("turnId"), reply.get("pending", []),
                          reply.get("messages", []), orjson.loads(rec.get("system_prompt", "null")))
        s = ServerSession(sid, None, view, bridge, rec.get("model", ""),  # type: ignore[arg-type]
                          orjson.loads(rec.get("tool_names", "[]")), orjson.loads(rec.get("metadata", "{}")),
                          bytes.fromhex(rec["token"]))
        for k, fp, res in reply.get("idem", []):
            s.remember(k, fp, res)
        relay = s.remote = Relay(owner, int(reply["epoch"]))
        last = int(reply["lastSeq"])
        try:
            entries = await self.store.log_range(sid, 0)
        except StoreUnavailable:
            self._give_back(s)
            raise
        for seq, frame in entries:
            if seq <= last:
                s.bridge.log.append((seq, frame))
                s.bridge.seq = relay.pos = seq
            elif seq == relay.pos + 1:
                self._deliver(s, view, seq, frame)
        if relay.pos < last:  # the shared log lags behind (Redis restarted): not now
            self._give_back(s)
            raise StoreUnavailable("the shared log is incomplete; retry")
        try:
            count = self._cursor(s, after_seq)
        except Exception:
            self._give_back(s)
            raise
        m._sessions[sid] = s
        m._detach_with_grace(s, announce=False)  # until complete_attach binds it
        log.info("relaying a session whose turn runs elsewhere", extra={"sessionId": sid, "owner": owner,
                                                                        "lastSeq": s.bridge.seq})
        return s, count

    def _give_back(self, s: ServerSession) -> None:
        relay = s.remote
        if relay is not None:
            self.store.send(relay.owner, {"op": "detach", "sid": s.id, "epoch": relay.epoch, "from": self.me,
                                          "rid": "", "reason": "disconnect"})
            relay.close()

    async def _adopt(self, sid: str, rec: dict[str, Any], after_seq: int) -> tuple[ServerSession, int]:
        """Take over a session whose owner died (the registry entry is claimed already)."""
        s = self._build(sid, rec)
        s.bridge.seq = 0
        try:
            await self._fill(s)
        except StoreUnavailable:
            pass
        s.bridge.seq = max(s.bridge.seq, int(rec.get("seq", "0") or 0), after_seq)
        self._adopt_local(s)
        self._close_interrupted(s, rec)
        log.warning("session taken over from a process that stopped", extra={"sessionId": sid,
                                                                             "owner": rec.get("owner")})
        return s, self._cursor(s, after_seq)

    def _close_interrupted(self, s: ServerSession, rec: dict[str, Any]) -> None:
        """End a turn the dead owner left in flight: ErrorNotification SESSION_OWNER_LOST,
        the turn's final chunk (error), status idle; history kept valid."""
        loop, bridge = s.loop, s.bridge
        turn_id: str | None = None
        last_chunk: dict[str, Any] | None = None
        msgs, turns = loop._messages, loop._turns
        found_status = False
        for note in reversed(bridge.log):
            method, p = _note_params(note)
            if method == "AIMessageChunkNotification":
                mm = _MSG_NUM.match(p.get("messageId", ""))
                if mm:
                    msgs = max(msgs, int(mm.group(1)))
                if last_chunk is None:
                    last_chunk = p
            tm = _TURN_NUM.match(p.get("turnId") or "")
            if tm:
                turns = max(turns, int(tm.group(1)))
            if method == "SessionStatusNotification" and not found_status:
                found_status = True
                st = p.get("status")
                if st in ("streaming", "awaiting_tool_results") or (st == "paused" and p.get("turnId")):
                    turn_id = p.get("turnId")
                elif st == "ended":
                    return
        if not found_status and rec.get("turn"):
            turn_id = rec["turn"]
        loop._messages, loop._turns = msgs, turns
        if turn_id is None:
            return
        if last_chunk is not None and last_chunk.get("turnId") == turn_id and not last_chunk.get("isFinal"):
            message_id = last_chunk["messageId"]
        else:
            loop._messages += 1
            message_id = f"msg_{loop._messages}"
        _close_history(loop.conversation.messages)
        _emit_raw(bridge, "ErrorNotification", {
            "sessionId": s.id, "turnId": turn_id, "code": SESSION_OWNER_LOST, "message": OWNER_LOST_MESSAGE,
            "data": {"retryable": True, "kind": "owner_lost"},
        })
        bridge(AIChunk(turn_id, message_id, "", True, "error"))
        loop._status, loop._paused = "idle", False
        loop._gate.set()
        bridge(StatusChanged("idle", None))

    async def _relay(self, s: ServerSession) -> None:
        """Follow the owner's log for a relayed session until the turn ends there."""
        relay, st = s.remote, self.store
        assert relay is not None and isinstance(s.loop, RemoteLoop)
        view: RemoteLoop = s.loop
        quiet_since = time.monotonic()
        check_every = max(2 * st.heartbeat_s, 0.5)
        try:
            while not relay.closed:
                try:
                    notes, events = await st.read_relay(s.id, relay.pos, relay.ev_last, 500)
                except StoreUnavailable:
                    await asyncio.sleep(0.2)
                    continue
                if notes or events:
                    quiet_since = time.monotonic()
                for seq, frame in notes:
                    if seq <= relay.pos:
                        continue
                    if seq != relay.pos + 1:
                        log.error("relay fell behind the shared log (trimmed); the client must attach again",
                                  extra={"sessionId": s.id, "expected": relay.pos + 1, "got": seq})
                        self._give_back(s)
                        self.m._forget(s)
                        return
                    self._deliver(s, view, seq, frame)
                for eid, ev in events:
                    relay.ev_last = eid
                    kind = ev.get("type")
                    if kind == "ended":
                        await self._catch_up(s, view, int(ev.get("lastSeq", 0)))
                        self._release_held(s)
                        relay.close()
                        self.m._forget(s)
                        return
                    if ev.get("epoch") != relay.epoch:
                        continue
                    if kind == "handover" and ev.get("to") == self.me:
                        await self._catch_up(s, view, int(ev.get("lastSeq", 0)))
                        await self._finish_handover(s)
                        return
                    if kind in ("handover", "moved"):
                        log.info("relayed session moved to another process", extra={"sessionId": s.id})
                        relay.close()
                        self.m._forget(s)
                        return
                if relay.held and time.monotonic() - relay.held_since > st.op_timeout_s:
                    log.warning("no hand-over after the turn ended; delivering its end anyway",
                                extra={"sessionId": s.id, "owner": relay.owner})
                    self._release_held(s)
                if not notes and not events and time.monotonic() - quiet_since > check_every:
                    quiet_since = time.monotonic()
                    try:
                        dead = await self._dead(relay.owner)
                        if dead and await st.claim(s.id, relay.owner):
                            await self._adopt_relayed(s, view)
                            return
                    except StoreUnavailable:
                        continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay failed", extra={"sessionId": s.id})
            self._give_back(s)
            self.m._forget(s)
        finally:
            relay.finished.set()

    def _deliver(self, s: ServerSession, view: RemoteLoop, seq: int, frame: str) -> None:
        """One relayed notification: logged and sent, or held when it ends the turn."""
        relay = s.remote
        assert relay is not None
        note, method, params = _frame_note(seq, frame)
        relay.pos = seq
        view.observe(method, params)
        if relay.held or (method == "SessionStatusNotification" and params.get("status") == "idle"):
            if not relay.held:
                relay.held_since = time.monotonic()
            relay.held.append(note)
            return
        self._release(s, note)

    def _release(self, s: ServerSession, entry: Entry) -> None:
        bridge = s.bridge
        bridge.log.append(entry)
        bridge.seq = entry[0]
        if bridge.sink is not None:
            bridge.sink.send(entry[1])
        if s.remote is not None:
            s.remote.advanced(entry[0])

    def _release_held(self, s: ServerSession, relay: Relay | None = None) -> None:
        relay = relay or s.remote
        if relay is None:
            return
        held, relay.held = relay.held, []
        for note in held:
            self._release(s, note)
        relay.advanced(s.bridge.seq)

    async def _catch_up(self, s: ServerSession, view: RemoteLoop, last: int) -> None:
        relay = s.remote
        assert relay is not None
        while relay.pos < last:
            entries = await self.store.log_range(s.id, relay.pos)
            if not entries:
                break
            for seq, frame in entries:
                if seq == relay.pos + 1:
                    self._deliver(s, view, seq, frame)

    def _become_owner(self, s: ServerSession, rec: dict[str, Any]) -> None:
        """Swap the relay's stand-in for a real loop rebuilt from ``rec``."""
        m, relay = self.m, s.remote
        loop = AILoop(m.provider, s.bridge, system_prompt=orjson.loads(rec.get("system_prompt", "null")),
                      tools=orjson.loads(rec.get("tools", "[]")), model=orjson.loads(rec.get("req_model", "null")),
                      sampling=orjson.loads(rec.get("sampling", "{}")), config=m.loop_config, label=s.id)
        _restore_loop(loop, rec)
        s.loop = loop
        s.remote = None
        s.deadline_ms = int(rec.get("deadline", "0") or 0)
        for k, fp, res in orjson.loads(rec.get("idem", "[]")):
            if k not in s.idempotency:
                s.remember(k, fp, res)
        if s.deadline_ms:
            left = max(0.0, s.deadline_ms / 1000 - time.time())
            s.timers.append(asyncio.get_running_loop().call_later(left, m._spawn_stop, s, "max_lifetime"))
        s.bridge.mirror = self._mirror(s)
        if relay is not None:
            relay.close()

    async def _finish_handover(self, s: ServerSession) -> None:
        for delay in (0.0, 0.1, 0.3, 1.0, 2.0):
            await asyncio.sleep(delay)
            try:
                rec = await self.store.load(s.id)
            except StoreUnavailable:
                continue
            if rec is None:
                break
            relay = s.remote
            self._become_owner(s, rec)
            self._release_held(s, relay)
            self._save(s, owner=self.me, state="attached" if s.connection_id else "detached")
            log.info("session taken over (turn ended on its owner)", extra={"sessionId": s.id,
                                                                            "lastSeq": s.bridge.seq})
            return
        log.error("hand-over state could not be read; session dropped", extra={"sessionId": s.id})
        self._release_held(s)
        if s.remote is not None:
            s.remote.close()
        self.m._forget(s)

    async def _adopt_relayed(self, s: ServerSession, view: RemoteLoop) -> None:
        rec = await self.store.load(s.id) or {}
        await self._catch_up(s, view, 1 << 62)
        relay = s.remote
        self._become_owner(s, rec)
        self._release_held(s, relay)
        self._save(s, full=True, owner=self.me, state="attached" if s.connection_id else "detached")
        self._close_interrupted(s, rec)
        log.warning("session taken over from a process that stopped", extra={"sessionId": s.id})

    # ------------------------------------------------------------------ heartbeat and recovery
    async def on_heartbeat(self) -> None:
        owned = [s for s in self.m._sessions.values() if s.remote is None]
        relays = {s.relay for s in owned if s.relay is not None}
        for pid in relays:
            if await self.store.alive(pid):
                continue
            for s in owned:
                if s.relay == pid and not s.handing_over:
                    log.warning("the process relaying a session stopped; session detached here",
                                extra={"sessionId": s.id, "relay": pid})
                    s.relay = s.handover_to = None
                    self.m._detach_with_grace(s)
        for s in owned:
            if s.handover_to is not None and not s.handing_over and s.loop.turn_id is None:
                self._maybe_handover(s)

    async def resync(self) -> None:
        """Redis answers again (or lost our keys): re-publish every session we own."""
        owned = [s for s in self.m._sessions.values() if s.remote is None and not s.handing_over]
        try:
            owners = await self.store.owners([s.id for s in owned])
        except StoreUnavailable:
            self.store.dirty = True
            return
        st, ttl = self.store, int(self.store.ttl_s * 1000)
        for s, owner in zip(owned, owners):
            if owner is not None and owner != self.me:
                log.error("session taken over by another process while this one was cut off from redis",
                          extra={"sessionId": s.id, "owner": owner})
                s.bridge.mirror = None
                self.m._forget(s)
                if s.loop.has_running_task:
                    s.bridge.detach()
                    self._spawn(s.loop.stop("disconnect"))
                continue
            entries = [_entry(n) for n in s.bridge.log]
            key = st.k_log(s.id)

            def put(p: Any, entries: list[Entry] = entries, key: str = key) -> None:
                p.delete(key)
                for seq, frame in entries:
                    p.xadd(key, {"f": frame}, id=f"{seq}-0")
                p.pexpire(key, ttl)
            st.write(put)
            self._save(s, full=True, owner=self.me,
                       state="attached" if s.connection_id or s.relay else "detached")
        await st.renew([s.id for s in owned if s.id in self.m._sessions])


def _restore_loop(loop: AILoop, rec: dict[str, Any]) -> None:
    """Put a fresh AILoop into the state saved in ``rec``.

    Uses AILoop's private counters (turn and message numbering continue, so ids stay
    unique across processes): an ``AILoop.restore()`` in engine.py would be cleaner.
    """
    loop.conversation.messages = list(orjson.loads(rec.get("messages", "[]")))
    loop._turns = int(rec.get("turns", "0") or 0)
    loop._messages = int(rec.get("msgs", "0") or 0)
    status = rec.get("status", "idle")
    loop._status = "started" if status == "started" else "idle"  # type: ignore[assignment]
    if rec.get("paused") == "1":
        loop._paused = True
        loop._gate.clear()


def _close_history(messages: list[dict[str, Any]]) -> None:
    """Tool calls left without a result get one saying they were not run."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            for call in msg["tool_calls"]:
                if call["id"] not in answered:
                    messages.append({"role": "tool", "tool_call_id": call["id"],
                                     "content": "Error: Not run: the process running the turn stopped."})
            return
        if msg.get("role") == "user":
            return


def _emit_raw(bridge: DelegateBridge, method: str, params: dict[str, Any]) -> None:
    """Number, log, mirror and deliver a notification the loop has no event for."""
    bridge.seq += 1
    params["seq"] = bridge.seq
    note = Note(bridge.seq, method, params)
    bridge.log.append(note)
    if bridge.mirror is not None:
        bridge.mirror(note)
    if bridge.sink is not None:
        bridge.sink.push(note)


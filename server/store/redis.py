"""The Redis store: sessions shared by several processes and nodes.

Keys (``P`` is ``store.key_prefix``)::

    P s:{sid}            hash    registry entry + conversation context (see cluster.py)
    P s:{sid}:log        stream  the notification log: one entry per notification, id
                                 "{seq}-0", field f = the frame's JSON text; trimmed to
                                 session.replay_log_size entries
    P s:{sid}:ev         stream  session events for relaying processes (handover,
                                 moved, ended), tiny
    P sessions           zset    sid -> expiry (ms): the server-wide session count
    P p:{pid}:alive      string  a process's liveness key, expires after owner_timeout_s
    P p:{pid}:ctl        stream  requests to a process (attach, tool results, cancel,
                                 stop, detach) and replies to its own requests

Every session key expires ``session.resume_grace_s + store.ttl_margin_s`` after its
owner last renewed it (renewed every third of that); a process's keys expire with its
liveness. So nothing outlives a dead process's grace period by more than the margin.

All writes of a process go through one ordered, pipelined writer task: a notification
is appended to its log in the order it was produced, and a reply to another process is
only sent after every write queued before it (so "the reply arrived" means "the log
holds every notification up to the seq it names"). The notification hot path only
appends to an in-memory queue.

When Redis cannot be reached, writes are dropped (the process's own sessions keep
working from memory), requests that need Redis fail with STORE_UNAVAILABLE, and once
Redis answers again the process re-publishes its sessions (registry, conversation,
log) from memory: that also repairs a Redis that restarted empty.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.protocol.errors import StoreUnavailable
from server.store.base import SessionStore

__all__ = ["OpTimeout", "RedisStore"]

log = logging.getLogger("ailoop.store")

_ERRORS = (RedisError, OSError, TimeoutError, ConnectionError)

# Server-wide session slots: drop expired ones, then admit if under the limit.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# Renew slots (and re-create missing ones: a Redis that restarted empty).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end
return #ARGV - 1
"""

# Compare-and-set of a session's owner (taking over from a dead process).
_CLAIM = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2])
  return 1
end
return 0
"""


class OpTimeout(Exception):
    """Another process did not answer a request in time."""


class RedisStore(SessionStore):
    shared: ClassVar[bool] = True
    name: ClassVar[str] = "redis"

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        key_prefix: str = "ailoop:",
        heartbeat_s: float = 1.0,
        owner_timeout_s: float = 5.0,
        ttl_margin_s: float = 10.0,
        op_timeout_s: float = 5.0,
    ) -> None:
        self.url = redis_url
        self.prefix = key_prefix
        self.heartbeat_s = heartbeat_s
        self.owner_timeout_s = owner_timeout_s
        self.ttl_margin_s = ttl_margin_s
        self.op_timeout_s = op_timeout_s
        self.process_id = f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(4)}"
        self.ttl_s = ttl_margin_s
        """Session keys' time to live: resume grace + margin (set by :meth:`open`)."""
        self.log_size = 1000
        self.healthy = False
        """The last exchange with Redis succeeded."""
        self.dirty = False
        """Writes were lost (Redis unreachable): re-publish everything when it answers."""
        self._r: aioredis.Redis | None = None
        self._host: Any = None
        self._q: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._rids = itertools.count(1)
        self._closing = False
        self._reserve: Any = None
        self._renew: Any = None
        self._claim: Any = None
        self._warned = 0.0

    # ------------------------------------------------------------------ keys
    def k_sess(self, sid: str) -> str:
        return f"{self.prefix}s:{sid}"

    def k_log(self, sid: str) -> str:
        return f"{self.prefix}s:{sid}:log"

    def k_ev(self, sid: str) -> str:
        return f"{self.prefix}s:{sid}:ev"

    @property
    def k_slots(self) -> str:
        return f"{self.prefix}sessions"

    def k_alive(self, pid: str) -> str:
        return f"{self.prefix}p:{pid}:alive"

    def k_ctl(self, pid: str) -> str:
        return f"{self.prefix}p:{pid}:ctl"

    # ------------------------------------------------------------------ lifecycle
    async def open(self, host: Any) -> None:
        """Connect (without failing when Redis is down: the heartbeat keeps trying) and
        start the writer, the heartbeat and the control reader."""
        self._host = host
        self.ttl_s = host.limits.resume_grace_s + self.ttl_margin_s
        self.log_size = host.limits.replay_log_size
        self._r = aioredis.from_url(
            self.url, decode_responses=True, socket_connect_timeout=self.op_timeout_s,
            health_check_interval=0, retry_on_timeout=False,
        )
        self._reserve = self._r.register_script(_RESERVE)
        self._renew = self._r.register_script(_RENEW)
        self._claim = self._r.register_script(_CLAIM)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop(), name="store-writer"),
            loop.create_task(self._heartbeat_loop(), name="store-heartbeat"),
            loop.create_task(self._ctl_loop(), name="store-control"),
        ]
        try:
            await self._beat(first=True)
        except _ERRORS as exc:
            log.error("redis unreachable at start; sessions stay local until it answers",
                      extra={"store": self._where(), "error": _short(exc)})
        log.info("shared session store open", extra={"store": self._where(), "processId": self.process_id})

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        writer, others = self._tasks[0] if self._tasks else None, self._tasks[1:]
        for t in others:
            t.cancel()
        for t in others:
            try:
                await t
            except BaseException:  # noqa: BLE001 - cancelled or failed: closing anyway
                pass
        if writer is not None:
            try:
                await asyncio.wait_for(writer, self.op_timeout_s)
            except BaseException:  # noqa: BLE001
                writer.cancel()
        if self._r is not None:
            try:
                async with asyncio.timeout(min(self.op_timeout_s, 2.0)):
                    await self._r.delete(self.k_alive(self.process_id), self.k_ctl(self.process_id))
            except _ERRORS:
                pass
            await self._r.aclose()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(OpTimeout())

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "healthy": self.healthy, "processId": self.process_id,
                "queued": len(self._q)}

    def _where(self) -> str:
        # Never log a password: only host, port and database.
        try:
            kw = self._r.connection_pool.connection_kwargs if self._r is not None else {}
            return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}/{kw.get('db', 0)}"
        except Exception:  # noqa: BLE001
            return "?"

    # ------------------------------------------------------------------ writer (ordered, pipelined)
    def note(self, sid: str, note: Any) -> None:
        """Append a notification to its session's log (the mirror hot path: a queue append)."""
        if self.dirty:
            return
        self._q.append((0, sid, note))
        self._wake.set()

    def write(self, fn: Callable[[Any], None]) -> None:
        """Queue ``fn(pipeline)`` after everything queued so far."""
        if self.dirty:
            return
        self._q.append((1, fn))
        self._wake.set()

    def send(self, pid: str, msg: dict[str, Any]) -> None:
        """Send a control message to process ``pid`` (after everything queued so far).
        NOMKSTREAM: a message to a process that is gone creates no key."""
        key, data = self.k_ctl(pid), orjson.dumps(msg)
        self.write(lambda p: p.xadd(key, {"m": data}, maxlen=10_000, approximate=True, nomkstream=True))

    def flushed(self) -> asyncio.Future[bool]:
        """A future: True once everything queued so far is written, False if it was lost."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.dirty:
            fut.set_result(False)
            return fut
        self._q.append((2, fut))
        self._wake.set()
        return fut

    async def confirm(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout or self.op_timeout_s):
                return await self.flushed()
        except TimeoutError:
            return False

    async def _write_loop(self) -> None:
        q = self._q
        while True:
            if not q:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            assert self._r is not None
            pipe = self._r.pipeline(transaction=False)
            waiters: list[asyncio.Future[bool]] = []
            n = 0
            while q and n < 2048:
                item = q.popleft()
                n += 1
                kind = item[0]
                if kind == 0:
                    note = item[2]
                    pipe.xadd(self.k_log(item[1]), {"f": note.encode()}, id=f"{note.seq}-0",
                              maxlen=self.log_size, approximate=False)
                elif kind == 1:
                    item[1](pipe)
                else:
                    waiters.append(item[1])
            try:
                if len(pipe):
                    async with asyncio.timeout(self.op_timeout_s):
                        results = await pipe.execute(raise_on_error=False)
                else:
                    results = []
            except _ERRORS as exc:
                self._lost(exc)
                for w in waiters:
                    if not w.done():
                        w.set_result(False)
                continue
            except asyncio.CancelledError:
                for w in waiters:
                    if not w.done():
                        w.set_result(False)
                raise
            failed = [r for r in results if isinstance(r, Exception)]
            if failed and time.monotonic() - self._warned > 5:
                self._warned = time.monotonic()
                log.warning("store writes refused", extra={"count": len(failed), "error": _short(failed[0])})
            for w in waiters:
                if not w.done():
                    w.set_result(True)

    def _lost(self, exc: BaseException) -> None:
        """Writes failed: drop the queue (everything is still in memory) and re-publish
        once Redis answers."""
        if not self.dirty:
            log.error("redis unreachable: sessions of this process continue locally; "
                      "attaching them elsewhere fails until it answers",
                      extra={"store": self._where(), "error": _short(exc)})
        self.dirty = True
        self.healthy = False
        while self._q:
            item = self._q.popleft()
            if item[0] == 2 and not item[1].done():
                item[1].set_result(False)

    # ------------------------------------------------------------------ heartbeat
    async def _beat(self, first: bool = False) -> None:
        assert self._r is not None
        me = self.process_id
        async with asyncio.timeout(self.op_timeout_s):
            pipe = self._r.pipeline(transaction=False)
            pipe.set(self.k_alive(me), str(int(time.time() * 1000)), px=int(self.owner_timeout_s * 1000), get=True)
            pipe.exists(self.k_ctl(me))
            prev, has_ctl = await pipe.execute()
        if not has_ctl:  # our control stream (created here so that others' NOMKSTREAM sends land)
            async with asyncio.timeout(self.op_timeout_s):
                await self._r.xadd(self.k_ctl(me), {"m": b'{"op":"hello"}'}, maxlen=10_000, approximate=True)
        async with asyncio.timeout(self.op_timeout_s):
            await self._r.pexpire(self.k_ctl(me), int(max(self.owner_timeout_s * 2, self.ttl_s) * 1000))
        was_healthy = self.healthy
        self.healthy = True
        if first:
            return
        if self.dirty or prev is None or not was_healthy:
            if self.dirty or prev is None:
                log.warning("redis answers again; re-publishing this process's sessions",
                            extra={"store": self._where(), "lostWrites": self.dirty, "livenessLost": prev is None})
            self.dirty = False
            await self._host.resync()

    async def _heartbeat_loop(self) -> None:
        every = max(self.ttl_s / 3, self.heartbeat_s)
        next_renew = time.monotonic() + every
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
            except _ERRORS as exc:
                if self.healthy:
                    log.error("redis unreachable", extra={"store": self._where(), "error": _short(exc)})
                self.healthy = False
                self.dirty = True
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store heartbeat failed")
                continue
            try:
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + every
                    await self.renew(self._host.owned_ids())
                await self._host.on_heartbeat()
            except (*_ERRORS, StoreUnavailable) as exc:
                log.warning("store renewal failed", extra={"error": _short(exc)})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store heartbeat work failed")

    async def renew(self, sids: list[str]) -> None:
        """Renew the TTLs of sessions this process owns (their slot included)."""
        assert self._r is not None
        ttl_ms = int(self.ttl_s * 1000)
        for i in range(0, len(sids), 500):
            part = sids[i:i + 500]
            pipe = self._r.pipeline(transaction=False)
            await self._renew(keys=[self.k_slots], args=[ttl_ms, *part], client=pipe)
            for sid in part:
                pipe.pexpire(self.k_sess(sid), ttl_ms)
                pipe.pexpire(self.k_log(sid), ttl_ms)
                pipe.pexpire(self.k_ev(sid), ttl_ms)
            async with asyncio.timeout(self.op_timeout_s):
                await pipe.execute(raise_on_error=False)

    # ------------------------------------------------------------------ control channel
    async def _ctl_loop(self) -> None:
        last = "0-0"
        key = self.k_ctl(self.process_id)
        while True:
            try:
                assert self._r is not None
                res = await self._r.xread({key: last}, count=256, block=1000)
            except asyncio.CancelledError:
                raise
            except _ERRORS:
                await asyncio.sleep(min(self.heartbeat_s, 0.5))
                continue
            for _key, entries in res or ():
                for eid, fields in entries:
                    last = eid
                    try:
                        msg = orjson.loads(fields.get("m", "{}"))
                    except orjson.JSONDecodeError:
                        continue
                    op = msg.get("op")
                    if op == "reply":
                        fut = self._pending.get(msg.get("rid", ""))
                        if fut is not None and not fut.done():
                            fut.set_result(msg)
                    elif op and op != "hello":
                        try:
                            await self._host.on_op(msg)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("control message failed", extra={"op": op})

    async def request(self, pid: str, op: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Ask process ``pid`` to do ``op``; its reply.

        Raises:
            StoreUnavailable: Redis is unreachable.
            OpTimeout: no reply in time (the process may be dead, or slow).
        """
        if self.dirty or not self.healthy:
            raise StoreUnavailable("redis is unreachable")
        rid = f"{self.process_id}:{next(self._rids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.send(pid, {**payload, "op": op, "rid": rid, "from": self.process_id})
        try:
            async with asyncio.timeout(timeout or self.op_timeout_s):
                return await fut
        except TimeoutError:
            raise OpTimeout(op) from None
        finally:
            self._pending.pop(rid, None)

    def reply(self, msg: dict[str, Any], **result: Any) -> None:
        """Answer a request (after every write queued so far)."""
        self.send(msg["from"], {"op": "reply", "rid": msg["rid"], **result})

    # ------------------------------------------------------------------ reads and atomic operations
    async def _do(self, what: str, fn: Callable[[aioredis.Redis], Any]) -> Any:
        if self._r is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await fn(self._r)
        except _ERRORS as exc:
            self.healthy = False
            raise StoreUnavailable(f"redis: {what} failed ({_short(exc)})") from None

    async def reserve(self, sid: str, limit: int) -> bool:
        """Take a server-wide session slot; False when ``limit`` slots are taken."""
        ttl_ms = int(self.ttl_s * 1000)
        return bool(await self._do("reserve", lambda r: self._reserve(keys=[self.k_slots], args=[sid, limit, ttl_ms])))

    async def load(self, sid: str) -> dict[str, str] | None:
        rec = await self._do("load", lambda r: r.hgetall(self.k_sess(sid)))
        return rec or None

    async def owners(self, sids: list[str]) -> list[str | None]:
        async def get(r: aioredis.Redis) -> list[str | None]:
            pipe = r.pipeline(transaction=False)
            for sid in sids:
                pipe.hget(self.k_sess(sid), "owner")
            return await pipe.execute()
        return await self._do("owners", get) if sids else []

    async def alive(self, pid: str) -> bool:
        return bool(await self._do("alive", lambda r: r.exists(self.k_alive(pid))))

    async def claim(self, sid: str, expected: str) -> bool:
        return bool(await self._do("claim", lambda r: self._claim(keys=[self.k_sess(sid)], args=[expected, self.process_id])))

    async def log_range(self, sid: str, after: int = 0) -> list[tuple[int, str]]:
        """The session's logged frames with seq > ``after``, in order."""
        entries = await self._do("read log", lambda r: r.xrange(self.k_log(sid), f"{after + 1}-0", "+"))
        return [(int(eid.split("-", 1)[0]), fields["f"]) for eid, fields in entries]

    async def read_relay(self, sid: str, after: int, ev_after: str, block_ms: int
                         ) -> tuple[list[tuple[int, str]], list[tuple[str, dict[str, Any]]]]:
        """Block up to ``block_ms`` for log entries after seq ``after`` or session events
        after ``ev_after``."""
        if self._r is None:
            raise StoreUnavailable("the store is not open")
        try:
            res = await self._r.xread({self.k_log(sid): f"{after}-0", self.k_ev(sid): ev_after},
                                      count=512, block=block_ms)
        except _ERRORS as exc:
            raise StoreUnavailable(f"redis: relay read failed ({_short(exc)})") from None
        notes: list[tuple[int, str]] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for key, entries in res or ():
            if key.endswith(":log"):
                notes = [(int(eid.split("-", 1)[0]), fields["f"]) for eid, fields in entries]
            else:
                events = [(eid, orjson.loads(fields["m"])) for eid, fields in entries]
        return notes, events

    def event(self, sid: str, ev: dict[str, Any]) -> None:
        """Append a session event (after everything queued so far)."""
        key, data, ttl = self.k_ev(sid), orjson.dumps(ev), int(self.ttl_s * 1000)

        def put(p: Any) -> None:
            p.xadd(key, {"m": data}, maxlen=32, approximate=False)
            p.pexpire(key, ttl)
        self.write(put)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]

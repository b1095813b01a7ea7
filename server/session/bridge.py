"""DelegateBridge: turns one session's AILoop events into JSON-RPC notifications.

The bridge is the loop's delegate (its ``emit`` callback). It numbers the
session's notifications (``seq`` starts at 1 and rises by exactly 1), keeps them in
the session's replay log, and hands them to the connection's outbox. It is
synchronous: the order events are emitted in is the order frames are queued in.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from server.loop.events import (
    AIChunk,
    LoopError,
    LoopEvent,
    ReasoningChunk,
    SessionEnded,
    SessionStarted,
    StatusChanged,
    ToolCallGenerated,
)
from server.protocol import errors
from server.loop.jsonutil import dumps
from server.metrics import Metrics, TurnClock
from server.session.outbox import Note, Outbox

__all__ = ["DelegateBridge", "ReplayWindowExpired", "error_code_for"]

log = logging.getLogger("ailoop.bridge")

_KIND_TO_CODE = {
    "rate_limit": errors.PROVIDER_RATE_LIMITED,
    "unavailable": errors.PROVIDER_UNAVAILABLE,
    "midstream": errors.PROVIDER_UNAVAILABLE,
    "truncated": errors.PROVIDER_UNAVAILABLE,
    "timeout": errors.PROVIDER_TIMEOUT,
    "internal": errors.INTERNAL_ERROR,
    "limit": errors.LIMIT_REACHED,
    "tool_timeout": errors.TOOL_RESULT_TIMEOUT,
}


def error_code_for(kind: str) -> int:
    """The spec's error code for a loop error kind (bad_request, auth, payment and
    protocol are all PROVIDER_ERROR)."""
    return _KIND_TO_CODE.get(kind, errors.PROVIDER_ERROR)


class ReplayWindowExpired(Exception):
    """The requested cursor is older than the replay log."""

    def __init__(self, oldest_seq: int) -> None:
        super().__init__(f"replay log starts at seq {oldest_seq}")
        self.oldest_seq = oldest_seq


class DelegateBridge:
    """The delegate of one session's AILoop: numbers, logs and delivers its notifications.

    Each event becomes a :class:`Note` with the session's next ``seq``, appended to the
    session's bounded replay log and pushed to the connection's outbox if the session
    is attached (``sink``). Detached, notes only go to the log, to be replayed by
    :meth:`attach`.
    """

    __slots__ = ("session_id", "seq", "log", "sink", "ended", "_validate", "_last", "_metrics", "_clock", "mirror",
                 "_prefix", "_prefix_key")

    def __init__(
        self,
        session_id: str,
        sink: Outbox | None = None,
        validate: Callable[[dict[str, Any]], None] | None = None,
        log_size: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.session_id = session_id
        self.seq = 0
        """The seq of the last notification (0 before the first)."""
        self.log: deque[Note] = deque(maxlen=log_size)
        self.sink = sink
        self.ended = False
        self._validate = validate
        self._last: Note | None = None
        self._metrics = metrics
        self._clock = TurnClock(metrics) if metrics is not None else None
        self._prefix = ""
        self._prefix_key: tuple[str, str] | None = None
        self.mirror: Callable[[Note], None] | None = None
        """Called with every new note after it is logged (a shared session store
        copies the log there); None by default."""

    @property
    def oldest_seq(self) -> int:
        if not self.log:
            return self.seq + 1
        first = self.log[0]
        return first[0] if type(first) is tuple else first.seq

    def __call__(self, event: LoopEvent) -> None:
        if self.ended:
            log.error("event %s after the session ended; dropped", event.name)
            return
        sink = self.sink
        if (
            type(event) is AIChunk
            and not event.is_final
            and sink is not None
            and sink.congested
            and self._last is not None
            and self._last.mergeable(event.message_id)
        ):
            # BP-1: the reader is slow; grow the queued chunk instead of queueing another.
            self._last.params["chunk"] += event.text  # type: ignore[index]
            sink.grew(len(event.text))
            return
        if (
            type(event) is AIChunk
            and not event.is_final
            and self.mirror is None
            and self._validate is None
            and (sink is None or not sink.congested)
        ):
            self._text_chunk(event, sink)
            return
        params = self._params(event)
        if params is None:
            return
        if self._metrics is not None:
            self._observe(event, params)
        self.seq += 1
        params["seq"] = self.seq
        method = params.pop("_method")
        if self._validate is not None:
            self._validate({"jsonrpc": "2.0", "method": method, "params": params})
        if self.mirror is None and (sink is None or not sink.congested):
            # The common case: serialize now and log (seq, frame) -- a tuple of atoms,
            # which the cycle collector untracks -- instead of a Note object that every
            # full collection would traverse (replay_log_size of them per session).
            frame = dumps({"jsonrpc": "2.0", "method": method, "params": params}).decode()
            self.log.append((self.seq, frame))
            self._last = None
            if sink is not None:
                sink.send(frame)
        else:
            note = Note(self.seq, method, params)
            self.log.append(note)
            self._last = note
            if self.mirror is not None:
                self.mirror(note)
            if sink is not None:
                sink.push(note)
        if type(event) is SessionEnded:
            self.ended = True

    def _text_chunk(self, event: AIChunk, sink: Outbox | None) -> None:
        """The hot path: a non-final chunk, frame built around the message's cached
        prefix (same bytes as serializing the params dict: keys in the same order)."""
        key = (event.turn_id, event.message_id)
        if key != self._prefix_key:
            ids = orjson.dumps({"sessionId": self.session_id, "turnId": event.turn_id,
                                "messageId": event.message_id}).decode()
            self._prefix = '{"jsonrpc":"2.0","method":"AIMessageChunkNotification","params":' + ids[:-1] + ',"chunk":'
            self._prefix_key = key
        if self._metrics is not None:
            self._metrics.notifications += 1
            if not self._clock.first_seen:  # type: ignore[union-attr]
                self._clock.output()  # type: ignore[union-attr]
        self.seq += 1
        frame = self._prefix + orjson.dumps(event.text).decode() + ',"isFinal":false,"seq":' + str(self.seq) + "}}"
        self.log.append((self.seq, frame))
        self._last = None
        if sink is not None:
            sink.send(frame)

    def _observe(self, event: LoopEvent, params: dict[str, Any]) -> None:
        m, clock = self._metrics, self._clock
        m.notifications += 1  # type: ignore[union-attr]
        t = type(event)
        if t is AIChunk:
            if event.is_final and event.finish_reason != "tool_calls":  # type: ignore[union-attr]
                clock.finished(event.finish_reason)  # type: ignore[union-attr,arg-type]
            elif not clock.first_seen:  # type: ignore[union-attr]
                clock.output()  # type: ignore[union-attr]
        elif t is ToolCallGenerated:
            clock.output()  # type: ignore[union-attr]
        elif t is StatusChanged:
            clock.status(event.status, event.turn_id)  # type: ignore[union-attr]
        elif t is LoopError:
            m.provider_errors.labels(str(params["code"]), event.kind).inc()  # type: ignore[union-attr]
        elif t is SessionEnded:
            m.sessions_ended.labels(event.reason).inc()  # type: ignore[union-attr]

    def check_cursor(self, after_seq: int) -> int:
        """How many notes ``attach(after_seq)`` would replay.

        Raises:
            ReplayWindowExpired: notes after ``after_seq`` are no longer all in the log.
            ValueError: ``after_seq`` is beyond the last seq.
        """
        if after_seq > self.seq:
            raise ValueError(f"afterSeq {after_seq} is beyond the last seq {self.seq}")
        if after_seq + 1 < self.oldest_seq:
            raise ReplayWindowExpired(self.oldest_seq if self.log else 0)
        return self.seq - after_seq

    def attach(self, sink: Outbox, after_seq: int) -> int:
        """Replay every note with seq > ``after_seq`` into ``sink``, then deliver live
        there. Synchronous, so nothing can slip between replay and live delivery."""
        count = self.check_cursor(after_seq)
        for note in list(self.log)[len(self.log) - count:] if count else ():
            if type(note) is tuple:
                sink._push(note[1], 0)  # replayed: already held by the log (see Outbox.push)
            else:
                sink.push(note, replay=True)
        self.sink = sink
        return count

    def detach(self) -> None:
        self.sink = None
        self._last = None

    def _params(self, ev: LoopEvent) -> dict[str, Any] | None:
        sid = self.session_id
        if isinstance(ev, AIChunk):
            p: dict[str, Any] = {
                "_method": "AIMessageChunkNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "messageId": ev.message_id,
                "chunk": ev.text,
                "isFinal": ev.is_final,
            }
            if ev.is_final:
                p["finishReason"] = ev.finish_reason
                if ev.usage is not None:
                    u = ev.usage
                    p["usage"] = {
                        "promptTokens": u.prompt_tokens,
                        "completionTokens": u.completion_tokens,
                        "totalTokens": u.total_tokens,
                    }
            return p
        if isinstance(ev, StatusChanged):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": ev.status, "turnId": ev.turn_id}
        if isinstance(ev, ToolCallGenerated):
            return {
                "_method": "ToolCallNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "messageId": ev.message_id,
                "toolCallId": ev.tool_call_id,
                "name": ev.tool_name,
                "arguments": ev.arguments,
            }
        if isinstance(ev, SessionStarted):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": "started"}
        if isinstance(ev, SessionEnded):
            return {"_method": "SessionStatusNotification", "sessionId": sid, "status": "ended", "reason": ev.reason}
        if isinstance(ev, LoopError):
            log.warning("turn failed", extra={"sessionId": sid, "turnId": ev.turn_id, "kind": ev.kind,
                                              "retryable": ev.retryable})
            data: dict[str, Any] = {"retryable": ev.retryable, "kind": ev.kind}
            if ev.retry_after_s is not None:
                data["retryAfterMs"] = int(ev.retry_after_s * 1000)
            return {
                "_method": "ErrorNotification",
                "sessionId": sid,
                "turnId": ev.turn_id,
                "code": error_code_for(ev.kind),
                "message": ev.message,
                "data": data,
            }
        if isinstance(ev, ReasoningChunk):
            return None  # protocol v1 has no reasoning notification
        raise TypeError(f"unknown loop event {ev!r}")

"""The AI loop: one instance per session, no I/O of its own.

``AILoop`` drives a :class:`~server.loop.provider.ModelProvider` through the turns
of one session and reports everything it does as typed events
(:mod:`server.loop.events`) to a synchronous ``emit`` callback -- its delegate. It
knows nothing of WebSockets, FastAPI or JSON-RPC.

Turn shape::

    streaming -> [text chunks, tool calls] -> final chunk (tool_calls)
              -> awaiting_tool_results -> (all results in) -> streaming -> ...
              -> final chunk (stop | length | cancelled | error) -> idle

Two-phase operations keep the caller in charge of ordering: ``prepare_turn`` checks
and records a user message, ``begin_turn`` starts streaming; ``provide_tool_result``
records a result, ``continue_turn`` lets the turn go on. A server answers the
request between the two calls, so its response precedes the turn's output.

Pause holds output: everything a running turn emits passes a gate; while paused
the turn waits at the gate (and stops reading the provider), and resumes where it
stopped. ``cancel_turn`` and ``stop`` act at once, paused or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from server.loop.conversation import Conversation
from server.loop.events import (
    AIChunk,
    LoopError,
    LoopEvent,
    ReasoningChunk,
    SessionEnded,
    SessionStarted,
    SessionStatus,
    StatusChanged,
    ToolCallGenerated,
)
from server.loop.provider import (
    Finish,
    ModelProvider,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)

__all__ = ["AILoop", "LoopConfig", "LoopStateError", "UnknownToolCallError"]

log = logging.getLogger("ailoop.loop")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    first_chunk_timeout_s: float | None = 60.0
    """Longest wait for a model step's first event (keep-alives don't count)."""
    idle_timeout_s: float | None = 60.0
    """Longest gap between two events of a model step."""
    turn_timeout_s: float | None = 600.0
    """Longest total time spent streaming from the provider in one turn (tool waits
    and pauses excluded)."""
    max_history_messages: int = 200
    tool_result_timeout_s: float | None = None
    """How long a turn waits for all tool results of a step (None: for ever)."""
    max_pending_tool_calls: int = 64
    """Tool calls one model step may ask for."""


class _TurnFailed(Exception):
    """The turn cannot go on for a reason that is not the provider's."""

    def __init__(self, kind: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.kind, self.message, self.retryable = kind, message, retryable


class LoopStateError(Exception):
    """The operation is not allowed in the session's current status."""

    def __init__(self, message: str, status: SessionStatus) -> None:
        super().__init__(message)
        self.status = status


class UnknownToolCallError(Exception):
    """No tool call with this id is awaiting a result."""


@dataclass(eq=False, slots=True)
class _Turn:
    id: str
    task: asyncio.Task[None] | None = None
    message_id: str | None = None
    """Id of the assistant message being streamed (None between messages)."""
    partial_text: list[str] = field(default_factory=list)
    step_calls: list[ToolCall] = field(default_factory=list)
    step_recorded: bool = False
    pending: dict[str, ToolCall] = field(default_factory=dict)
    """Tool calls of the current step awaiting a result."""
    results: dict[str, tuple[Any, bool]] = field(default_factory=dict)
    results_ready: asyncio.Event = field(default_factory=asyncio.Event)
    streaming_elapsed: float = 0.0
    streamed: bool = False
    """`streaming` was reported for this turn."""
    cancel_early: bool = False
    """Cancelled before it began (same batch as its message): ends as soon as it begins."""


class _Watchdog:
    """One timer per model step instead of one per provider event.

    Before each wait the caller stores the wait's deadline (a float: no timer-heap
    work per event). The single timer re-arms itself when it fires early, and
    cancels the turn task only when the deadline it finds has passed while the task
    waits -- the same effect as an ``asyncio.timeout`` around every wait.
    """

    __slots__ = ("loop", "task", "deadline", "handle", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.task = task
        self.deadline: float | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.expired = False

    def wait_until(self, when: float | None) -> None:
        self.deadline = when
        if when is None:
            return
        h = self.handle
        if h is None or h.when() > when:
            if h is not None:
                h.cancel()
            self.handle = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.handle = None
        when = self.deadline
        if when is None:  # not waiting: the next wait_until() re-arms
            return
        if self.loop.time() >= when:
            self.expired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(when, self._fire)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class AILoop:
    """The loop of one session. Create it, ``start()`` it, then drive turns."""

    def __init__(
        self,
        provider: ModelProvider,
        emit: Callable[[LoopEvent], None],
        *,
        system_prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
        model: str | None = None,
        sampling: Mapping[str, Any] | None = None,
        config: LoopConfig = LoopConfig(),
        label: str | None = None,
    ) -> None:
        self.label = label
        """For logs only (the session id, when run by the server)."""
        self.provider = provider
        self._emit = emit
        self.tools = list(tools)
        self.model = model
        self.sampling = dict(sampling or {})
        self.config = config
        self.conversation = Conversation(system_prompt, config.max_history_messages)
        self._status: SessionStatus = "started"
        self._paused = False
        self._gate = asyncio.Event()
        self._gate.set()
        self._turn: _Turn | None = None
        self._turns = 0
        self._messages = 0

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> SessionStatus:
        """The status a client sees (``paused`` while paused)."""
        if self._status == "ended":
            return "ended"
        return "paused" if self._paused else self._status

    @property
    def turn_id(self) -> str | None:
        return self._turn.id if self._turn else None

    def pending_tool_calls(self) -> list[ToolCall]:
        """Tool calls of the current step still waiting for a result."""
        turn = self._turn
        if turn is None:
            return []
        return [c for i, c in turn.pending.items() if i not in turn.results]

    @property
    def has_running_task(self) -> bool:
        return bool(self._turn and self._turn.task and not self._turn.task.done())

    def _check_live(self) -> None:
        if self._status == "ended":
            raise LoopStateError("session has ended", "ended")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Announce the session (``ai_loop.session_started``)."""
        self._emit(SessionStarted())

    async def stop(self, reason: str) -> None:
        """End the session: cancel a turn in flight, then ``ai_loop.session_ended``."""
        if self._status == "ended":
            return
        if self._turn is not None:
            await self._cancel(self._turn, announce_idle=False)
        self._status = "ended"
        self._paused = False
        self._gate.set()
        self._emit(SessionEnded(reason))

    def pause(self) -> bool:
        """Hold output from now on. Returns False when already paused."""
        self._check_live()
        if self._paused:
            return False
        if self._status == "started":
            self._status = "idle"
        self._paused = True
        self._gate.clear()
        self._emit(StatusChanged("paused", self.turn_id))
        return True

    def resume(self) -> bool:
        """Release held output. Returns False when not paused."""
        self._check_live()
        if not self._paused:
            return False
        self._paused = False
        self._emit(StatusChanged(self._status, self.turn_id))
        self._gate.set()
        return True

    # ------------------------------------------------------------------ turns
    def prepare_turn(self, content: str) -> str:
        """Check that a turn may start and record the user message; returns the turn id."""
        self._check_live()
        if self._paused:
            raise LoopStateError("session is paused", "paused")
        if self._turn is not None:
            raise LoopStateError("a turn is already in flight", self.status)
        self._turns += 1
        self._turn = _Turn(id=f"turn_{self._turns}")
        self.conversation.add_user(content)
        return self._turn.id

    def begin_turn(self) -> None:
        """Start streaming the prepared turn (call after answering the request)."""
        turn = self._turn
        if turn is None or turn.task is not None:
            return
        if turn.cancel_early:  # cancelled in the same batch: its output follows the batch answer
            self._end_cancelled(turn, announce_idle=True)
            return
        turn.task = asyncio.get_running_loop().create_task(self._run_turn(turn), name=turn.id)

    def provide_tool_result(self, tool_call_id: str, result: Any, is_error: bool = False) -> int:
        """Record one tool result; returns how many calls of the step still wait."""
        self._check_live()
        turn = self._turn
        if turn is None or tool_call_id not in turn.pending or tool_call_id in turn.results:
            raise UnknownToolCallError(tool_call_id)
        turn.results[tool_call_id] = (result, is_error)
        return len(turn.pending) - len(turn.results)

    def continue_turn(self) -> None:
        """Let the turn go on if every tool call of its step has a result."""
        turn = self._turn
        if turn is not None and turn.pending and len(turn.results) == len(turn.pending):
            turn.results_ready.set()

    async def cancel_turn(self) -> str | None:
        """Cancel the turn in flight; returns its id, or None if there was none."""
        self._check_live()
        turn = self._turn
        if turn is None:
            return None
        await self._cancel(turn, announce_idle=True)
        return turn.id

    # ------------------------------------------------------------------ internals
    def _next_message_id(self) -> str:
        self._messages += 1
        return f"msg_{self._messages}"

    async def _out(self, event: LoopEvent) -> None:
        """Emit turn output, waiting first while the session is paused."""
        while not self._gate.is_set():  # re-checked: a pause may follow the resume at once (K8)
            await self._gate.wait()
        self._emit(event)

    async def _set_status(self, status: SessionStatus, turn_id: str | None) -> None:
        while not self._gate.is_set():  # re-checked: a pause may follow the resume at once (K8)
            await self._gate.wait()
        if status == "streaming" and self._turn is not None:
            self._turn.streamed = True
        self._status = status
        self._emit(StatusChanged(status, turn_id))

    async def _cancel(self, turn: _Turn, *, announce_idle: bool) -> None:
        if turn.task is None:
            # Prepared but not begun: its sendUserMessage response is not sent yet (a
            # batch), so nothing of the turn may be sent now (ORD-3).
            if announce_idle:
                turn.cancel_early = True
            else:  # the session is stopping: the turn never streams
                self._close_history(turn, "Cancelled by the user.")
                self._turn = None
                self._status = "idle"
            return
        if not turn.task.done():
            turn.task.cancel()
            await asyncio.wait({turn.task})
        if self._turn is not turn:  # the turn ended on its own meanwhile
            return
        self._end_cancelled(turn, announce_idle=announce_idle)

    def _end_cancelled(self, turn: _Turn, *, announce_idle: bool) -> None:
        if not turn.streamed and not self._paused:  # keep to the state machine: streaming first
            turn.streamed = True
            self._status = "streaming"
            self._emit(StatusChanged("streaming", turn.id))
        self._close_history(turn, "Cancelled by the user.")
        self._emit(AIChunk(turn.id, turn.message_id or self._next_message_id(), "", True, "cancelled"))
        self._turn = None
        self._status = "idle"
        if announce_idle and not self._paused:
            self._emit(StatusChanged("idle", None))

    def _close_history(self, turn: _Turn, note: str) -> None:
        """Keep the history valid after a turn ends abnormally."""
        if not turn.step_recorded and (turn.partial_text or turn.step_calls):
            self.conversation.add_assistant("".join(turn.partial_text), turn.step_calls or None)
            turn.step_recorded = True
        for call_id in turn.pending:
            if call_id not in turn.results:
                self.conversation.add_tool_result(call_id, note, is_error=True)

    async def _run_turn(self, turn: _Turn) -> None:
        try:
            await self._set_status("streaming", turn.id)
            while True:
                reason = await self._run_step(turn)
                if reason != "tool_calls":
                    break
                await self._set_status("awaiting_tool_results", turn.id)
                try:
                    async with asyncio.timeout(self.config.tool_result_timeout_s):
                        await turn.results_ready.wait()
                except TimeoutError:
                    raise _TurnFailed("tool_timeout", "tool results did not arrive in time", False) from None
                for call_id in turn.pending:  # in the order the model asked, not of arrival
                    result, is_error = turn.results[call_id]
                    self.conversation.add_tool_result(call_id, result, is_error)
                turn.pending, turn.results = {}, {}
                turn.results_ready.clear()
                await self._set_status("streaming", turn.id)
        except ProviderError as exc:
            await self._fail(turn, exc.kind, exc.message, exc.retryable, exc.retry_after_s)
        except _TurnFailed as exc:
            await self._fail(turn, exc.kind, exc.message, exc.retryable, None)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: end the turn, keep the session
            log.exception("turn failed with an internal error", extra={"turnId": turn.id, "sessionId": self.label})
            await self._fail(turn, "internal", "internal error while running the turn", True, None)
        else:
            self._turn = None
            await self._set_status("idle", None)

    async def _fail(
        self, turn: _Turn, kind: str, message: str, retryable: bool, retry_after_s: float | None
    ) -> None:
        await self._out(LoopError(turn.id, kind, message, retryable, retry_after_s))
        self._close_history(turn, "Not run: the turn failed.")
        await self._out(AIChunk(turn.id, turn.message_id or self._next_message_id(), "", True, "error"))
        self._turn = None
        await self._set_status("idle", None)

    async def _next_event(self, turn: _Turn, it: Any, first: bool, wd: _Watchdog) -> Any:
        cfg = self.config
        limit = cfg.first_chunk_timeout_s if first else cfg.idle_timeout_s
        which = "first chunk" if first else "next chunk"
        if cfg.turn_timeout_s is not None:
            left = cfg.turn_timeout_s - turn.streaming_elapsed
            if limit is None or left < limit:
                limit, which = max(left, 0.0), "end of turn"
        loop = wd.loop
        t0 = loop.time()
        wd.wait_until(None if limit is None else t0 + limit)
        try:
            return await anext(it)
        except asyncio.CancelledError:
            if not wd.expired:
                raise
            wd.expired = False
            wd.task.uncancel()
            raise ProviderError(
                f"AI provider timed out waiting for the {which}", kind="timeout", retryable=True
            ) from None
        finally:
            wd.deadline = None
            turn.streaming_elapsed += loop.time() - t0

    async def _run_step(self, turn: _Turn) -> str:
        message_id = self._next_message_id()
        turn.message_id, turn.partial_text, turn.step_calls, turn.step_recorded = message_id, [], [], False
        request = ModelRequest(self.conversation.to_openai(), self.tools, self.model, self.sampling)
        finish: Finish | None = None
        calls: list[ToolCall] = []
        first = True
        wd = _Watchdog(asyncio.get_running_loop(), asyncio.current_task())  # type: ignore[arg-type]
        try:
            async with aclosing(self.provider.stream(request)) as stream:
                it = aiter(stream)
                while True:
                    try:
                        ev = await self._next_event(turn, it, first, wd)
                    except StopAsyncIteration:
                        break
                    first = False
                    if isinstance(ev, TextDelta):
                        if ev.text:
                            turn.partial_text.append(ev.text)
                            await self._out(AIChunk(turn.id, message_id, ev.text))
                    elif isinstance(ev, ToolCall):
                        # Held until the step finishes: a step that fails never leaves
                        # tool calls behind without a final chunk (ORD-5).
                        calls.append(ev)
                        if len(calls) > self.config.max_pending_tool_calls:
                            raise _TurnFailed(
                                "limit", f"the model asked for more than {self.config.max_pending_tool_calls} tool calls", False
                            )
                    elif isinstance(ev, ReasoningDelta):
                        await self._out(ReasoningChunk(turn.id, message_id, ev.text))
                    elif isinstance(ev, Finish):
                        finish = ev
                        break
        finally:
            wd.close()
        if finish is None:
            raise ProviderError("AI provider stream ended without finishing", kind="truncated", retryable=True)
        reason = "tool_calls" if calls else finish.reason
        if reason == "tool_calls" and not calls:
            raise ProviderError("AI provider asked for tools but sent none", kind="protocol", retryable=False)
        while not self._gate.is_set():  # re-checked: a pause may follow the resume at once (K8)
            await self._gate.wait()
        # From here to the final chunk nothing awaits: the step's tool calls and its
        # final chunk leave together, even around a pause.
        turn.step_calls = calls
        self.conversation.add_assistant("".join(turn.partial_text), calls or None)
        turn.step_recorded = True
        for call in calls:
            turn.pending[call.id] = call
            self._emit(ToolCallGenerated(turn.id, message_id, call.id, call.name, call.arguments))
        self._emit(AIChunk(turn.id, message_id, "", True, reason, finish.usage))  # type: ignore[arg-type]
        turn.message_id = None
        return reason

"""Sans-I/O assembly of OpenRouter ``chat.completion.chunk`` objects into provider events.

Feed each parsed chunk to :meth:`ChunkAssembler.feed`; it returns the events the
chunk produced and raises :class:`~server.loop.provider.ProviderError` when the
chunk reports a failure. When the stream ends (``[DONE]``, EOF, or as soon as the
finish and the usage are both known), :meth:`ChunkAssembler.finish` returns the
closing events.

Rules (docs/openrouter.md, "Stream parsing"):

* ``delta.content`` -> :class:`TextDelta`; ``delta.reasoning`` (or, failing that,
  the text of ``reasoning_details``) -> :class:`ReasoningDelta`, never mixed in.
* ``delta.tool_calls`` fragments merge by ``index``: id, type and name are taken
  once (later empty values never overwrite them), argument pieces are
  concatenated and parsed as JSON only once the step has finished. Calls may
  interleave or share a delta; a new id at a used index starts a new call.
  While fragments accumulate no tool event exists yet, so each fragment-carrying
  chunk yields an empty ``TextDelta("")`` as a progress beat (the loop ignores its
  text but counts it against its idle timeout, so a long argument stream is not
  mistaken for a stall).
* Only the *first* ``finish_reason`` counts: OpenRouter repeats it on the usage
  chunk, and acting twice would run the tools twice.
* ``usage`` is accepted on any chunk: with ``choices: []``, with a content-free
  choice and ``finish_reason: null``, or with the finish reason repeated.
* A top-level ``error`` object, a choice-level ``error``, or ``finish_reason:
  "error"`` without any error object, is a failure.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from server.llm.errors import Redactor, error_from_chunk
from server.loop.jsonutil import loads
from server.loop.provider import (
    Finish,
    ProviderError,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    Usage,
)

__all__ = ["ChunkAssembler"]

log = logging.getLogger("ailoop.llm.openrouter")

_FINISH_MAP: dict[str, Literal["stop", "length", "tool_calls"]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
}


@dataclass(slots=True)
class _PendingCall:
    index: int
    seq: int
    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt = _as_int(raw.get("prompt_tokens"))
    completion = _as_int(raw.get("completion_tokens"))
    total = _as_int(raw.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total)


def _reasoning_text(delta: Mapping[str, Any]) -> str:
    text = delta.get("reasoning")
    if isinstance(text, str) and text:
        return text
    text = delta.get("reasoning_content")  # DeepSeek-style upstreams
    if isinstance(text, str) and text:
        return text
    parts: list[str] = []
    for item in delta.get("reasoning_details") or ():
        if isinstance(item, Mapping):
            is_text = item.get("type") == "reasoning.text"
            piece = item.get("text") if is_text else item.get("summary")
            if isinstance(piece, str):
                parts.append(piece)
    return "".join(parts)


class ChunkAssembler:
    """State of one streamed model step."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._calls: list[_PendingCall] = []
        self._by_index: dict[int, _PendingCall] = {}
        self._calls_emitted = False
        self.output_started = False
        """True once the stream carried model output (text, reasoning or tool fragments)."""
        self.finish_reason: str | None = None
        """The first non-null ``finish_reason`` (raw)."""
        self.native_finish_reason: str | None = None
        self.usage: Usage | None = None
        self.generation_id: str | None = None
        self.model: str | None = None
        self.upstream: str | None = None
        """The upstream provider that served the request (OpenRouter's ``provider``)."""

    @property
    def complete(self) -> bool:
        """Finish and usage both known: nothing more is needed from the stream."""
        return self.finish_reason is not None and self.usage is not None

    def feed(self, chunk: Any) -> list[ProviderEvent]:
        """Take one parsed chunk; return its events (raises on an error chunk)."""
        if not isinstance(chunk, Mapping):
            raise ProviderError(
                "OpenRouter sent a stream event that is not a JSON object",
                kind="protocol",
                retryable=False,
            )
        for attr, key in (("generation_id", "id"), ("model", "model"), ("upstream", "provider")):
            value = chunk.get(key)
            if isinstance(value, str) and getattr(self, attr) is None:
                setattr(self, attr, value)
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        if chunk.get("error"):
            raise self._chunk_error(chunk["error"])
        events: list[ProviderEvent] = []
        fragments = False
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) not in (0, None):
                continue
            if choice.get("error"):
                raise self._chunk_error(choice["error"])
            delta = choice.get("delta")
            if self.finish_reason is None and isinstance(delta, Mapping):
                fragments = self._delta(delta, events) or fragments
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason and self.finish_reason is None:
                self.finish_reason = reason
                native = choice.get("native_finish_reason")
                self.native_finish_reason = native if isinstance(native, str) else None
                if reason == "error":
                    raise self._finish_error()
                events.extend(self._emit_calls())
        if fragments and not events:
            events.append(TextDelta(""))
        return events

    def finish(self) -> list[ProviderEvent]:
        """Closing events once the stream ended well: outstanding tool calls, then Finish."""
        events = self._emit_calls()
        raw = self.finish_reason
        reason = _FINISH_MAP.get(raw or "stop", "stop")
        if raw is not None and raw not in _FINISH_MAP:
            log.warning("OpenRouter finish_reason %r treated as stop", raw)
        elif raw == "content_filter":
            log.warning("OpenRouter stopped the reply with finish_reason content_filter")
        if self._calls:
            reason = "tool_calls"
        events.append(Finish(reason, self.usage))
        return events

    # ------------------------------------------------------------------ internals
    def _delta(self, delta: Mapping[str, Any], events: list[ProviderEvent]) -> bool:
        reasoning = _reasoning_text(delta)
        if reasoning:
            self.output_started = True
            events.append(ReasoningDelta(reasoning))
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self.output_started = True
                events.append(TextDelta(text))
        fragments = delta.get("tool_calls")
        if not isinstance(fragments, list) or not fragments:
            return False
        for fragment in fragments:
            if isinstance(fragment, Mapping):
                self._merge(fragment)
        self.output_started = True
        return True

    def _merge(self, fragment: Mapping[str, Any]) -> None:
        index = fragment.get("index")
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) else ""
        call: _PendingCall | None
        if isinstance(index, int) and not isinstance(index, bool):
            call = self._by_index.get(index)
        else:  # no index: match by id, else continue the latest call
            call = next((c for c in self._calls if call_id and c.id == call_id), None)
            if call is None and not call_id and self._calls:
                call = self._calls[-1]
            index = call.index if call else (max(self._by_index, default=-1) + 1)
        if call is None or (call_id and call.id and call_id != call.id):
            call = _PendingCall(index=index, seq=len(self._calls))
            self._calls.append(call)
            self._by_index[index] = call
        if call_id and not call.id:
            call.id = call_id
        function = fragment.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
            if isinstance(name, str) and name and not call.name:
                call.name = name
            args = function.get("arguments")
            if isinstance(args, str):
                call.pieces.append(args)
            elif isinstance(args, Mapping):  # some upstreams send an object, not a string
                call.pieces.append(orjson.dumps(args).decode())

    def _emit_calls(self) -> list[ProviderEvent]:
        if self._calls_emitted:
            return []
        self._calls_emitted = True
        events: list[ProviderEvent] = []
        for call in sorted(self._calls, key=lambda c: (c.index, c.seq)):
            if not call.name:
                raise ProviderError(
                    "OpenRouter sent a tool call without a function name",
                    kind="protocol",
                    retryable=False,
                )
            raw = "".join(call.pieces)
            if not raw.strip():
                raw = "{}"  # no arguments; an empty string is not valid JSON in history
            try:
                arguments = loads(raw)
            except ValueError:  # orjson and stdlib decode errors alike
                arguments = None
            if not isinstance(arguments, dict):
                hint = " (the reply hit max_tokens)" if self.finish_reason == "length" else ""
                raise ProviderError(
                    f"the model produced invalid JSON arguments for tool {call.name!r}{hint}",
                    kind="protocol",
                    retryable=False,
                )
            call_id = call.id or f"call_{uuid.uuid4().hex[:24]}"
            events.append(ToolCall(call_id, call.name, arguments, raw))
        return events

    def _chunk_error(self, error: Any) -> ProviderError:
        return error_from_chunk(error, output_started=self.output_started, redact=self._redact)

    def _finish_error(self) -> ProviderError:
        native = ""
        if self.native_finish_reason:
            native = f" (native reason: {self._redact(self.native_finish_reason)})"
        return ProviderError(
            f"OpenRouter stream ended with finish_reason 'error'{native}",
            kind="midstream" if self.output_started else "unavailable",
            retryable=True,
        )

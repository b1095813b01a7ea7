"""Record a provider's SSE stream with its timing, and turn a recording back into events.

A recording is a JSON fixture file::

    {
      "format": "ailoop-sse-recording/1",
      "request": {...},              # the request body that was sent (never the headers)
      "status": 200,
      "headers": {"content-type": "text/event-stream", ...},   # content-type, retry-after,
                                                              # x-generation-id only
      "events": [{"at_ms": 0.4, "data": ": OPENROUTER PROCESSING"},
                 {"at_ms": 51.2, "data": "data: {...}"}, ...],
      "body": null,                  # the body of a non-SSE response (errors, non-streaming)
      "end": "done",                 # done ([DONE] seen) | eof (clean end) | dropped (cut)
      "end_at_ms": 130.0
    }

``at_ms`` is when the event's last byte arrived, counted from the moment the request
was sent. ``data`` is the event's text without its terminating blank line.

:func:`record` captures one; a scenario step ``replay: FILE`` (or ``python -m simulator
--replay FILE``) plays it back with the same timing -- byte for byte over HTTP, and
in-process as the provider events a client would have decoded from it
(:func:`provider_events`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from server.loop.provider import (
    Finish,
    ProviderError,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    Usage,
)

__all__ = ["FORMAT", "RecordedEvent", "Recording", "RecordingError", "provider_events", "record"]

FORMAT = "ailoop-sse-recording/1"
_KEPT_HEADERS = ("content-type", "retry-after", "x-generation-id")


class RecordingError(ValueError):
    """A fixture file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    at_ms: float
    data: str


@dataclass(frozen=True)
class Recording:
    status: int
    events: list[RecordedEvent] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    end: Literal["done", "eof", "dropped"] = "done"
    end_at_ms: float = 0.0
    request: dict[str, Any] | None = None

    @property
    def is_sse(self) -> bool:
        return "text/event-stream" in self.headers.get("content-type", "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "request": self.request,
            "status": self.status,
            "headers": self.headers,
            "events": [{"at_ms": e.at_ms, "data": e.data} for e in self.events],
            "body": self.body,
            "end": self.end,
            "end_at_ms": self.end_at_ms,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Recording:
        """Raises: RecordingError: the data is not a recording."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RecordingError(f"not a recording (expected \"format\": \"{FORMAT}\")")
        try:
            events = [RecordedEvent(float(e["at_ms"]), str(e["data"])) for e in data.get("events") or []]
            end = data.get("end", "done")
            if end not in ("done", "eof", "dropped"):
                raise ValueError(f"end must be done, eof or dropped, not {end!r}")
            return cls(
                status=int(data["status"]),
                events=events,
                headers={str(k).lower(): str(v) for k, v in (data.get("headers") or {}).items()},
                body=data.get("body"),
                end=end,
                end_at_ms=float(data.get("end_at_ms", events[-1].at_ms if events else 0.0)),
                request=data.get("request"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"malformed recording: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Raises: RecordingError: the file is unreadable or not a recording."""
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise RecordingError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{path} is not JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")


async def record(
    url: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
    timeout: float = 120.0,
) -> Recording:
    """POST ``body`` to ``url`` and capture the response with the arrival time of each
    SSE event. Headers (an ``Authorization`` for instance) are sent, never stored."""
    own = client is None
    client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0))
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def ms() -> float:
        return round((loop.time() - t0) * 1000.0, 3)

    events: list[RecordedEvent] = []
    end: Literal["done", "eof", "dropped"] = "eof"
    try:
        async with client.stream("POST", url, json=dict(body), headers=dict(headers or {})) as resp:
            kept = {k: resp.headers[k] for k in _KEPT_HEADERS if k in resp.headers}
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                try:
                    text = (await resp.aread()).decode("utf-8", "replace")
                except httpx.TransportError:
                    return Recording(resp.status_code, [], kept, None, "dropped", ms(), dict(body))
                return Recording(resp.status_code, [], kept, text, "eof", ms(), dict(body))
            buf = b""
            try:
                async for piece in resp.aiter_raw():
                    buf = (buf + piece).replace(b"\r\n", b"\n")
                    while b"\n\n" in buf:
                        raw, buf = buf.split(b"\n\n", 1)
                        data = raw.decode("utf-8")
                        events.append(RecordedEvent(ms(), data))
                        if data.strip() == "data: [DONE]":
                            end = "done"
            except httpx.TransportError:
                end = "dropped"
            return Recording(resp.status_code, events, kept, None, end, ms(), dict(body))
    finally:
        if own:
            await client.aclose()


# ---------------------------------------------------------------------- decoding
def _sse_data(event: str) -> str | None:
    lines = [ln for ln in event.split("\n") if ln.startswith("data:")]
    if not lines:
        return None  # a comment (keep-alive) or a field we ignore
    return "\n".join(ln[5:].removeprefix(" ") for ln in lines)


def _status_error(status: int, body: str | None, retry_after: str | None) -> ProviderError:
    message = f"HTTP {status}"
    try:
        err = orjson.loads(body or "")["error"]
        message = str(err.get("message") or message)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass
    after = None
    if retry_after:
        try:
            after = float(retry_after)
        except ValueError:
            after = None
    if status == 429:
        return ProviderError(message, kind="rate_limit", retryable=True, retry_after_s=after, status=status)
    if status == 402:
        return ProviderError(message, kind="payment", retryable=after is not None, retry_after_s=after, status=status)
    if status in (401, 403):
        return ProviderError(message, kind="auth", retryable=False, status=status)
    if status == 408:
        return ProviderError(message, kind="timeout", retryable=True, status=status)
    if status >= 500:
        return ProviderError(message, kind="unavailable", retryable=True, retry_after_s=after, status=status)
    return ProviderError(message, kind="bad_request", retryable=False, status=status)


def _finish_reason(value: str) -> Literal["stop", "length", "tool_calls"]:
    return value if value in ("stop", "length", "tool_calls") else "stop"  # type: ignore[return-value]


def provider_events(rec: Recording) -> list[tuple[float, ProviderEvent | ProviderError]]:
    """What a client decodes from the recording, each item with the second at which it
    becomes known. A trailing :class:`ProviderError` is to be raised; a list that ends
    without a ``Finish`` or an error is a truncated stream."""
    end_s = rec.end_at_ms / 1000.0
    if rec.status != 200:
        return [(end_s, _status_error(rec.status, rec.body, rec.headers.get("retry-after")))]
    if not rec.is_sse:
        return _completion_events(rec, end_s)
    out: list[tuple[float, ProviderEvent | ProviderError]] = []
    calls: list[list[str]] = []  # [id, name, arguments] in wire order
    by_index: dict[int, int] = {}
    finish: str | None = None
    usage: Usage | None = None
    done_at = end_s
    for ev in rec.events:
        at = ev.at_ms / 1000.0
        data = _sse_data(ev.data)
        if data is None:
            continue
        if data.strip() == "[DONE]":
            done_at = at
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.append((at, ProviderError("unreadable chunk in the recording", kind="protocol", retryable=False)))
            return out
        had_output = any(isinstance(item, TextDelta | ReasoningDelta) for _, item in out) or bool(calls)
        if chunk.get("error"):
            err = chunk["error"]
            msg = str(err.get("message") or "error in stream") if isinstance(err, dict) else str(err)
            kind = "midstream" if had_output else "unavailable"
            out.append((at, ProviderError(msg, kind=kind, retryable=True)))
            return out
        if isinstance(chunk.get("usage"), dict):
            u = chunk["usage"]
            usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), int(u.get("total_tokens", 0)))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning"):
                out.append((at, ReasoningDelta(delta["reasoning"])))
            if delta.get("content"):
                out.append((at, TextDelta(delta["content"])))
            for frag in delta.get("tool_calls") or []:
                idx = int(frag.get("index", 0))
                fid = frag.get("id")
                fn = frag.get("function") or {}
                if idx not in by_index or (fid and calls[by_index[idx]][0] and fid != calls[by_index[idx]][0]):
                    by_index[idx] = len(calls)
                    calls.append(["", "", ""])
                call = calls[by_index[idx]]
                call[0] = call[0] or (fid or "")
                call[1] = call[1] or (fn.get("name") or "")
                call[2] += fn.get("arguments") or ""
            reason = choice.get("finish_reason")
            if reason == "error":
                kind = "midstream" if had_output else "unavailable"
                out.append((at, ProviderError("the stream finished with an error", kind=kind, retryable=True)))
                return out
            if reason and finish is None:
                finish = reason
    if finish is None:
        return out  # truncated
    for call_id, name, raw in calls:
        try:
            args = orjson.loads(raw or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            msg = f"tool call {name} arguments are not a valid JSON object"
            out.append((done_at, ProviderError(msg, kind="protocol", retryable=False)))
            return out
        out.append((done_at, ToolCall(call_id, name, args, raw or "{}")))
    out.append((done_at, Finish(_finish_reason(finish), usage)))
    return out


def _completion_events(rec: Recording, at: float) -> list[tuple[float, ProviderEvent | ProviderError]]:
    try:
        body = orjson.loads(rec.body or "")
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return [(at, ProviderError("unreadable response in the recording", kind="protocol", retryable=False))]
    out: list[tuple[float, ProviderEvent | ProviderError]] = []
    if message.get("content"):
        out.append((at, TextDelta(message["content"])))
    for call in message.get("tool_calls") or []:
        raw = call["function"].get("arguments") or "{}"
        out.append((at, ToolCall(call["id"], call["function"]["name"], orjson.loads(raw), raw)))
    u = body.get("usage") or None
    usage = Usage(u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) if u else None
    out.append((at, Finish(_finish_reason(choice.get("finish_reason") or "stop"), usage)))
    return out

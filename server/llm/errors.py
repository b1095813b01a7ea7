"""Map what OpenRouter reports to :class:`~server.loop.provider.ProviderError`.

Two places carry an upstream error (see docs/openrouter.md):

* before the stream is committed: an HTTP status other than 200 with a JSON body
  ``{"error": {"code": <int>, "message": <str>, "metadata"?: {...}}}``;
* after it: a chunk with a top-level ``error`` object (``code`` is an int *or* a
  string) and usually ``finish_reason: "error"``.

Mapping (status -> kind, retryable)::

    400 404 413 422 other 4xx   bad_request   no
    401 403                     auth          no
    402                         payment       only if metadata says the in-flight
                                              budget is the limit
    408                         timeout       yes
    429                         rate_limit    yes (no for the free-model daily cap)
    5xx                         unavailable   yes

Every upstream text passes through a :class:`Redactor` before it is put in an
error, so an API key echoed back by the upstream never reaches a log or a client.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from server.loop.provider import ProviderError, ProviderErrorKind

__all__ = [
    "Redactor",
    "error_from_chunk",
    "error_from_status",
    "parse_retry_after",
]

_MAX_UPSTREAM_TEXT = 300
_KEY_PATTERN = re.compile(r"sk-or-[A-Za-z0-9_-]{6,}")


class Redactor:
    """Removes the API key (and anything shaped like an OpenRouter key) from text."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or None

    def __call__(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return _KEY_PATTERN.sub("[redacted]", text)

    def __repr__(self) -> str:
        return "Redactor(***)"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


def _status_kind(status: int) -> tuple[ProviderErrorKind, bool, str]:
    if status == 429:
        return "rate_limit", True, "rate limit"
    if status == 408:
        return "timeout", True, "request timeout"
    if status in (401, 403):
        what = "authentication failed" if status == 401 else "request forbidden"
        return "auth", False, what
    if status == 402:
        return "payment", False, "insufficient credits"
    if status >= 500:
        what = "service unavailable" if status in (502, 503) else "server error"
        return "unavailable", True, what
    if 400 <= status < 500:
        return "bad_request", False, "request rejected"
    return "protocol", False, "unexpected response"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_UPSTREAM_TEXT else text[: _MAX_UPSTREAM_TEXT - 1] + "…"


def _in_flight_budget(metadata: Any) -> bool:
    return isinstance(metadata, Mapping) and (
        metadata.get("limit_source") == "openrouter_in_flight_budget"
        or metadata.get("reason") == "in_flight_budget_exhausted"
    )


def _error_object(body: bytes) -> Mapping[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), Mapping):
        return parsed["error"]
    return None


def error_from_status(
    status: int, body: bytes, headers: Mapping[str, str], redact: Redactor
) -> ProviderError:
    """The error for a response whose status is not 200 (body already read)."""
    kind, retryable, what = _status_kind(status)
    err = _error_object(body)
    if err is not None:
        upstream = str(err.get("message") or "")
        metadata = err.get("metadata")
    else:
        upstream = body[:_MAX_UPSTREAM_TEXT * 2].decode("utf-8", "replace")
        metadata = None
    if kind == "payment" and _in_flight_budget(metadata):
        retryable, what = True, "in-flight budget exhausted"
    if kind == "rate_limit" and "free-models-per-day" in upstream:
        retryable, what = False, "daily free-model limit reached"
    retry_after = parse_retry_after(headers.get("retry-after")) if retryable else None
    message = f"OpenRouter {what} (HTTP {status})"
    if upstream.strip():
        message += f": {redact(_clip(upstream))}"
    return ProviderError(
        message, kind=kind, retryable=retryable, retry_after_s=retry_after, status=status
    )


def error_from_chunk(error: Any, *, output_started: bool, redact: Redactor) -> ProviderError:
    """The error for an in-stream ``error`` object.

    After output has started the kind is always ``midstream``; before, a numeric
    code is mapped like an HTTP status (the code is never reported as *our* status).
    """
    if not isinstance(error, Mapping):
        error = {"message": str(error)}
    code = error.get("code")
    upstream = redact(_clip(str(error.get("message") or "no message")))
    metadata = error.get("metadata")
    numeric: int | None = None
    if isinstance(code, int) and not isinstance(code, bool):
        numeric = code
    elif isinstance(code, str) and code.strip().isdigit():
        numeric = int(code)
    kind: ProviderErrorKind
    if numeric is not None and 400 <= numeric < 600:
        kind, retryable, _ = _status_kind(numeric)
        if kind == "payment" and _in_flight_budget(metadata):
            retryable = True
    elif isinstance(metadata, Mapping) and metadata.get("error_type") == "rate_limit_exceeded":
        kind, retryable = "rate_limit", True
    else:
        kind, retryable = "unavailable", True
    if output_started:
        kind = "midstream"
    label = f" [{redact(str(code))}]" if code not in (None, "") else ""
    return ProviderError(
        f"OpenRouter stream failed{label}: {upstream}", kind=kind, retryable=retryable
    )

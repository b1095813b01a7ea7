"""Upstream error mapping: status and in-stream error objects to ProviderError."""

from __future__ import annotations

import json

import pytest

from server.llm.errors import Redactor, error_from_chunk, error_from_status, parse_retry_after

from .streams import API_KEY

redact = Redactor(API_KEY)


def body(code: int, message: str, metadata: dict | None = None) -> bytes:
    err: dict = {"code": code, "message": message}
    if metadata is not None:
        err["metadata"] = metadata
    return json.dumps({"error": err, "user_id": "u"}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "bad_request", False),
        (401, "auth", False),
        (402, "payment", False),
        (403, "auth", False),
        (404, "bad_request", False),
        (408, "timeout", True),
        (413, "bad_request", False),
        (429, "rate_limit", True),
        (500, "unavailable", True),
        (502, "unavailable", True),
        (503, "unavailable", True),
        (504, "unavailable", True),
    ],
)
def test_status_mapping(status: int, kind: str, retryable: bool) -> None:
    """Each documented status maps to its kind, with retryable set as the issue says."""
    exc = error_from_status(status, body(status, "upstream says no"), {}, redact)
    assert (exc.kind, exc.retryable, exc.status) == (kind, retryable, status)
    assert f"HTTP {status}" in exc.message and "upstream says no" in exc.message


def test_402_in_flight_budget_is_retryable_with_retry_after() -> None:
    """Only the in-flight budget flavour of 402 is worth retrying."""
    meta = {"limit_source": "openrouter_in_flight_budget", "reason": "in_flight_budget_exhausted"}
    exc = error_from_status(402, body(402, "In-flight budget exhausted", meta), {"retry-after": "2"}, redact)
    assert (exc.kind, exc.retryable, exc.retry_after_s) == ("payment", True, 2.0)
    for source in ("openrouter_credits", "openrouter_key_limit"):
        exc = error_from_status(402, body(402, "more credits", {"limit_source": source}), {"retry-after": "2"}, redact)
        assert (exc.kind, exc.retryable, exc.retry_after_s) == ("payment", False, None)


def test_free_model_daily_cap_is_not_retryable() -> None:
    """A 429 for the free-model daily cap will not clear by retrying."""
    exc = error_from_status(429, body(429, "Rate limit exceeded: free-models-per-day"), {}, redact)
    assert (exc.kind, exc.retryable) == ("rate_limit", False)


def test_non_json_error_body_is_reported_raw() -> None:
    """A proxy's HTML error page still yields a readable message."""
    exc = error_from_status(502, b"<html>Bad Gateway</html>", {}, redact)
    assert exc.kind == "unavailable" and "Bad Gateway" in exc.message


@pytest.mark.parametrize(
    ("code", "started", "kind", "retryable"),
    [
        ("server_error", True, "midstream", True),
        ("server_error", False, "unavailable", True),
        (429, False, "rate_limit", True),
        ("502", False, "unavailable", True),
        (400, False, "bad_request", False),
        (400, True, "midstream", False),
    ],
)
def test_chunk_error_mapping(code: object, started: bool, kind: str, retryable: bool) -> None:
    """In-stream codes (int or string) map by code before output, to midstream after."""
    exc = error_from_chunk({"code": code, "message": "boom"}, output_started=started, redact=redact)
    assert (exc.kind, exc.retryable, exc.status) == (kind, retryable, None)
    assert "boom" in exc.message


def test_retry_after_forms() -> None:
    """Delta-seconds and HTTP-dates both parse; junk is ignored."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412500.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None


def test_redactor_removes_key_and_key_shapes() -> None:
    """The configured key and anything shaped like an OpenRouter key are removed."""
    text = redact(f"bad key {API_KEY} and sk-or-v1-deadbeefdeadbeef")
    assert API_KEY not in text and "deadbeef" not in text and text.count("[redacted]") == 2

"""Faults the simulated provider can inject, and what a client sees for each.

=========================  ==========================================  ==========================================
kind                       in-process (``SimulatorProvider.stream``)   HTTP face (OpenRouter wire format)
=========================  ==========================================  ==========================================
rate_limit                 ``ProviderError(kind="rate_limit",          HTTP 429, ``Retry-After`` header,
                           retry_after_s, status=429)`` before output  JSON ``{"error": {...}}`` body
unavailable                ``ProviderError(kind="unavailable",         HTTP 503 (or ``status: 502``), JSON error
                           status=503|502)`` before output             body; ``Retry-After`` if given
payment                    ``ProviderError(kind="payment",             HTTP 402, JSON error body; with
                           status=402)``; retryable only with          ``retry_after_s`` it is the in-flight
                           ``retry_after_s`` (in-flight budget)        budget variant with ``Retry-After``
error_before_first_chunk   ``ProviderError(kind="unavailable")``       HTTP 200, then an error chunk (top-level
                           before output                               ``error``, finish_reason ``error``) as the
                                                                       first and only event; no ``[DONE]``
midstream                  ``after_chunks`` chunks, then               ``after_chunks`` chunks, then the error
                           ``ProviderError(kind="midstream")``         chunk; no ``[DONE]``
drop                       ``after_chunks`` chunks, then the stream    ``after_chunks`` chunks, then the
                           ends with no ``Finish`` (the loop reports   connection is cut mid-body (``mode:
                           it as truncated)                            reset``, httpx raises RemoteProtocolError)
                                                                       or the body ends cleanly (``mode: eof``);
                                                                       no finish_reason, no ``[DONE]``
hang                       ``after_chunks`` chunks, then nothing,      ``after_chunks`` chunks, then nothing but
                           ever (the loop's timeout ends it)           keep-alive comments (``keepalive: false``:
                                                                       silence) until the client gives up
malformed_args             ``ProviderError(kind="protocol")`` where    the tool call's arguments string is not
                           tool call ``call`` would be yielded         valid JSON (its last character is cut off)
duplicate_finish           ``Finish`` is yielded twice                 the finish chunk is sent twice (then the
                                                                       usage chunk and ``[DONE]``)
=========================  ==========================================  ==========================================

Every fault takes ``probability`` (default 1): it fires on a draw from a random
generator seeded by the seed and the request, so the same request always gets the
same fault, or none.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FAULT_KINDS", "FaultKind", "FaultSpec"]

FaultKind = Literal[
    "rate_limit",
    "unavailable",
    "midstream",
    "hang",
    "payment",
    "error_before_first_chunk",
    "drop",
    "malformed_args",
    "duplicate_finish",
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]

# Which optional parameters each kind reads (probability and message are common).
_PARAMS: dict[str, set[str]] = {
    "rate_limit": {"retry_after_s"},
    "unavailable": {"status", "retry_after_s"},
    "payment": {"retry_after_s"},
    "error_before_first_chunk": {"code"},
    "midstream": {"after_chunks", "code"},
    "drop": {"after_chunks", "mode"},
    "hang": {"after_chunks", "keepalive"},
    "malformed_args": {"call"},
    "duplicate_finish": set(),
}
_OPTIONAL = ("retry_after_s", "status", "code", "after_chunks", "mode", "keepalive", "call")


class FaultSpec(BaseModel):
    """One fault, as written in a scenario (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    probability: float = Field(1.0, ge=0.0, le=1.0)
    message: str | None = None
    retry_after_s: float | None = Field(None, ge=0)
    status: Literal[502, 503] | None = None
    code: Any = None
    """The error code in the error chunk: an integer or a string (default 502)."""
    after_chunks: int | None = Field(None, ge=0)
    mode: Literal["reset", "eof"] | None = None
    keepalive: bool | None = None
    call: int | None = Field(None, ge=0)

    @field_validator("code")
    @classmethod
    def _code(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
            raise ValueError("code must be an integer or a string")
        return value

    @model_validator(mode="after")
    def _applicable(self) -> FaultSpec:
        allowed = _PARAMS[self.kind]
        for key in _OPTIONAL:
            if getattr(self, key) is not None and key not in allowed:
                raise ValueError(f"{key!r} is not a parameter of fault {self.kind!r}")
        return self

"""The one small streaming interface every AI provider implements.

A provider is given the conversation (OpenAI chat format) and the declared tools,
and yields, in order::

    TextDelta* / ReasoningDelta* / ToolCall*  ...  Finish

or raises :class:`ProviderError` (before or after some output). Tool calls are
yielded complete (id, name, parsed arguments); assembling fragments is the
provider's job. A provider that ends its stream without a ``Finish`` is treated by
the loop as truncated (an error), never as a success.

Cancellation: the loop consumes ``stream()`` inside ``contextlib.aclosing``; when
a turn is cancelled the generator is closed at once, and a provider must release
its upstream connection in its ``finally``.

Error tree (drawn as websockets and httpx do)::

    ProviderError                 kind, retryable, retry_after_s, status
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "Finish",
    "ModelProvider",
    "ModelRequest",
    "ProviderError",
    "ProviderErrorKind",
    "ProviderEvent",
    "ReasoningDelta",
    "TextDelta",
    "ToolCall",
    "Usage",
]

ProviderErrorKind: TypeAlias = Literal[
    "rate_limit",  # 429: retryable, retry_after_s when known
    "unavailable",  # 5xx, connection refused: retryable
    "midstream",  # the stream failed after output had started: retryable as a new turn
    "truncated",  # the stream ended with no finish: retryable as a new turn
    "timeout",  # no first chunk / gap / whole turn too long: retryable
    "bad_request",  # 400, 404, invalid arguments: not retryable
    "auth",  # 401, 403: not retryable
    "payment",  # 402: retryable only when the metadata says so
    "protocol",  # the upstream sent something we cannot read: not retryable
]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the loop asks of a provider for one model step."""

    messages: Sequence[Mapping[str, Any]]
    """The conversation in OpenAI chat format (system, user, assistant, tool)."""
    tools: Sequence[Mapping[str, Any]] = ()
    """Declared tools in OpenAI function-tool format."""
    model: str | None = None
    """Model override; None means the provider's configured default."""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    """Provider-neutral sampling options: temperature, top_p, max_tokens, stop, seed,
    presence_penalty, frequency_penalty (only those set)."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str
    """The exact argument string the model produced (sent back verbatim in history)."""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: Literal["stop", "length", "tool_calls"]
    usage: Usage | None = None


ProviderEvent: TypeAlias = TextDelta | ReasoningDelta | ToolCall | Finish


class ProviderError(Exception):
    """The provider failed. Carries what a client needs to decide on a retry."""

    def __init__(
        self,
        message: str,
        *,
        kind: ProviderErrorKind,
        retryable: bool,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ProviderErrorKind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status = status

    def __repr__(self) -> str:
        return f"ProviderError({self.message!r}, kind={self.kind!r}, retryable={self.retryable})"


class ModelProvider(Protocol):
    """Implemented by the simulator and by the OpenRouter client."""

    name: str
    """Backend name reported by ``initialize`` (``simulator`` or ``openrouter``)."""
    default_model: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Stream one model step. See the module docstring for the grammar."""
        ...

    async def aclose(self) -> None:
        """Release shared resources (connection pools). Called once at shutdown."""
        ...

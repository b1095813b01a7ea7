"""The OpenRouter provider: streaming chat completions with tool calls.

One :class:`OpenRouterProvider` (and one pooled ``httpx.AsyncClient``) serves all
sessions. Each :meth:`~OpenRouterProvider.stream` call is one model step::

    POST {base_url}/chat/completions  (stream: true)
      -> status != 200           -> ProviderError (errors.error_from_status)
      -> 200 text/event-stream   -> SSEDecoder -> ChunkAssembler -> events

Retries happen only before the first event is yielded (nothing has reached the
client yet), with exponential backoff and jitter, honouring ``Retry-After``.
The loop owns the first-chunk, idle and whole-turn timeouts; this module sets the
connect timeout and a socket read timeout as a backstop.

Cancellation: closing the generator (or cancelling the task consuming it) closes
the upstream response in a ``finally`` at once, which aborts the HTTP stream
(OpenRouter then stops generation and billing on providers that support it).

The API key is held as a ``SecretStr``, put only in the ``Authorization`` header of
each request, and redacted from every upstream text before it enters an error or
a log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from pydantic import SecretStr


from server.llm.chunks import ChunkAssembler
from server.llm.errors import Redactor, error_from_chunk, error_from_status
from server.loop.jsonutil import dumps
from server.llm.sse import SSEDecoder
from server.loop.provider import ModelRequest, ProviderError, ProviderEvent

__all__ = ["OpenRouterConfig", "OpenRouterProvider"]

log = logging.getLogger("ailoop.llm.openrouter")

SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
"""Provider-neutral sampling keys passed through (OpenRouter uses the same names)."""

_MAX_ERROR_BODY = 64 * 1024
_WRITE_TIMEOUT_S = 30.0
_DRAIN_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class OpenRouterConfig:
    """Plain values the provider needs (built from ``Settings.openrouter``)."""

    base_url: str = "https://openrouter.ai/api/v1"
    model: str = "openai/gpt-4o-mini"
    http_referer: str | None = None
    x_title: str | None = "AILoop Interactive"
    max_tokens: int = 4096
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Literal["auto", "none"] = "auto"
    max_retries: int = 2
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 8.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float | None = 120.0
    max_connections: int = 100
    max_keepalive_connections: int = 20

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=_WRITE_TIMEOUT_S,
            pool=self.connect_timeout_s,
        )

    @property
    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
        )


class OpenRouterProvider:
    """A :class:`~server.loop.provider.ModelProvider` backed by OpenRouter."""

    name = "openrouter"

    def __init__(
        self,
        config: OpenRouterConfig,
        api_key: SecretStr | str,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        """Create the provider.

        Args:
            config: endpoint, defaults, retry and pool settings.
            api_key: the OpenRouter key (never logged).
            client: an ``httpx.AsyncClient`` to use instead of building one; the
                provider takes ownership and closes it in :meth:`aclose`.
            sleep: awaited for retry backoff (tests inject a recorder).
            jitter: returns a float in [0, 1) for backoff jitter.
        """
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not self._key.get_secret_value():
            raise ValueError("an OpenRouter API key is required")
        self.config = config
        self.default_model = config.model
        self.retries = 0
        """Retries made so far (exported as a metric)."""
        self._redact = Redactor(self._key.get_secret_value())
        self._client = client or httpx.AsyncClient(timeout=config.timeout, limits=config.limits)
        self._sleep = sleep or asyncio.sleep
        self._jitter = jitter or random.random

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> OpenRouterProvider:
        """Build from the server's ``Settings`` (``openrouter`` section, key from the environment).

        Raises:
            ConfigError: ``OPENROUTER_API_KEY`` is not set.
        """
        from server.config import ConfigError

        key = settings.openrouter_api_key
        if key is None or not key.get_secret_value():
            raise ConfigError(
                "ai.backend is openrouter but the OPENROUTER_API_KEY environment variable is "
                "not set: export it in the server's environment (the key is never read from "
                "config.yaml)"
            )
        section = settings.openrouter
        config = OpenRouterConfig(
            **{name: getattr(section, name) for name in OpenRouterConfig.__dataclass_fields__}
        )
        return cls(config, key, **kwargs)

    def __repr__(self) -> str:
        cfg = self.config
        return f"OpenRouterProvider(base_url={cfg.base_url!r}, model={self.default_model!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ request
    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body for one step (see docs/openrouter.md, "Request")."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": request.model or cfg.model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            # Usage is always included nowadays; asking is harmless and covers older routes.
            "stream_options": {"include_usage": True},
            "usage": {"include": True},
        }
        if request.tools:
            # OpenRouter validates the tool schema on every request, follow-ups included.
            body["tools"] = [dict(t) for t in request.tools]
            body["tool_choice"] = cfg.tool_choice
        sampling: dict[str, Any] = {"max_tokens": cfg.max_tokens}
        if cfg.temperature is not None:
            sampling["temperature"] = cfg.temperature
        if cfg.top_p is not None:
            sampling["top_p"] = cfg.top_p
        for key, value in request.sampling.items():
            if key not in SAMPLING_KEYS:
                log.debug("sampling option %r is not supported by OpenRouter; ignored", key)
            elif value is not None:
                sampling[key] = value
        body.update(sampling)
        return body

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        if self.config.http_referer:
            headers["HTTP-Referer"] = self.config.http_referer
        if self.config.x_title:
            headers["X-Title"] = self.config.x_title
            headers["X-OpenRouter-Title"] = self.config.x_title
        return headers

    # ------------------------------------------------------------------ streaming
    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Stream one model step; see :mod:`server.loop.provider` for the grammar."""
        body = dumps(self.build_body(request))
        attempt = 0
        yielded = False
        while True:
            try:
                async with aclosing(self._attempt(body, attempt)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except ProviderError as exc:
                delay = None if yielded else self._retry_delay(exc, attempt)
                if delay is None:
                    raise
                attempt += 1
                self.retries += 1
                log.warning(
                    "OpenRouter attempt %d failed (%s: %s); retry %d/%d in %.2fs",
                    attempt, exc.kind, exc.message, attempt, self.config.max_retries, delay,
                )
                await self._sleep(delay)

    def _retry_delay(self, exc: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        cfg = self.config
        if not exc.retryable or attempt >= cfg.max_retries:
            return None
        backoff = min(cfg.retry_max_delay_s, cfg.retry_base_delay_s * (2**attempt))
        delay = backoff * (0.5 + 0.5 * self._jitter())  # "equal jitter"
        if exc.retry_after_s is not None:
            if exc.retry_after_s > cfg.retry_max_delay_s:
                return None  # too long to hold the turn; the client gets the hint
            delay = max(delay, exc.retry_after_s)
        return delay

    async def _attempt(self, body: bytes, attempt: int) -> AsyncIterator[ProviderEvent]:
        cfg = self.config
        request = self._client.build_request(
            "POST", cfg.url, content=body, headers=self._headers(), timeout=cfg.timeout
        )
        log.debug("OpenRouter request (attempt %d, %d bytes)", attempt + 1, len(body))
        failure: ProviderError | None = None
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            failure = ProviderError(
                f"could not connect to OpenRouter within {cfg.connect_timeout_s:g}s "
                f"({type(exc).__name__})",
                kind="timeout",
                retryable=True,
            )
        except httpx.TransportError as exc:
            failure = ProviderError(
                f"could not reach OpenRouter ({type(exc).__name__})",
                kind="unavailable",
                retryable=True,
            )
        if failure is not None:
            # Raised outside the except block: the httpx exception (whose text we do
            # not control) is not even kept as __context__.
            raise failure
        try:
            if response.status_code != 200:
                raw = await _read_limited(response)
                raise error_from_status(response.status_code, raw, response.headers, self._redact)
            content_type = response.headers.get("content-type", "").lower()
            if not content_type.startswith("text/event-stream"):
                raise await self._not_a_stream(response, content_type)
            async with aclosing(self._events(response)) as events:
                async for event in events:
                    yield event
        finally:
            await response.aclose()

    async def _not_a_stream(self, response: httpx.Response, content_type: str) -> ProviderError:
        raw = await _read_limited(response)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, Mapping) and parsed.get("error"):
            return error_from_chunk(parsed["error"], output_started=False, redact=self._redact)
        return ProviderError(
            f"OpenRouter answered with {content_type or 'no content type'} "
            "instead of an event stream",
            kind="protocol",
            retryable=False,
        )

    async def _events(self, response: httpx.Response) -> AsyncIterator[ProviderEvent]:
        decoder = SSEDecoder()
        asm = ChunkAssembler(self._redact)
        done = False
        stopped_early = False
        failure: ProviderError | None = None
        reads = response.aiter_bytes()
        try:
            async for data in reads:
                for sse in decoder.feed(data):
                    payload = sse.data.strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    for event in asm.feed(_parse_chunk(payload, asm.output_started)):
                        yield event
                    if asm.complete:  # finish and usage known: no need to wait for [DONE]
                        break
                if done or asm.complete:
                    stopped_early = True
                    break
            else:
                for sse in decoder.close():
                    if sse.data.strip() == "[DONE]":
                        done = True
                    else:
                        for event in asm.feed(_parse_chunk(sse.data, asm.output_started)):
                            yield event
            if stopped_early:
                await _drain(reads)
        except httpx.TimeoutException:
            failure = ProviderError(
                f"OpenRouter sent nothing for {self.config.read_timeout_s:g}s",
                kind="midstream" if asm.output_started else "timeout",
                retryable=True,
            )
        except httpx.TransportError as exc:
            failure = ProviderError(
                f"OpenRouter stream was cut before it finished ({type(exc).__name__})",
                kind="truncated",
                retryable=True,
            )
        if failure is not None and asm.finish_reason is None:
            raise failure  # (a cut after the finish loses only the usage)
        if asm.finish_reason is None and not done:
            raise ProviderError(
                "OpenRouter stream ended before it finished (no finish_reason, no [DONE])",
                kind="truncated",
                retryable=True,
            )
        for event in asm.finish():
            yield event
        log.info(
            "OpenRouter step done: generation=%s model=%s upstream=%s finish=%s usage=%s "
            "keepalives=%d",
            asm.generation_id,
            asm.model,
            asm.upstream,
            asm.finish_reason,
            asm.usage,
            decoder.comments,
        )


def _parse_chunk(payload: str, output_started: bool) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    raise ProviderError(
        "OpenRouter sent a stream event that is not valid JSON",
        kind="midstream" if output_started else "protocol",
        retryable=output_started,
    )


async def _drain(reads: AsyncIterator[bytes]) -> None:
    """Read what little follows the end of a reply (``[DONE]``, the last HTTP chunk),
    briefly, so the connection goes back to the pool instead of being dropped."""
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT_S):
            async for _ in reads:
                pass
    except (TimeoutError, httpx.TransportError):
        pass  # the reply is complete either way; the connection is simply not reused


async def _read_limited(response: httpx.Response) -> bytes:
    """Read an error body, at most 64 KiB (the rest is dropped with the connection)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for data in response.aiter_bytes():
            parts.append(data)
            size += len(data)
            if size >= _MAX_ERROR_BODY:
                break
    except httpx.TransportError:
        pass  # a partial error body is still worth reporting
    return b"".join(parts)[:_MAX_ERROR_BODY]

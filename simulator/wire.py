"""OpenRouter's wire format: the JSON objects and SSE bytes the HTTP face sends.

Shapes follow ../shared/reference/openrouter-stream.md (sections 2-4): data-only SSE
events of ``chat.completion.chunk`` objects; ``role`` repeated on every delta;
``content`` ``""`` on the opening and finish chunks and ``null`` next to
``tool_calls``; a tool call's first fragment carries ``index``, ``id``, ``type`` and
``function.name`` (``arguments: ""``), later ones only ``index`` and an arguments
piece; a final usage chunk; ``data: [DONE]``. Errors before the stream are JSON
``{"error": {"code", "message", "metadata"}}`` bodies whose status equals the code;
after it, a chunk with a top-level ``error`` and finish_reason ``error``.
"""

from __future__ import annotations

from typing import Any

import orjson

from server.loop.provider import Usage
from simulator.script import HttpError, Piece, Plan, StreamError

__all__ = [
    "DONE",
    "KEEPALIVE",
    "completion_body",
    "error_body",
    "error_chunk",
    "finish_chunk",
    "opening_chunk",
    "piece_chunk",
    "sse",
    "usage_chunk",
    "usage_object",
]

KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
PRICE_PER_TOKEN = 1e-6
"""The simulated price (USD per token) behind ``usage.cost``."""


def sse(obj: Any) -> bytes:
    """One SSE event carrying ``obj`` as JSON (raw UTF-8)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _head(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.generation_id,
        "object": "chat.completion.chunk",
        "created": plan.created,
        "model": plan.model,
        "provider": plan.provider,
    }


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "delta": delta,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "logprobs": None,
    }


def _delta(content: str | None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "reasoning": None, "reasoning_details": [], **extra}


def opening_chunk(plan: Plan) -> dict[str, Any]:
    return {**_head(plan), "choices": [_choice(_delta(""))]}


def piece_chunk(plan: Plan, piece: Piece) -> dict[str, Any]:
    if piece.kind == "text":
        delta = _delta(piece.text)
    elif piece.kind == "reasoning":
        delta = _delta("", reasoning=piece.text, reasoning_details=[
            {"type": "reasoning.text", "text": piece.text, "format": "unknown", "index": 0}
        ])
    else:
        frag: dict[str, Any] = {"index": piece.index}
        if piece.call_id is not None:
            frag.update(id=piece.call_id, type="function", function={"name": piece.name, "arguments": ""})
        else:
            frag["function"] = {"arguments": piece.text}
        delta = _delta(None, tool_calls=[frag])
    return {**_head(plan), "choices": [_choice(delta)]}


def finish_chunk(plan: Plan, reason: str) -> dict[str, Any]:
    return {**_head(plan), "choices": [_choice(_delta(""), reason)]}


def usage_object(usage: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    cost = round(usage.total_tokens * PRICE_PER_TOKEN, 9)
    prompt_cost = round(usage.prompt_tokens * PRICE_PER_TOKEN, 9)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost": cost,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0, "video_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": cost,
            "upstream_inference_prompt_cost": prompt_cost,
            "upstream_inference_completions_cost": round(cost - prompt_cost, 9),
        },
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "image_tokens": 0, "audio_tokens": 0},
    }


def usage_chunk(plan: Plan, reason: str, usage: Usage) -> dict[str, Any]:
    """The final usage chunk, in the scenario's chosen shape (``wire.usage_chunk``)."""
    reasoning = sum(len(p.text.split()) for p in plan.pieces if p.kind == "reasoning")
    body = usage_object(usage, reasoning)
    if plan.usage_chunk == "empty_choices":
        return {**_head(plan), "choices": [], "usage": body}
    choice = _choice({"role": "assistant", "content": ""}, reason)
    if plan.usage_chunk == "null_finish":
        choice["finish_reason"] = choice["native_finish_reason"] = None
    return {**_head(plan), "choices": [choice], "usage": body}


def error_chunk(plan: Plan, err: StreamError) -> dict[str, Any]:
    return {
        **_head(plan),
        "error": {"code": err.code, "message": err.message, "metadata": {"provider_name": plan.provider}},
        "choices": [
            {"index": 0, "delta": {"content": ""}, "finish_reason": "error", "native_finish_reason": "error"}
        ],
    }


def error_body(code: int, message: str, metadata: dict[str, Any] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if metadata:
        err["metadata"] = metadata
    return orjson.dumps({"error": err, "user_id": "user_simulator"})


def http_error_body(err: HttpError) -> bytes:
    return error_body(err.status, err.message, err.metadata)


def completion_body(
    plan: Plan,
    *,
    reason: str,
    usage: Usage | None,
    error: StreamError | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` built from the plan's pieces."""
    text = "".join(p.text for p in plan.pieces if p.kind == "text")
    reasoning = "".join(p.text for p in plan.pieces if p.kind == "reasoning")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not plan.calls else None,
        "refusal": None,
        "reasoning": reasoning or None,
    }
    if plan.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
            for c in plan.calls
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "logprobs": None,
        "finish_reason": reason,
        "native_finish_reason": reason,
        "message": message,
    }
    if error is not None:
        choice["error"] = {"code": error.code, "message": error.message}
    body: dict[str, Any] = {
        "id": plan.generation_id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "provider": plan.provider,
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = usage_object(usage)
    return body

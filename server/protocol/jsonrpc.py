"""JSON-RPC 2.0 framing, Sans-I/O: text in, parsed items and encoded frames out.

Nothing here does I/O or knows about sessions. :func:`parse_frame` turns one
WebSocket text frame into a :class:`Frame` -- a single message or a batch (§6) --
whose items are either :class:`Call` (a request or a notification to dispatch) or
:class:`Rejected` (an invalid member, already turned into its error response).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from server.protocol.errors import InvalidRequest, ParseError, RpcError

__all__ = ["Call", "Frame", "Rejected", "encode", "error_response", "parse_frame", "success_response"]

RequestId: TypeAlias = str | int | float | None
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Call:
    """A well-formed request (``is_notification`` False) or notification."""

    method: str
    params: Any  # dict, list, or None when absent
    id: RequestId = None
    is_notification: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid message, with the error response it gets."""

    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Frame:
    items: list[Call | Rejected]
    is_batch: bool


def success_response(id_: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def error_response(id_: RequestId, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": error.to_error_object()}


def encode(message: Any) -> str:
    """Serialize one outgoing frame (a message or a batch array)."""
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate, echoed back as given
        return json.dumps(message, separators=(",", ":"), ensure_ascii=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_LONG_NUMBER = re.compile(r"\d{19}")


def _loads(text: str | bytes) -> Any:
    # orjson reads integers beyond 64 bits as floats, which would change an id we
    # must echo exactly; frames with such long digit runs go to the stdlib parser.
    if not _LONG_NUMBER.search(text if isinstance(text, str) else text.decode("utf-8", "replace")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    # The strict stdlib parser decides the rest. NaN and Infinity are not JSON (RFC 8259 §6).
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ParseError("Parse error") from exc


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def _parse_item(obj: Any) -> Call | Rejected:
    """Validate one request object (JSON-RPC 2.0 §4)."""
    if not isinstance(obj, dict):
        return Rejected(error_response(None, InvalidRequest("Invalid Request: not an object")))
    raw_id = obj.get("id", _MISSING)
    id_ok = raw_id is _MISSING or _valid_id(raw_id)
    reply_id = raw_id if (raw_id is not _MISSING and id_ok) else None
    problem = None
    if obj.get("jsonrpc") != "2.0":
        problem = 'jsonrpc must be exactly "2.0"'
    elif not isinstance(obj.get("method"), str):
        problem = "method must be a string"
    elif not id_ok:
        problem = "id must be a string, a number or null"
    elif "params" in obj and not isinstance(obj["params"], (dict, list)):
        problem = "params must be an object or an array"
    else:
        extra = set(obj) - {"jsonrpc", "method", "params", "id"}
        if extra:
            problem = f"unexpected member(s): {', '.join(sorted(extra))}"
    if problem:
        return Rejected(error_response(reply_id, InvalidRequest(f"Invalid Request: {problem}")))
    if raw_id is _MISSING:
        return Call(obj["method"], obj.get("params"), None, True)
    return Call(obj["method"], obj.get("params"), raw_id, False)


def parse_frame(text: str | bytes, max_batch: int) -> Frame:
    """Parse one text frame.

    Raises:
        ParseError: the frame is not JSON (answer with id null, §5.1).
        InvalidRequest: an empty batch, or a batch over ``max_batch`` (id null).
    """
    data = _loads(text)
    if isinstance(data, list):
        if not data:
            raise InvalidRequest("Invalid Request: empty batch")
        if len(data) > max_batch:
            raise InvalidRequest(f"Invalid Request: batch larger than {max_batch}", {"limit": "maxBatchSize"})
        return Frame([_parse_item(x) for x in data], True)
    return Frame([_parse_item(data)], False)

"""RpcConnection: the JSON-RPC side of one client connection, transport-agnostic.

The transport feeds it frames (``receive_text`` / ``receive_binary``) and drains its
:class:`Outbox`; frames are queued in the order they are produced, which is the
order the client receives them. This is
the single place where exceptions become JSON-RPC errors.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from server.protocol.errors import InternalError, InvalidParams, InvalidRequest, MethodNotFound, RateLimited, RpcError
from server.protocol.jsonrpc import Call, Rejected, encode, error_response, parse_frame, success_response
from server.session.handlers import HANDLERS, Reply, ServerInfo
from server.session.manager import InteractiveSessionManager
from server.session.outbox import Outbox

__all__ = ["RpcConnection"]

log = logging.getLogger("ailoop.connection")

_PARAMS_OPTIONAL = {"initialize", "startSession", "ping"}


# Values under these keys are free-form JSON, taken as given.
_FREE_FORM = frozenset({"result", "metadata", "parameters", "data", "arguments"})
# Of those, the ones whose schema admits any JSON value, null included (a tool result,
# ping data); the others are JSON objects, so null for the field itself is refused.
_NULLABLE = frozenset({"result", "data"})


def _normalize(value: Any, loc: str, nulls: list[str]) -> Any:
    """JSON Schema's view of params before pydantic's strict validation: an integral
    float is an integer (RPC-5: 1.0 matches "integer"), and null is never a value of
    our params' fields (none of them is typed with null), so it is reported."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None and k not in _NULLABLE:
                nulls.append(f"{loc}.{k}" if loc else k)
            out[k] = v if k in _FREE_FORM else _normalize(v, f"{loc}.{k}" if loc else k, nulls)
        return out
    if isinstance(value, list):
        return [_normalize(v, f"{loc}.{i}", nulls) for i, v in enumerate(value)]
    if type(value) is float and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    # Never echo the input back: it may be huge or sensitive.
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "params", "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ][:20]


class _TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; returns 0, or the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RpcConnection:
    def __init__(
        self,
        manager: InteractiveSessionManager,
        info: ServerInfo,
        outbox: Outbox,
        *,
        max_batch: int = 64,
        rate: float = 0.0,
        burst: int = 100,
    ) -> None:
        self.connection_id = "c_" + secrets.token_urlsafe(9)
        self.manager = manager
        self.info = info
        self.outbox = outbox
        self.send = outbox.send
        self.max_batch = max_batch
        self.closed = False
        self._bucket = _TokenBucket(rate, burst) if rate > 0 else None

    async def receive_text(self, text: str) -> None:
        """Handle one text frame: dispatch its request(s), queue the response(s),
        then run the handlers' after-actions."""
        try:
            frame = parse_frame(text, self.max_batch)
        except RpcError as exc:
            self.send(encode(error_response(None, exc)))
            return
        responses: list[dict[str, Any]] = []
        afters: list[Callable[[], None]] = []
        for item in frame.items:
            if isinstance(item, Rejected):
                responses.append(item.response)
                continue
            response, after = await self._dispatch(item)
            if not item.is_notification:
                responses.append(response)
            if after is not None:
                afters.append(after)
        if responses:
            self.send(encode(responses if frame.is_batch else responses[0]))
        for after in afters:
            after()

    def receive_binary(self) -> None:
        """Binary frames are not part of the protocol (RPC-7)."""
        self.send(encode(error_response(None, InvalidRequest("Invalid Request: binary frames are not supported"))))

    async def _dispatch(self, call: Call) -> tuple[dict[str, Any], Callable[[], None] | None]:
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait:  # LIM-1 (a client notification over the rate is dropped)
                return error_response(call.id, RateLimited(max(1, int(wait * 1000)))), None
        try:
            reply = await self._invoke(call)
        except RpcError as exc:
            return error_response(call.id, exc), None
        except Exception:
            log.exception("handler failed", extra={"connectionId": self.connection_id,
                                                   "method": call.method, "requestId": call.id})
            return error_response(call.id, InternalError("Internal error")), None
        return success_response(call.id, reply.result), reply.after

    async def _invoke(self, call: Call) -> Reply:
        entry = HANDLERS.get(call.method)
        if entry is None:
            raise MethodNotFound("Method not found", {"method": call.method[:128]})
        model, handler = entry
        params = call.params
        if params is None:
            if call.method not in _PARAMS_OPTIONAL:
                raise InvalidParams("Invalid params: params are required", {"errors": [{"loc": "params", "msg": "missing"}]})
            params = {}
        if isinstance(params, list):
            raise InvalidParams("Invalid params: params must be an object (by name)", {"errors": [{"loc": "params", "msg": "not an object"}]})
        nulls: list[str] = []
        params = _normalize(params, "", nulls)
        if nulls:
            raise InvalidParams("Invalid params", {"errors": [{"loc": n, "msg": "null is not allowed", "type": "null"}
                                                              for n in nulls[:20]]})
        try:
            parsed = model.model_validate(params, strict=True)
        except ValidationError as exc:
            raise InvalidParams("Invalid params", {"errors": _validation_errors(exc)}) from None
        return await handler(self, parsed)

    async def close(self, reason: str = "disconnect") -> None:
        """The transport is gone (or going): detach or release this connection's sessions."""
        if self.closed:
            return
        self.closed = True
        await self.manager.release_connection(self.connection_id, reason)

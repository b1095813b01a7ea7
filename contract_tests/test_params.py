"""Params generated from the spec with hypothesis-jsonschema (RPC-5 and friends).

* Valid params of every method (``from_schema`` of its params definition), aimed at
  a live session or at none: the answer is a result that validates against the
  method's result schema, or an error from x-error-codes that the session model
  allows (SESSION_NOT_FOUND, UNKNOWN_TOOL_CALL, INVALID_SESSION_STATE, ...) -- never a
  JSON-RPC structural error, never INTERNAL_ERROR, never a dropped connection.
* The same params made invalid (a required field dropped, an unknown field added, a
  field of the wrong type, a string over its maxLength, positional params): -32602.
  Deep nesting and huge strings where the schema allows them must still work.

Version trap: hypothesis-jsonschema 0.23.1 breaks with hypothesis >= 6.170.10
(``'many' object has no attribute 'more'``); pyproject pins hypothesis <= 6.170.9.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from contract_tests.harness import Harness, Target, encode, run_scenario
from contract_tests.profiles import contract_settings
from contract_tests.protocol import CODE, ERROR_CODES, REQUEST_METHODS, inline_schema, is_valid

req = pytest.mark.requirement

METHODS = sorted(REQUEST_METHODS)
SCHEMAS = {m: inline_schema(REQUEST_METHODS[m]["params"]) for m in METHODS}
VALID = {m: from_schema(SCHEMAS[m]) for m in METHODS}
STRUCTURAL = {CODE["PARSE_ERROR"], CODE["INVALID_REQUEST"], CODE["METHOD_NOT_FOUND"]}
TOOLS = [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]

_scalars = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10))
_values = st.recursive(
    st.one_of(st.none(), _scalars), lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8
)


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


async def _aim(h: Harness, c: str, method: str, params: dict[str, Any], live: bool) -> tuple[dict[str, Any], str]:
    """Start a session; point ``params`` at it when ``live``."""
    sid = await h.start_session(c, tools=TOOLS)
    assert sid is not None
    await h.settle()
    p = dict(params)
    if live and "sessionId" in p:
        p["sessionId"] = sid
        if method == "attachSession":
            p["resumeToken"] = h.observer.sessions[sid].token
    return p, sid


def _check_answer(r: dict[str, Any] | None) -> None:
    assert r is not None, "no response"
    if "error" in r:
        assert r["error"]["code"] in ERROR_CODES, r["error"]
        assert r["error"]["code"] not in STRUCTURAL, r["error"]


@req("RPC-5", "RPC-1", "ISO-2", "TOOL-2", "REPLAY-3")
@contract_settings(examples=70)
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_valid_params_get_a_result_or_a_documented_error(target: Target, data: st.DataObject, method: str) -> None:
    """Schema-valid params for every method, on a live session or an unknown one."""
    params = data.draw(VALID[method], label="params")
    assume(len(encode(params).encode()) < target.limits.max_frame_bytes - 512)
    live = data.draw(st.booleans(), label="aimed at a live session")

    async def body(h: Harness) -> None:
        c = await h.open()
        p, _ = await _aim(h, c, method, params, live)
        r = await h.request(c, method, p)
        _check_answer(r)
        await h.settle()
        if method == "startSession" and "result" in r and target.simulator:
            # A session started with generated tools, prompt and sampling must work.
            sent = await h.send_message(c, r["result"]["sessionId"], "hello there")
            _check_answer(sent)
            await h.settle()

    run_scenario(target, f"valid_params_{method}", body)


@st.composite
def _invalid(draw: st.DrawFn, method: str) -> tuple[str, Any]:
    schema = SCHEMAS[method]
    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    p = dict(draw(VALID[method]))
    kinds = ["extra", "wrong_type", "positional", "deep", "huge"]
    if required:
        kinds.append("drop")
    if any("maxLength" in v for v in props.values()):
        kinds.append("too_long")
    kind = draw(st.sampled_from(kinds))
    if kind == "drop":
        p.pop(draw(st.sampled_from(required)), None)
    elif kind == "extra":
        p[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in props))] = draw(_values)
    elif kind == "wrong_type" and props:
        p[draw(st.sampled_from(sorted(props)))] = draw(_values)
    elif kind == "too_long":
        key = draw(st.sampled_from(sorted(k for k, v in props.items() if "maxLength" in v)))
        p[key] = "x" * (props[key]["maxLength"] + draw(st.integers(1, 50)))
    elif kind == "positional":
        return kind, draw(st.lists(_values, max_size=3))
    elif kind == "deep":
        slot = next((k for k in ("data", "metadata", "result") if k in props), None)
        if slot is None:
            return kind, {**p, "__deep__": _deep(draw(st.integers(20, 300)))}
        p[slot] = _deep(draw(st.integers(20, 300)))
    elif kind == "huge":
        strings = sorted(k for k, v in props.items() if v.get("type") == "string")
        if not strings:
            return kind, {**p, "__huge__": "y" * 20_000}
        p[draw(st.sampled_from(strings))] = "y" * draw(st.integers(1_000, 20_000))
    return kind, p


@req("RPC-5")
@contract_settings(examples=70)
@given(data=st.data(), method=st.sampled_from(METHODS), live=st.booleans())
def test_params_off_the_schema_get_invalid_params(target: Target, data: st.DataObject, method: str, live: bool) -> None:
    """Mutated params: -32602 exactly when they no longer match the schema (checked
    with jsonschema); still-valid mutations (deep nesting, huge strings where allowed)
    are answered normally."""
    kind, params = data.draw(_invalid(method), label="mutation")
    assume(len(encode(params).encode()) < target.limits.max_frame_bytes - 512)  # over it: close 1009 (test_jsonrpc.py)

    async def body(h: Harness) -> None:
        c = await h.open()
        p, _ = await _aim(h, c, method, params, live) if isinstance(params, dict) else (params, None)
        r = await h.request(c, method, p)
        assert r is not None, "no response"
        valid = isinstance(p, dict) and is_valid(REQUEST_METHODS[method]["params"], p)
        if not valid:
            assert r.get("error", {}).get("code") in (CODE["INVALID_PARAMS"], CODE["RATE_LIMITED"]), (kind, r)
        else:
            if kind == "deep" and r.get("error", {}).get("code") == CODE["PARSE_ERROR"]:
                return  # deeper than the server's parser goes (RFC 8259 §9 allows a limit)
            _check_answer(r)
        await h.settle()

    run_scenario(target, f"invalid_params_{method}", body)

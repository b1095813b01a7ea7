"""JSON-RPC 2.0, to the letter (RPC-1..RPC-7): parse errors, invalid requests, unknown
methods, invalid params, batches of every shape, ids of every JSON type, client
notifications, binary, oversize and non-UTF-8 frames -- as fixed examples and as
generated frames whose expected answer the oracle derives from the spec alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract_tests.harness import Harness, Target, encode, run_scenario
from contract_tests.profiles import contract_settings
from contract_tests.protocol import CODE, REQUEST_METHODS

req = pytest.mark.requirement


def code(resp: dict[str, Any] | None) -> int | None:
    assert resp is not None, "no response"
    return resp["error"]["code"] if "error" in resp else None


async def still_works(h: Harness, conn: str) -> None:
    """The connection keeps working after whatever came before."""
    r = await h.request(conn, "ping", {"data": "still there"})
    assert r is not None and r["result"]["data"] == "still there", "the connection stopped working"


@req("RPC-2")
def test_frames_that_are_not_json_get_parse_error(target: Target) -> None:
    """Not JSON (truncated, trailing data, NaN, a BOM, single quotes, nesting deeper
    than any parser takes): -32700 with id null, and the connection keeps working."""
    frames = [
        "{", "", " ", "[1,", '{"jsonrpc":"2.0",}', "NaN", '{"jsonrpc":"2.0","method":"ping","id":NaN}',
        '{"jsonrpc":"2.0","method":"ping","id":1} x', "\ufeff{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}",
        "{'jsonrpc':'2.0'}", '{"jsonrpc":"2.0","method":"ping","id":Infinity}', "[" * 5000 + "]" * 4999,
        '{"a":"\\x"}', "\u0000",
    ]

    async def body(h: Harness) -> None:
        c = await h.open()
        for f in frames:
            await h.send_raw(c, f)
            await h.settle()
        await still_works(h, c)

    run_scenario(target, "parse_errors", body)


@req("RPC-3", "RPC-1")
def test_json_that_is_not_a_request_gets_invalid_request(target: Target) -> None:
    """Valid JSON, invalid request: -32600, with the request's id when it could be read."""
    frames: list[Any] = [
        None, 1, "x", True, {}, {"jsonrpc": "2.0"}, {"jsonrpc": "1.0", "method": "ping", "id": 7},
        {"jsonrpc": 2.0, "method": "ping", "id": 8}, {"method": "ping", "id": 9}, {"jsonrpc": "2.0", "method": 5, "id": 10},
        {"jsonrpc": "2.0", "method": "ping", "id": True}, {"jsonrpc": "2.0", "method": "ping", "id": {"a": 1}},
        {"jsonrpc": "2.0", "method": "ping", "id": [1]}, {"jsonrpc": "2.0", "method": "ping", "id": 11, "params": 5},
        {"jsonrpc": "2.0", "method": "ping", "id": 12, "params": "x"}, {"jsonrpc": "2.0", "method": "ping", "id": 13, "params": None},
        {"jsonrpc": "2.0", "method": "ping", "id": 14, "extra": 1}, {"jsonrpc": "2.0", "method": None, "id": "m"},
        {"jsonrpc": "2.0", "method": "ping", "params": 3},
    ]

    async def body(h: Harness) -> None:
        c = await h.open()
        for f in frames:
            await h.send_raw(c, encode(f))
            await h.settle()
        await still_works(h, c)

    run_scenario(target, "invalid_requests", body)


@req("RPC-4")
def test_unknown_methods_get_method_not_found(target: Target) -> None:
    """A method the spec does not define: -32601 (names are case-sensitive)."""

    async def body(h: Harness) -> None:
        c = await h.open()
        for m in ["nope", "", "rpc.discover", "INITIALIZE", "startsession", "SessionStatusNotification", "x" * 300]:
            assert code(await h.request(c, m, {})) == CODE["METHOD_NOT_FOUND"]
        await still_works(h, c)

    run_scenario(target, "unknown_methods", body)


@req("RPC-5")
def test_params_that_do_not_match_the_schema_get_invalid_params(target: Target) -> None:
    """Missing, extra, mistyped and too-long fields, by-position params: -32602."""
    too_long = target.limits.max_message_chars + 1
    cases: list[tuple[str, Any]] = [
        ("sendUserMessage", None), ("sendUserMessage", {}), ("sendUserMessage", {"sessionId": "s", "content": ""}),
        ("sendUserMessage", {"sessionId": "s", "content": 5}), ("sendUserMessage", {"sessionId": "s" * 129, "content": "x"}),
        ("sendUserMessage", {"sessionId": "s", "content": "x", "extra": 1}), ("sendUserMessage", ["s", "hello"]),
        ("provideToolResult", {"sessionId": "s", "toolCallId": "c"}), ("stopSession", {"sessionId": ""}),
        ("pauseSession", {"sessionId": None}), ("cancelTurn", {}), ("resumeSession", {"sessionId": 1}),
        ("initialize", {"protocolVersion": 0}), ("initialize", {"clientInfo": {}}), ("ping", {"other": 1}),
        ("startSession", {"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
        ("startSession", {"tools": [{"type": "other", "function": {"name": "f"}}]}), ("startSession", {"sampling": {"temperature": 3}}),
        ("startSession", {"model": ""}), ("startSession", {"systemPrompt": 5}),
        ("attachSession", {"sessionId": "s", "resumeToken": "t"}), ("attachSession", {"sessionId": "s", "resumeToken": "t", "afterSeq": -1}),
    ]

    async def body(h: Harness) -> None:
        c = await h.open()
        sid = await h.start_session(c)
        for method, params in cases:
            r = await (h.request(c, method) if params is None else h.request(c, method, params))
            assert code(r) == CODE["INVALID_PARAMS"], (method, params, r)
        r = await h.request(c, "sendUserMessage", {"sessionId": sid, "content": "x" * too_long})
        assert code(r) == CODE["INVALID_PARAMS"]
        await still_works(h, c)

    run_scenario(target, "invalid_params", body)


@req("RPC-6", "RPC-1")
def test_batches_of_every_shape(target: Target) -> None:
    """Empty: one -32600; notifications only: nothing; mixed: one array with a response
    per request (invalid members included); over maxBatchSize: one -32600; the
    largest allowed batch: an array of maxBatchSize responses."""
    n = target.limits.max_batch_size
    ping = {"jsonrpc": "2.0", "method": "ping"}

    async def body(h: Harness) -> None:
        c = await h.open()
        frames: list[Any] = [
            [],
            [ping, ping],
            [{**ping, "id": "a"}, ping, {**ping, "id": "b"}],
            [1, {"jsonrpc": "2.0"}, {**ping, "id": "c"}, {"jsonrpc": "2.0", "method": "nope", "id": "d"}],
            [[{**ping, "id": "e"}]],
            [{**ping, "id": f"m{i}"} for i in range(n + 1)],
            [{**ping, "id": f"ok{i}"} for i in range(n)],
            [{"jsonrpc": "2.0", "method": "startSession", "id": "s1"}, {"jsonrpc": "2.0", "method": "startSession", "id": "s2", "params": {}}],
            [{**ping, "id": 1}, {**ping, "id": 1}],
        ]
        for f in frames:
            await h.send_raw(c, encode(f))
            await h.settle()
        await still_works(h, c)

    run_scenario(target, "batches", body)


@req("RPC-1", "RPC-3")
def test_ids_of_every_json_type(target: Target) -> None:
    """Strings, integers of any size, fractions and null are echoed exactly; booleans,
    objects and arrays are not ids (-32600, id null)."""
    good = ["x", "", "é☃\U0001f600", 0, -1, 2**53 + 1, 2**64 + 5, -(2**63) - 1, 1.5, -0.25, 1e300, None]
    bad = [True, False, {}, {"a": 1}, [], [1]]

    async def body(h: Harness) -> None:
        c = await h.open()
        for i in good:
            r = await h.request(c, "ping", id=i)
            assert r is not None and json.dumps(r["id"]) == json.dumps(i), (i, r)
        for i in bad:
            await h.send_raw(c, encode({"jsonrpc": "2.0", "method": "ping", "id": i}))
            await h.settle()
        await still_works(h, c)

    run_scenario(target, "ids", body)


@req("RPC-1")
def test_client_notifications_get_no_response(target: Target) -> None:
    """Requests without an id get no response, whatever they contain."""

    async def body(h: Harness) -> None:
        c = await h.open()
        for method in [*REQUEST_METHODS, "nope"]:
            if method in ("startSession", "attachSession"):
                continue
            await h.notify(c, method, {"sessionId": "s_unknown", "junk": True})
            await h.notify(c, method)
        await h.settle()
        await still_works(h, c)

    run_scenario(target, "client_notifications", body)


@req("RPC-7")
def test_binary_frames_get_invalid_request(target: Target) -> None:
    """A binary frame (even holding a valid request): -32600 with id null; the
    connection keeps working."""

    async def body(h: Harness) -> None:
        c = await h.open()
        for data in [b"", b"\x00\xff", encode({"jsonrpc": "2.0", "method": "ping", "id": 1}).encode()]:
            await h.send_raw(c, data, "binary")
            await h.settle()
        await still_works(h, c)

    run_scenario(target, "binary", body)


@req("RPC-7", "LIFE-1")
def test_oversize_frame_closes_with_1009(target: Target) -> None:
    """A text frame over maxFrameBytes closes the connection with 1009; its sessions
    are detached or released like on any disconnect; a frame of exactly
    maxFrameBytes is fine."""
    limit = target.limits.max_frame_bytes
    if limit > 16 * 1024 * 1024:
        pytest.skip(f"maxFrameBytes {limit} is too large to send in a test")

    async def body(h: Harness) -> None:
        c = await h.open()
        await h.start_session(c)
        pad = encode({"jsonrpc": "2.0", "method": "ping", "id": 1, "params": {"data": ""}})
        exact = encode({"jsonrpc": "2.0", "method": "ping", "id": 1, "params": {"data": "x" * (limit - len(pad))}})
        assert len(exact.encode()) == limit
        await h.send_raw(c, exact)
        await h.settle()
        await h.send_raw(c, exact[:-2] + 'xx"}}')
        await h.settle()
        assert h.observer.conns[c].close_code == 1009
        await h.check_health()

    run_scenario(target, "oversize", body)


@req("RPC-7")
@pytest.mark.server_log_allows(r"Invalid UTF-8")
def test_text_frame_that_is_not_utf8_closes_with_1007(target: Target) -> None:
    """Invalid UTF-8 in a text frame fails the WebSocket with 1007 (RFC 6455 §8.1)."""

    async def body(h: Harness) -> None:
        c = await h.open()
        await h.send_raw(c, b'{"jsonrpc":"2.0","method":"ping","id":"\xff\xfe"}', "invalid_utf8")
        await h.settle()
        assert h.observer.conns[c].close_code == 1007
        c2 = await h.open()
        await still_works(h, c2)

    run_scenario(target, "invalid_utf8", body)


# ---------------------------------------------------------------------- generated frames
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
_values = st.recursive(
    _scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=10
)
_ids = st.one_of(
    st.text(max_size=10), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.none(), st.booleans(),
    st.lists(_scalars, max_size=2), st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)
_methods = st.one_of(
    st.sampled_from([m for m in REQUEST_METHODS if m != "attachSession"]),
    st.sampled_from(["nope", "", "rpc.ping", "Ping"]),
    st.text(max_size=10),
    st.integers(),
    st.none(),
)
_params = st.one_of(
    st.fixed_dictionaries({}, optional={"sessionId": st.text(max_size=20), "content": st.text(max_size=20), "data": _values}),
    st.dictionaries(st.text(max_size=8), _values, max_size=3),
    st.lists(_values, max_size=3),
    _scalars,
)


@st.composite
def _request_like(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        obj["jsonrpc"] = draw(st.one_of(st.just("2.0"), st.sampled_from(["1.0", "2", 2.0, 2, None]), st.text(max_size=3)))
    if draw(st.integers(0, 9)):
        obj["method"] = draw(_methods)
    if draw(st.booleans()):
        obj["id"] = draw(_ids)
    if draw(st.integers(0, 2)):
        obj["params"] = draw(_params)
    if not draw(st.integers(0, 6)):
        obj[draw(st.text(min_size=1, max_size=6))] = draw(_scalars)
    return obj


_members = st.one_of(_request_like(), _request_like(), _values)
_frames = st.one_of(
    _members.map(encode),
    st.lists(_members, max_size=6).map(encode),
    st.lists(_request_like(), min_size=1, max_size=3).map(lambda b: encode(b) + " "),
    st.text(max_size=30),
    _members.map(encode).flatmap(lambda f: st.integers(0, max(0, len(f) - 1)).map(lambda n: f[:n])),
)


@req("RPC-1", "RPC-2", "RPC-3", "RPC-4", "RPC-5", "RPC-6")
@contract_settings(examples=120)
@given(frame=_frames)
def test_any_frame_gets_exactly_the_documented_answer(target: Target, frame: str) -> None:
    """A generated frame -- request-like objects with any members of any type, batches
    of any shape, arbitrary JSON, truncated or non-JSON text: the answer the spec
    prescribes (derived by the oracle from the frame alone), one response per request,
    ids echoed, nothing for notifications; then the connection still works."""

    async def body(h: Harness) -> None:
        c = await h.open()
        await h.send_raw(c, frame)
        await h.settle()
        await still_works(h, c)

    run_scenario(target, "generated_frame", body)

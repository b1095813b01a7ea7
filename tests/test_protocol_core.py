"""The Sans-I/O JSON-RPC core, by plain function calls."""

from __future__ import annotations

import pytest

from server.protocol.errors import InvalidRequest, ParseError
from server.protocol.jsonrpc import Call, Rejected, encode, parse_frame


def test_request_and_notification():
    f = parse_frame('{"jsonrpc":"2.0","id":"x","method":"m","params":{"a":1}}', 8)
    assert f.items == [Call("m", {"a": 1}, "x", False)] and not f.is_batch
    f = parse_frame('{"jsonrpc":"2.0","method":"m"}', 8)
    assert f.items == [Call("m", None, None, True)]


def test_null_id_is_a_request_not_a_notification():
    (item,) = parse_frame('{"jsonrpc":"2.0","id":null,"method":"m"}', 8).items
    assert isinstance(item, Call) and not item.is_notification and item.id is None


@pytest.mark.parametrize("text", ["", "{", "[1,", "nul", "NaN", "-Infinity", '{"a":1}{"b":2}'])
def test_parse_errors(text):
    with pytest.raises(ParseError):
        parse_frame(text, 8)


def test_deep_nesting_is_a_parse_error_not_a_crash():
    with pytest.raises(ParseError):
        parse_frame("[" * 100_000 + "]" * 100_000, 8)


def test_batch_rules():
    with pytest.raises(InvalidRequest):
        parse_frame("[]", 8)
    with pytest.raises(InvalidRequest):
        parse_frame("[" + ",".join(['{"jsonrpc":"2.0","method":"m"}'] * 9) + "]", 8)
    f = parse_frame('[{"jsonrpc":"2.0","id":1,"method":"m"}, 5]', 8)
    assert f.is_batch and isinstance(f.items[0], Call) and isinstance(f.items[1], Rejected)


def test_rejected_keeps_a_readable_id():
    (item,) = parse_frame('{"jsonrpc":"2.0","id":7,"method":3}', 8).items
    assert isinstance(item, Rejected) and item.response["id"] == 7
    (item,) = parse_frame('{"jsonrpc":"2.0","id":false,"method":"m"}', 8).items
    assert isinstance(item, Rejected) and item.response["id"] is None


def test_big_integer_ids_round_trip_exactly():
    (item,) = parse_frame('{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"m"}', 8).items
    assert item.id == 123456789012345678901234567890
    assert encode({"id": item.id}) == '{"id":123456789012345678901234567890}'

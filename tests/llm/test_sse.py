"""The Sans-I/O event-stream decoder, fed at every split point."""

from __future__ import annotations

import pytest

from server.llm.sse import ServerSentEvent, SSEDecoder


def feed_in_pieces(body: bytes, size: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for i in range(0, len(body), size):
        events.extend(decoder.feed(body[i : i + size]))
    events.extend(decoder.close())
    return events


BODY = (
    ": OPENROUTER PROCESSING\n\n"
    'data: {"t":"亚 — 25°C × 2 🌧"}\n\n'
    ": OPENROUTER PROCESSING\n\n"
    "data: line one\n"
    ": a comment between the data lines of one event\n"
    "data: line two\n\n"
    "data:no-space\n\n"
    "data: [DONE]\n\n"
).encode()
EXPECTED = ['{"t":"亚 — 25°C × 2 🌧"}', "line one\nline two", "no-space", "[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10**6])
def test_events_survive_any_read_size(size: int) -> None:
    """Events and multi-byte characters split across reads decode identically."""
    assert [e.data for e in feed_in_pieces(BODY, size)] == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 64])
@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_endings(size: int, newline: str) -> None:
    """CRLF (even split between reads) and lone CR end lines like LF does."""
    body = BODY.decode().replace("\n", newline).encode()
    assert [e.data for e in feed_in_pieces(body, size)] == EXPECTED


def test_comments_only_yield_nothing_and_are_counted() -> None:
    """Keep-alive comments produce no event."""
    decoder = SSEDecoder()
    assert decoder.feed(b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n") == []
    assert decoder.comments == 2


def test_unterminated_event_is_dropped_at_eof() -> None:
    """An event cut by EOF (no blank line) is discarded, never half-delivered."""
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b":') == [ServerSentEvent('{"a":1}')]
    assert decoder.has_partial_event
    assert decoder.close() == []


def test_unicode_line_separators_inside_data_do_not_split() -> None:
    """U+2028 inside JSON data is content, not a line end (unlike str.splitlines)."""
    body = 'data: {"t":"a\u2028b\x85c"}\n\n'.encode()
    assert [e.data for e in feed_in_pieces(body, 1)] == ['{"t":"a\u2028b\x85c"}']


def test_bom_event_and_id_fields() -> None:
    """A leading BOM is dropped; event and id fields are kept; unknown fields ignored."""
    body = "\ufeffevent: update\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n".encode()
    assert feed_in_pieces(body, 2) == [ServerSentEvent("x", "update", "7")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Undecodable bytes become U+FFFD instead of killing the stream."""
    assert [e.data for e in feed_in_pieces(b"data: a\xffb\n\n", 1)] == ["a\ufffdb"]

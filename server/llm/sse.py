"""Sans-I/O Server-Sent Events decoder: feed bytes as they arrive, get whole events.

Follows the WHATWG HTML "event stream" interpretation rules (§9.2.6):

* the byte stream is UTF-8, decoded *incrementally* so a multi-byte character
  split across two reads is never mangled; a leading BOM is dropped;
* lines end in CRLF, LF or CR -- and only those (``str.splitlines`` would also
  split on U+2028 and friends, which may legitimately appear inside JSON data);
* a line starting with ``:`` is a comment (OpenRouter's ``: OPENROUTER PROCESSING``
  keep-alives) and is ignored wherever it appears, even between the ``data:``
  lines of one event;
* ``field: value`` lines accumulate; one space after the colon is dropped;
  several ``data`` lines are joined with ``\\n``;
* a blank line dispatches the event (if it has data);
* at end of stream an event not terminated by a blank line is discarded.

No I/O, no asyncio: the HTTP layer pumps bytes in and reads events out.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Incremental decoder for one event stream. Call :meth:`feed` per read, then
    :meth:`close` at end of stream."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self.comments = 0
        """How many comment lines were seen (keep-alives; for diagnostics)."""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one read; return the events it completed (possibly none)."""
        return self._consume(self._utf8.decode(chunk), final=False)

    def close(self) -> list[ServerSentEvent]:
        """End of stream: flush what is complete; an unterminated event is dropped."""
        events = self._consume(self._utf8.decode(b"", final=True), final=True)
        self._data, self._event = [], ""
        return events

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an event not yet dispatched are buffered."""
        return bool(self._buffer or self._data)

    def _consume(self, text: str, *, final: bool) -> list[ServerSentEvent]:
        if text and not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        buf = self._buffer + text
        events: list[ServerSentEvent] = []
        pos = 0
        while True:
            m = _LINE_END.search(buf, pos)
            if m is None:
                break
            # A CR at the very end may be the first half of a CRLF split across reads.
            if m.group() == "\r" and m.end() == len(buf) and not final:
                break
            event = self._line(buf[pos : m.start()])
            if event is not None:
                events.append(event)
            pos = m.end()
        self._buffer = buf[pos:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent("\n".join(self._data), self._event or "message", self._last_id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored (we never reconnect a POST).
        return None

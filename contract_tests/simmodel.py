"""What the built-in simulator is documented to send for a user message (no simulator import).

Documented behaviour (issue 2 §5, simulator/directives.py docstring):

* a plain message gets ``You said: <text>``, where text is the message's non-``/sim``
  lines joined by newlines and stripped, in several chunks;
* ``/sim chunks N`` -- exactly N non-final chunks, then the final chunk;
* ``/sim tool NAME {json}`` lines -- the model calls the tools in parallel, in order;
  when the message also has text, the tool step first says ``Calling NAME1, NAME2.``;
  after every result the reply is one line ``Tool NAME returned: RESULT`` per result
  (in the order the results were given), joined by newlines; RESULT is the result string,
  or its compact JSON text, prefixed with ``Error: `` when isError;
* ``/sim error rate_limit|unavailable`` fail before any output, ``midstream`` after some
  chunks, ``hang`` never answers and ends by the server's first-chunk timeout.

Only what can be predicted is predicted: a message without text gets random words
(``exact`` is None), and more chunks than characters pads the text with random words
(only a prefix is known).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from contract_tests.protocol import CODE

__all__ = ["FAULT_CODES", "Script", "compact_json", "parse", "tool_reply_line"]

FAULT_CODES = {
    "rate_limit": CODE["PROVIDER_RATE_LIMITED"],
    "unavailable": CODE["PROVIDER_UNAVAILABLE"],
    "midstream": CODE["PROVIDER_UNAVAILABLE"],
    "hang": CODE["PROVIDER_TIMEOUT"],
}


@dataclass
class Script:
    """The predicted first model step of a turn."""

    exact: str | None = None
    """The full text of the first message, when known."""
    prefix: str = ""
    """A known prefix of that text."""
    chunks: int | None = None
    """Exact number of non-final chunks, when scripted."""
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None
    """Fault kind, or None."""
    unknown: bool = False
    """The message had a directive the model does not predict: structural checks only."""

    @property
    def error_code(self) -> int | None:
        return FAULT_CODES.get(self.error) if self.error else None


def parse(content: str) -> Script:
    """Predict the simulator's first step for a user message ``content``."""
    text_lines: list[str] = []
    tools: list[tuple[str, dict[str, Any]]] = []
    chunks: int | None = None
    error: str | None = None
    unknown = False
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped.startswith("/sim"):
            text_lines.append(line)
            continue
        parts = stripped.split(maxsplit=2)
        verb = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        if verb == "tool":
            name, _, raw = arg.partition(" ")
            try:
                args = json.loads(raw) if raw.strip() else {}
            except ValueError:
                unknown = True
                continue
            if not name or not isinstance(args, dict):
                unknown = True
                continue
            tools.append((name, args))
        elif verb == "chunks":
            try:
                n = int(arg)
            except ValueError:
                unknown = True
                continue
            if not 0 <= n <= 100_000:
                unknown = True
                continue
            chunks = n
        elif verb == "error" and arg in FAULT_CODES:
            error = arg
        else:
            unknown = True
    text = "\n".join(text_lines).strip()
    if unknown or sum(bool(x) for x in (tools, chunks is not None, error)) > 1:
        # Malformed or combined directives: behaviour not documented precisely.
        return Script(unknown=True)
    if error in ("rate_limit", "unavailable", "hang"):
        return Script(exact="", chunks=0, error=error)
    if tools:
        preface = f"Calling {', '.join(n for n, _ in tools)}." if text else ""
        return Script(exact=preface, prefix=preface, tools=tools)
    full = f"You said: {text}" if text else ""
    if error == "midstream":
        return Script(prefix=full, error="midstream")
    if chunks is not None:
        if chunks == 0:
            return Script(exact="", chunks=0)
        if not text:
            return Script(chunks=chunks)
        if chunks > len(full):
            return Script(prefix=full + " ", chunks=chunks)
        return Script(exact=full, prefix=full, chunks=chunks)
    if not text:
        return Script()
    return Script(exact=full, prefix=full)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_reply_line(name: str, result: Any, is_error: bool) -> str:
    content = result if isinstance(result, str) else compact_json(result)
    if is_error:
        content = f"Error: {content}"
    return f"Tool {name} returned: {content}"

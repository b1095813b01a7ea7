"""The built-in ``/sim`` directives, read from the last user message.

Lines of a user message that begin with ``/sim`` steer the simulated model; the
other lines are the message's text.

* ``/sim tool NAME JSON`` -- call tool NAME with the JSON object as arguments.
  Several such lines: parallel calls in one step. Once the results are in, the
  reply quotes each result.
* ``/sim chunks N`` -- the reply is exactly N non-final chunks, then the final one.
* ``/sim error KIND`` -- fail: ``rate_limit`` and ``unavailable`` before any output,
  ``midstream`` after some chunks, ``hang`` never answers (ends by a timeout).
  Every other fault of :mod:`simulator.faults` is accepted too (``payment``,
  ``error_before_first_chunk``, ``drop``, ``malformed_args``, ``duplicate_finish``).

These directives are the ``sim_directives`` built-in rule of the ``default``
scenario (see docs/simulator.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server.loop.jsonutil import loads

from simulator.faults import FAULT_KINDS

__all__ = ["DirectiveError", "Directives", "ERROR_KINDS", "parse_directives"]

ERROR_KINDS = FAULT_KINDS


class DirectiveError(ValueError):
    """A ``/sim`` line could not be read; the simulated model answers with the problem."""


@dataclass
class Directives:
    text: str = ""
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunks: int | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        """Whether the message had any ``/sim`` line at all."""
        return bool(self.tools or self.chunks is not None or self.error or self.problems)


def parse_directives(content: str) -> Directives:
    """Split a user message into its plain text and its ``/sim`` directives."""
    d = Directives()
    text_lines: list[str] = []
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped.startswith("/sim"):
            text_lines.append(line)
            continue
        parts = stripped.split(maxsplit=2)
        verb = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        try:
            if verb == "tool":
                name, _, raw = arg.partition(" ")
                if not name:
                    raise DirectiveError("/sim tool needs a NAME")
                args = loads(raw) if raw.strip() else {}
                if not isinstance(args, dict):
                    raise DirectiveError("/sim tool arguments must be a JSON object")
                d.tools.append((name, args))
            elif verb == "chunks":
                n = int(arg)
                if not 0 <= n <= 100_000:
                    raise DirectiveError("/sim chunks takes 0 to 100000")
                d.chunks = n
            elif verb == "error":
                if arg not in ERROR_KINDS:
                    raise DirectiveError(f"/sim error takes one of {', '.join(ERROR_KINDS)}")
                d.error = arg
            else:
                raise DirectiveError(f"unknown directive {stripped!r}")
        except (ValueError, orjson.JSONDecodeError) as exc:
            d.problems.append(str(exc) if isinstance(exc, DirectiveError) else f"bad directive {stripped!r}: {exc}")
    d.text = "\n".join(text_lines).strip()
    return d

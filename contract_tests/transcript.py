"""Transcripts: every frame a test sent and received, as JSON lines, replayable.

One line per event, in the order the client saw them::

    {"i": 3, "t": 0.0041, "conn": "c0", "dir": "send", "frame": {...}}
    {"i": 4, "t": 0.0049, "conn": "c0", "dir": "recv", "frame": {...}}

``dir`` is one of ``open``, ``send``, ``recv``, ``close`` (the client closes; ``abrupt``
true drops TCP without a close frame), ``closed`` (the connection ended; ``code``),
``settle`` (the client waited for quiet: replay waits there too), ``sleep`` (a
deliberate wait), ``pause_reading``/``resume_reading`` (the client stops or resumes
reading a connection), ``note`` (what the test did, for the reader) and ``violation``
(a broken promise, where it was seen).
A sent frame is stored as ``frame`` (its JSON, when compact re-serialization gives the
exact text back), else ``text``, ``binary`` (hex) or ``invalid_utf8`` (hex of a text
frame's raw bytes). The first line is a header (``{"transcript": 1, ...}``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from contract_tests.protocol import SPEC_PATH

__all__ = ["Transcript", "compact", "read_transcript"]

PRINT_LIMIT = 240
"""Lines shown in a failure message; the saved file has all of them."""


def compact(value: Any) -> str:
    """The client's serialization of a frame (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Transcript:
    def __init__(self, title: str = "") -> None:
        self.title = title
        self.entries: list[dict[str, Any]] = []
        self._t0 = time.monotonic()

    def add(self, conn: str | None, direction: str, **fields: Any) -> int:
        entry: dict[str, Any] = {"i": len(self.entries), "t": round(time.monotonic() - self._t0, 4)}
        if conn is not None:
            entry["conn"] = conn
        entry["dir"] = direction
        entry.update(fields)
        self.entries.append(entry)
        return entry["i"]

    def add_sent(self, conn: str, data: str | bytes, kind: str) -> int:
        if kind == "binary":
            return self.add(conn, "send", binary=bytes(data).hex())  # type: ignore[arg-type]
        if kind == "invalid_utf8":
            return self.add(conn, "send", invalid_utf8=bytes(data).hex())  # type: ignore[arg-type]
        assert isinstance(data, str)
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return self.add(conn, "send", text=data)
        if compact(value) == data:
            return self.add(conn, "send", frame=value)
        return self.add(conn, "send", text=data)

    def add_received(self, conn: str, data: str | bytes) -> int:
        if isinstance(data, bytes):
            return self.add(conn, "recv", binary=data.hex())
        try:
            return self.add(conn, "recv", frame=json.loads(data))
        except (ValueError, RecursionError):
            return self.add(conn, "recv", text=data)

    # ------------------------------------------------------------------ output
    def header(self, **extra: Any) -> dict[str, Any]:
        digest = hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest()[:16]
        return {"transcript": 1, "title": self.title, "spec_sha256": digest, **extra}

    def lines(self, **header: Any) -> list[str]:
        return [compact(self.header(**header))] + [compact(e) for e in self.entries]

    def save(self, path: Path, **header: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines(**header)) + "\n", encoding="utf-8")
        return path

    def abridged(self, limit: int = PRINT_LIMIT, width: int = 600) -> str:
        """The transcript for a failure message: long frames cut, runs of chunk
        notifications folded, at most ``limit`` lines (head and tail)."""
        out: list[str] = []
        run: list[dict[str, Any]] = []

        def flush() -> None:
            if len(run) > 6:
                out.extend(_short(e, width) for e in run[:3])
                out.append(f"... {len(run) - 5} more chunk notifications ...")
                out.extend(_short(e, width) for e in run[-2:])
            else:
                out.extend(_short(e, width) for e in run)
            run.clear()

        for e in self.entries:
            frame = e.get("frame")
            if (
                e["dir"] == "recv"
                and isinstance(frame, dict)
                and frame.get("method") == "AIMessageChunkNotification"
                and not frame.get("params", {}).get("isFinal")
            ):
                run.append(e)
                continue
            flush()
            out.append(_short(e, width))
        flush()
        if len(out) > limit:
            head = limit // 3
            tail = limit - head
            out = out[:head] + [f"... {len(out) - limit} lines omitted ..."] + out[-tail:]
        return "\n".join(out)


def _short(entry: dict[str, Any], width: int) -> str:
    text = compact(entry)
    if len(text) > width:
        text = text[: width - 40] + f'...<{len(text)} chars>"}}'
    return text


def read_transcript(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or "transcript" not in lines[0]:
        raise ValueError(f"{path}: first line must be a transcript header")
    return lines[0], lines[1:]

"""JSON encoding that never fails on valid JSON data.

orjson is fast but refuses integers beyond 64 bits (valid JSON, and schema-valid in
tool parameters and tool results); those rare values take the stdlib path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

_LONG_NUMBER = re.compile(r"\d{19}")


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes of ``value`` (keys sorted when asked)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON; integers beyond 64 bits stay exact integers (orjson would make
    them floats), so such texts take the stdlib parser."""
    probe = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if _LONG_NUMBER.search(probe):
        return json.loads(text)
    return orjson.loads(text)

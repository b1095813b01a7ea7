"""Deterministic content: filler words, chunk splits, tool arguments from a JSON schema.

Every function takes the ``random.Random`` it may draw from; nothing here reads the
clock or any global state, so the same generator state gives the same output.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["WORDS", "arguments_from_schema", "count_words", "split_text", "split_words", "words"]

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_TOKEN = re.compile(r"\S+\s*|\s+")


def words(rng: random.Random, n: int) -> str:
    """``n`` filler words separated by spaces."""
    return " ".join(rng.choices(WORDS, k=n))


def count_words(text: str) -> int:
    return len(text.split())


def tokens(text: str) -> list[str]:
    """Words with their trailing whitespace (joined, they give ``text`` back)."""
    return _TOKEN.findall(text)


def split_text(text: str, n: int, rng: random.Random) -> list[str]:
    """Split ``text`` into exactly ``n`` non-empty pieces (``n <= len(text)``), at word
    boundaries where there are enough words, else at characters."""
    if n <= 0:
        return []
    toks = tokens(text)
    if len(toks) < n:
        toks = list(text)
    cuts = sorted(rng.sample(range(1, len(toks)), n - 1)) if n > 1 else []
    bounds = [0, *cuts, len(toks)]
    return ["".join(toks[a:b]) for a, b in zip(bounds, bounds[1:])]


def split_words(text: str, lo: int, hi: int, rng: random.Random) -> list[str]:
    """Split ``text`` into pieces of ``lo`` to ``hi`` words each (the last may be shorter)."""
    toks = tokens(text)
    pieces: list[str] = []
    i = 0
    while i < len(toks):
        k = rng.randint(lo, hi)
        pieces.append("".join(toks[i : i + k]))
        i += k
    return pieces


def arguments_from_schema(schema: Mapping[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """A JSON object that satisfies a (simple) JSON schema of a tool's parameters.

    Handles ``type`` (object, string, integer, number, boolean, array, null, or a list
    of them), ``enum``, ``const``, ``properties``/``required`` (optional properties are
    included at random), ``minimum``/``maximum``, ``minItems``/``maxItems``,
    ``anyOf``/``oneOf`` (one branch at random) and ``default`` is ignored.
    """
    value = _value(schema or {"type": "object"}, rng, depth=0)
    return value if isinstance(value, dict) else {}


def _value(schema: Mapping[str, Any], rng: random.Random, depth: int) -> Any:
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _value(rng.choice(list(schema[key])), rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind) if kind else None
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if depth > 6:  # recursion guard for self-similar schemas
        kind = "null" if kind in ("object", "array") else kind
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for name in props:
            if name in required or rng.random() < 0.5:
                out[name] = _value(props[name] or {}, rng, depth + 1)
        return out
    if kind == "array":
        lo = int(schema.get("minItems", 1))
        hi = max(lo, int(schema.get("maxItems", lo + 2)))
        item = schema.get("items") or {"type": "string"}
        return [_value(item, rng, depth + 1) for _ in range(rng.randint(lo, hi))]
    if kind == "integer":
        lo = int(schema.get("minimum", 0))
        hi = int(schema.get("maximum", lo + 100))
        return rng.randint(lo, max(lo, hi))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 100.0))
        return round(rng.uniform(lo, max(lo, hi)), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return words(rng, rng.randint(1, 3))

"""Everything the contract suite knows about the protocol, read from spec/protocol.schema.json.

Nothing here imports the server: the spec file is the only source. Tables:

* ``REQUEST_METHODS`` / ``NOTIFICATION_METHODS`` -- ``x-methods`` split by direction;
* ``ERROR_CODES`` -- ``x-error-codes`` by code, ``CODE`` -- code by name;
* ``CLOSE_CODES`` -- ``x-close-codes``;
* ``TRANSITIONS`` -- ``x-state-machine`` (status -> statuses it may change to);
* ``REQUIREMENTS`` -- ``x-requirements`` by id.
"""

from __future__ import annotations

import copy
import json
import math
import os
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = [
    "CLOSE_CODES",
    "CODE",
    "ERROR_CODES",
    "NOTIFICATION_METHODS",
    "PROTOCOL_VERSION",
    "REQUEST_METHODS",
    "REQUIREMENTS",
    "ROOT",
    "SCHEMA",
    "SPEC_PATH",
    "TRANSITIONS",
    "id_key",
    "inline_schema",
    "is_valid",
    "schema_errors",
    "valid_request_id",
]

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = Path(os.environ.get("AILOOP_CONTRACT_SPEC", ROOT / "spec" / "protocol.schema.json"))
SCHEMA: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))

PROTOCOL_VERSION: int = SCHEMA["x-protocol-version"]
METHODS: dict[str, dict[str, Any]] = SCHEMA["x-methods"]
REQUEST_METHODS = {m: d for m, d in METHODS.items() if d["direction"] == "client_to_server"}
NOTIFICATION_METHODS = {m: d for m, d in METHODS.items() if d["direction"] == "server_to_client"}
ERROR_CODES: dict[int, dict[str, Any]] = {e["code"]: e for e in SCHEMA["x-error-codes"]}
CODE: dict[str, int] = {e["name"]: e["code"] for e in SCHEMA["x-error-codes"]}
CLOSE_CODES: dict[int, str] = {c["code"]: c["meaning"] for c in SCHEMA["x-close-codes"]}
_SM = SCHEMA["x-state-machine"]
INITIAL_STATUS: str = _SM["initial"]
FINAL_STATUS: str = _SM["final"]
TRANSITIONS: dict[str, list[str]] = _SM["transitions"]
REQUIREMENTS: dict[str, dict[str, Any]] = {r["id"]: r for r in SCHEMA["x-requirements"]}
ENDED_REASONS = ("client_stop", "disconnect", "server_shutdown", "error")
"""From SessionStatusParams.reason's description."""


@cache
def _validator(def_name: str) -> Draft202012Validator:
    if def_name not in SCHEMA["$defs"]:
        raise KeyError(f"spec has no $defs/{def_name}")
    # Inlined (no $ref to resolve per frame): about twice as fast.
    return Draft202012Validator(inline_schema(def_name))


def is_valid(def_name: str, instance: Any) -> bool:
    return _validator(def_name).is_valid(instance)


def schema_errors(def_name: str, instance: Any) -> list[str]:
    """Human-readable schema errors of ``instance`` against ``$defs/def_name``."""
    if _validator(def_name).is_valid(instance):
        return []
    return [
        f"{def_name}: {e.message[:300]} at /{'/'.join(str(p) for p in e.absolute_path)}"
        for e in _validator(def_name).iter_errors(instance)
    ]


def inline_schema(def_name: str) -> dict[str, Any]:
    """``$defs/def_name`` with every ``$ref`` inlined (for hypothesis-jsonschema)."""
    defs = SCHEMA["$defs"]

    def resolve(node: Any, depth: int = 0) -> Any:
        if depth > 50:
            raise ValueError("recursive $ref")
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(copy.deepcopy(defs[name]), depth + 1), **resolve(rest, depth + 1)}
            return {k: resolve(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth + 1) for v in node]
        return node

    out = resolve(copy.deepcopy(defs[def_name]))
    for k in ("title", "description"):
        out.pop(k, None)
    return out


def valid_request_id(value: Any) -> bool:
    """A JSON-RPC id the spec accepts (``$defs/RequestId``): string, number or null."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def id_key(value: Any) -> tuple[str, str]:
    """Identity of a request id (JSON-RPC 2.0 §5: the response carries the same value).

    Numbers compare by exact numeric value (``1`` and ``1.0`` are the same id, a 2**70
    integer echoed as a rounded float is not); strings by content; null is null."""
    if value is None:
        return ("null", "")
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("num", str(Fraction(value)))
    return ("other", repr(value))

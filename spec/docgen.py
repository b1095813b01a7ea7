"""Render docs/protocol.md from the schema (called by ``spec.codegen``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_protocol_doc"]


def _type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        return " \\| ".join(_type_of(p) for p in prop["anyOf"])
    t = prop.get("type")
    if t == "array":
        return f"array of {_type_of(prop.get('items', {}))}"
    if isinstance(t, list):
        return " \\| ".join(t)
    return t or "any JSON"


def _constraints(prop: dict[str, Any]) -> str:
    keys = ["minLength", "maxLength", "minimum", "maximum", "maxItems", "pattern"]
    return ", ".join(f"{k} {prop[k]}" for k in keys if k in prop)


def _fields_table(defn: dict[str, Any]) -> list[str]:
    props = defn.get("properties", {})
    if not props:
        return ["(no fields)", ""]
    required = set(defn.get("required", []))
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, prop in props.items():
        notes = " ".join(x for x in [prop.get("description", ""), _constraints(prop)] if x)
        rows.append(f"| `{name}` | {_type_of(prop)} | {'yes' if name in required else 'no'} | {notes} |")
    extra = "Unknown fields are rejected." if defn.get("additionalProperties") is False else "Other fields are allowed."
    return rows + ["", extra, ""]


def render_protocol_doc(schema: dict[str, Any]) -> str:
    """Return the Markdown protocol reference for ``schema``."""
    defs = schema["$defs"]
    methods = schema["x-methods"]
    out: list[str] = [
        "<!-- GENERATED from spec/protocol.schema.json by `python -m spec.codegen` -- DO NOT EDIT. -->",
        "",
        f"# Protocol reference (version {schema['x-protocol-version']})",
        "",
        schema["description"],
        "",
        "Direction: **C→S** is client to server, **S→C** server to client.",
        "",
        "## Contents",
        "",
        "| name | kind | direction | summary |",
        "|---|---|---|---|",
    ]
    for name, m in methods.items():
        arrow = "C→S" if m["direction"] == "client_to_server" else "S→C"
        out.append(f"| [`{name}`](#{name.lower()}) | {m['kind']} | {arrow} | {m['description'].split('. ')[0]}. |")
    out += ["", "## Methods (client → server requests)", ""]
    for name, m in methods.items():
        if m["kind"] != "request":
            continue
        out += [f"### {name}", "", f"Direction: C→S, request. {m['description']}", ""]
        out += [f"**Params** (`{m['params']}`){' — optional' if m['paramsOptional'] else ''}:", ""]
        out += _fields_table(defs[m["params"]])
        out += [f"**Result** (`{m['result']}`):", ""]
        out += _fields_table(defs[m["result"]])
    out += ["## Notifications (server → client)", ""]
    for name, m in methods.items():
        if m["kind"] != "notification":
            continue
        out += [f"### {name}", "", f"Direction: S→C, notification. {m['description']}", ""]
        out += [f"**Params** (`{m['params']}`):", ""]
        out += _fields_table(defs[m["params"]])
    sm = schema["x-state-machine"]
    out += ["## Session state machine", "", sm["notes"], "",
            f"Initial status: `{sm['initial']}`; final status: `{sm['final']}`.", "",
            "| from | allowed next statuses |", "|---|---|"]
    for src, dsts in sm["transitions"].items():
        out.append(f"| `{src}` | {', '.join(f'`{d}`' for d in dsts) or '(none)'} |")
    out += ["", "## Error codes", "", "| code | name | retryable | meaning |", "|---|---|---|---|"]
    for e in schema["x-error-codes"]:
        out.append(f"| {e['code']} | `{e['name']}` | {'yes' if e['retryable'] else 'no'} | {e['meaning']} |")
    hs = schema.get("x-handshake")
    if hs:
        out += ["", "## Handshake", "", f"Endpoint `{hs['path']}`, subprotocol `{hs['subprotocol']}` (optional). {hs['auth']}"]
    out += ["", "## WebSocket close codes", "", "| code | meaning |", "|---|---|"]
    for c in schema["x-close-codes"]:
        out.append(f"| {c['code']} | {c['meaning']} |")
    out += ["", "## Requirements (guarantees the server makes)", "", "| id | source | requirement |", "|---|---|---|"]
    for r in schema["x-requirements"]:
        out.append(f"| {r['id']} | {r['source']} | {r['text']} |")
    out += ["", "## Types", ""]
    listed = {m["params"] for m in methods.values()} | {m.get("result") for m in methods.values()} | {m["message"] for m in methods.values()}
    for name, defn in defs.items():
        if name in listed:
            continue
        out += [f"### {name}", "", defn.get("description", ""), ""]
        if defn.get("type") == "object":
            out += _fields_table(defn)
        else:
            out += [f"Type: {_type_of(defn)} {_constraints(defn)}".rstrip(), ""]
    return "\n".join(out).rstrip("\n") + "\n"

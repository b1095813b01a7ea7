"""The layering rules, checked on the source: the AI loop knows nothing of the web
or JSON-RPC, the JSON-RPC core does no I/O, the session layer no web framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

WEB = {"fastapi", "starlette", "uvicorn", "websockets", "httpx", "httpx_sse"}
RULES = {
    "server/loop": WEB | {"spec", "server.protocol", "server.session", "server.transport", "server.app", "server.llm", "simulator", "jsonschema"},
    "server/protocol": WEB | {"asyncio", "server.session", "server.loop", "server.transport", "server.app", "server.llm"},
    "server/session": WEB | {"server.transport", "server.app", "server.llm", "simulator"},
    "simulator": {"server.session", "server.protocol", "server.transport", "server.app", "server.llm", "spec"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_imports(package):
    banned = RULES[package]
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad

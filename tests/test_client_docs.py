"""docs/operations.md and docs/client.md stay true to the spec and the configuration:
every error and close code is explained, the nginx sample has what WebSockets need, and
every configuration key named exists."""

from __future__ import annotations

import re

import pytest

from server.config import Settings
from tests.support import ROOT, SCHEMA

REFUSED_KEYS = {("auth", "tokens"), ("openrouter", "api_key")}
"""Named in the docs as keys config.yaml must not hold."""
OPS = (ROOT / "docs" / "operations.md").read_text()
CLIENT = (ROOT / "docs" / "client.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"^#{2,3} ", text[start + len(heading):], re.M)
    return text[start: start + len(heading) + (nxt.start() if nxt else len(text))]


def test_every_error_code_is_explained():
    table = _section(OPS, "### JSON-RPC errors")
    rows = dict(re.findall(r"^\| (-\d+) \| `([A-Z_]+)` \|", table, re.M))
    for e in SCHEMA["x-error-codes"]:
        assert rows.get(str(e["code"])) == e["name"], f"{e['code']} {e['name']} missing from docs/operations.md"


def test_every_close_code_is_explained():
    table = _section(OPS, "### WebSocket close codes")
    documented = set(re.findall(r"^\| (\d{4}) \|", table, re.M))
    for c in SCHEMA["x-close-codes"]:
        assert str(c["code"]) in documented, f"close code {c['code']} missing from docs/operations.md"


def test_every_handshake_status_is_explained():
    handshake = SCHEMA.get("x-handshake")
    if not handshake:
        pytest.skip("the spec describes no handshake statuses")
    table = _section(OPS, "### Refused handshakes")
    documented = set(re.findall(r"^\| (\d{3})", table, re.M))
    for status in set(re.findall(r"HTTP (\d{3})", str(handshake))):
        assert status in documented, f"HTTP {status} missing from docs/operations.md"


def test_nginx_sample_upgrades_websockets():
    m = re.search(r"<!-- test: nginx-site -->\s*```nginx\n(.*?)```", OPS, re.S)
    assert m
    conf = m.group(1)
    assert conf.count("{") == conf.count("}")
    ws = re.search(r"location = /ws \{(.*?)\n    \}", conf, re.S)
    assert ws, "no location = /ws"
    block = ws.group(1)
    for directive in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                      "proxy_set_header Connection $connection_upgrade;", "proxy_set_header Host $host;"):
        assert directive in block, directive
    assert "map $http_upgrade $connection_upgrade" in conf
    assert re.search(r"hash \$remote_addr consistent;", conf), "sticky routing for several processes"
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", block).group(1))
    limits = Settings().limits
    for key in ("heartbeat_interval_s", "idle_timeout_s"):
        if hasattr(limits, key):
            assert timeout > getattr(limits, key), f"proxy_read_timeout {timeout}s <= limits.{key}"


def test_configuration_keys_named_in_the_docs_exist():
    sections = Settings.model_fields
    if "auth" not in sections:
        pytest.skip("docs/operations.md describes the hardening settings (auth.*), not in this server yet")
    missing = []
    for text, name in ((OPS, "operations.md"), (CLIENT, "client.md")):
        keys = set(re.findall(r"`(server|ai|simulator|openrouter|session|limits|auth)\.([a-z_]+)(?![A-Za-z])", text))
        for section, key in keys - REFUSED_KEYS:  # camelCase names are initialize's limits
            model = sections[section].annotation
            if key not in model.model_fields:
                missing.append(f"{name}: {section}.{key}")
    assert not missing, missing


def test_secrets_are_environment_variables_in_the_docs():
    assert "OPENROUTER_API_KEY" in OPS and "AILOOP_AUTH_TOKENS" in OPS
    assert "api_key:" not in OPS and "tokens:" not in OPS

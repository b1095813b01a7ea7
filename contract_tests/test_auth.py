"""AUTH-1: with authentication on, the handshake needs a valid bearer token and an
allowed Origin, and is refused with HTTP 401/403 before the upgrade otherwise.

The suite starts a second server of its own with ``auth.enabled`` (a random token in
AILOOP_AUTH_TOKENS and one allowed Origin). Against a server given by URL it runs
when that server advertises ``capabilities.auth`` and ``--auth-token`` is given.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from contract_tests.harness import SUBPROTOCOLS, Harness, Target, run_scenario

TOKEN = secrets.token_urlsafe(24)
ALLOWED_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def auth_target(target: Target, extra_server: Any) -> Target:
    if target.started_here:
        return extra_server(
            "auth",
            {"auth": {"enabled": True, "allowed_origins": [ALLOWED_ORIGIN]}},
            env={"AILOOP_AUTH_TOKENS": TOKEN},
            token=TOKEN,
        )
    if not target.extra.get("capabilities", {}).get("auth"):
        pytest.skip("the target has authentication off (capabilities.auth is empty)")
    if not target.token:
        pytest.skip("the target has authentication on: pass --auth-token to test it")
    return target


def handshake(url: str, **kw: Any) -> int:
    """HTTP status of a WebSocket handshake (101 when it is accepted)."""
    try:
        with connect(url, open_timeout=10, close_timeout=2, **kw):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.requirement("AUTH-1")
def test_handshake_without_a_valid_token_is_refused(auth_target: Target) -> None:
    """Missing token: 401; wrong token: 403; a valid one in the Authorization header,
    the `ailoop.bearer.<token>` subprotocol or `?token=`: accepted."""
    url, token = auth_target.ws_url, auth_target.token
    assert handshake(url) == 401
    assert handshake(url, additional_headers={"Authorization": "Bearer not-the-token"}) == 403
    assert handshake(url, subprotocols=[*(SUBPROTOCOLS or []), "ailoop.bearer.not-the-token"]) == 403  # type: ignore[list-item]
    assert handshake(url, additional_headers={"Authorization": f"Bearer {token}"}) == 101
    assert handshake(url, subprotocols=[*(SUBPROTOCOLS or []), f"ailoop.bearer.{token}"]) == 101  # type: ignore[list-item]
    assert handshake(f"{url}?token={token}") == 101


@pytest.mark.requirement("AUTH-1")
def test_origin_outside_the_allowlist_is_refused(auth_target: Target) -> None:
    """A browser Origin that is not allowed gets 403 even with a valid token."""
    url, token = auth_target.ws_url, auth_target.token
    bearer = {"Authorization": f"Bearer {token}"}
    assert handshake(url, additional_headers=bearer, origin="https://evil.example") == 403  # type: ignore[arg-type]
    if auth_target.started_here:
        assert handshake(url, additional_headers=bearer, origin=ALLOWED_ORIGIN) == 101  # type: ignore[arg-type]


@pytest.mark.requirement("AUTH-1", "RPC-1")
def test_authenticated_connection_speaks_the_protocol(auth_target: Target) -> None:
    """Once in, the connection works and initialize advertises bearer authentication."""

    async def body(h: Harness) -> None:
        c = await h.open()
        r = await h.request(c, "initialize")
        assert "bearer" in r["result"]["capabilities"]["auth"]
        sid = await h.start_session(c)
        assert sid is not None
        await h.settle()

    run_scenario(auth_target, "auth_ok", body)

"""Handshake checks: bearer tokens and the Origin allowlist (before the upgrade).

Tokens are compared by their SHA-256 digest in constant time; the server never
holds a plaintext token from a file, and never logs one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["SUBPROTOCOL", "Authenticator", "Verdict", "load_token_hashes"]

SUBPROTOCOL = "ailoop.v1"
BEARER_PREFIX = "ailoop.bearer."


def load_token_hashes(path: str | Path) -> set[bytes]:
    """Read a file of SHA-256 hex digests (one per line; blank lines and # comments skipped)."""
    hashes = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            hashes.add(bytes.fromhex(line))
    return hashes


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    """0 to accept, else the HTTP status to refuse the handshake with."""
    reason: str = ""
    subprotocol: str | None = None


class Authenticator:
    def __init__(self, *, enabled: bool, token_hashes: Iterable[bytes], allowed_origins: Iterable[str]) -> None:
        self.enabled = enabled
        self._hashes = list(token_hashes)
        self._origins = {o.rstrip("/").lower() for o in allowed_origins}

    def _token_ok(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        ok = False
        for h in self._hashes:  # no early exit: constant time in the number of tokens
            ok |= hmac.compare_digest(digest, h)
        return ok

    def _origin_ok(self, origin: str | None, host: str | None) -> bool:
        if origin is None or "*" in self._origins:
            return True  # non-browser clients send no Origin
        origin = origin.rstrip("/").lower()
        if origin in self._origins:
            return True
        return bool(host) and urlsplit(origin).netloc == host.lower()  # same origin

    def check(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Verdict:
        """Decide on a handshake from its headers and query parameters."""
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        if not self._origin_ok(headers.get("origin"), headers.get("host")):
            return Verdict(403, "origin not allowed")
        if not self.enabled:
            return Verdict(0, subprotocol=subprotocol)
        token = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if token is None:
            token = next((p[len(BEARER_PREFIX):] for p in offered if p.startswith(BEARER_PREFIX)), None)
        if token is None:
            token = query.get("token")
        if not token:
            return Verdict(401, "authentication required")
        if not self._token_ok(token):
            return Verdict(403, "invalid token")
        return Verdict(0, subprotocol=subprotocol)

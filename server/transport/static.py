"""The browser playground: ``server/static/`` served at ``/`` (docs/client.md).

``mount_playground(app)`` adds one catch-all mount at ``/`` that never shadows the
server's own endpoints, whatever order routes are added in: it does not match
WebSocket scopes at all, nor ``/ws``, ``/healthz`` and ``/metrics`` (and anything below
them), so those reach their own routes even when they are added after it.

Responses carry a Content-Security-Policy that allows the page's own files and
WebSocket connections only: the playground makes no other network request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

__all__ = ["RESERVED_PATHS", "STATIC_DIR", "mount_playground"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
RESERVED_PATHS = ("/ws", "/healthz", "/metrics")

SECURITY_HEADERS = [
    (b"content-security-policy",
     (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
      b"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response of the wrapped app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in names)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _PlaygroundMount(Mount):
    """A mount at ``/`` that steps aside for WebSockets and the reserved paths."""

    def __init__(self, *args: Any, reserved: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reserved = reserved

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if any(path == p or path.startswith(p + "/") for p in self.reserved):
            return Match.NONE, {}
        return super().matches(scope)


def mount_playground(app: Any, directory: str | Path = STATIC_DIR, *,
                     reserved: tuple[str, ...] = RESERVED_PATHS) -> None:
    """Serve ``directory`` (index.html at ``/``) on ``app`` (FastAPI or Starlette)."""
    static = StaticFiles(directory=str(directory), html=True, check_dir=True)
    app.router.routes.append(_PlaygroundMount("/", app=_SecurityHeaders(static), name="playground", reserved=reserved))

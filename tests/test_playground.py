"""The playground's static files and their mount: served at /, never shadowing /ws,
/healthz or /metrics, no external requests, the documented default tools."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import websockets
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse

from server.app import create_app
from server.config import Settings
from server.transport.static import RESERVED_PATHS, STATIC_DIR, mount_playground
from tests.support import ROOT, TIMEOUT, WsClient, make_settings, serve_app

STATIC_FILES = ["index.html", "app.js", "style.css"]


def playground_app(settings: Settings | None = None) -> FastAPI:
    """The app as create_app builds it, with the playground mounted (as app.py will)."""
    app = create_app(settings or make_settings())
    if not any(getattr(r, "name", None) == "playground" for r in app.router.routes):
        mount_playground(app)
    return app


async def test_playground_files_served_with_security_headers():
    app = playground_app()
    async with serve_app(app) as srv, httpx.AsyncClient(base_url=srv.http_url, timeout=TIMEOUT) as http:
        index = await http.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "AILoop Interactive" in index.text
        csp = index.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self' ws: wss:" in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        for name, ctype in [("app.js", "javascript"), ("style.css", "text/css")]:
            r = await http.get("/" + name)
            assert r.status_code == 200 and ctype in r.headers["content-type"], (name, r.headers)
        assert (await http.get("/no-such-file.js")).status_code == 404
        assert (await http.post("/")).status_code == 405
        # The server's own endpoints still answer as before.
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert "content-security-policy" not in health.headers


async def test_mount_never_shadows_reserved_paths_even_when_routes_come_later():
    """Routes added after the mount (as create_app may add /metrics) still answer."""
    app = FastAPI()
    mount_playground(app)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("ailoop_test_metric 1\n")

    @app.get("/metrics/extra")
    async def metrics_extra() -> dict[str, int]:
        return {"extra": 1}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "later"}

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("echo " + await ws.receive_text())
        await ws.close()

    async with serve_app(app) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=TIMEOUT) as http:
            m = await http.get("/metrics")
            assert m.status_code == 200 and m.text == "ailoop_test_metric 1\n"
            assert (await http.get("/metrics/extra")).json() == {"extra": 1}
            assert (await http.get("/healthz")).json() == {"status": "later"}
            assert (await http.get("/")).status_code == 200
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo hi"


async def test_mounted_on_the_real_app():
    """create_app's endpoints with the playground mounted: /healthz, /metrics (whatever
    create_app serves there, never a static file) and a session over /ws."""
    app = playground_app()
    async with serve_app(app) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=TIMEOUT) as http:
            assert (await http.get("/healthz")).json()["status"] == "ok"
            for path in ("/metrics", "/ws", "/healthz/x"):
                assert "content-security-policy" not in (await http.get(path)).headers, path
        async with WsClient.connect(srv.ws_url) as c:
            sid = await c.start_session()
            notes = await c.run_turn(sid, "hello")
            assert "".join(p["chunk"] for p in notes if "isFinal" in p) == "You said: hello"
            await c.call("stopSession", {"sessionId": sid})
        await srv.wait_idle()


def test_reserved_paths_are_the_servers_endpoints():
    assert set(RESERVED_PATHS) == {"/ws", "/healthz", "/metrics"}


def test_static_files_make_no_external_requests():
    """No CDN, no font service, no absolute URL: everything is relative to the server."""
    for name in STATIC_FILES:
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://", text), f"{name} names an absolute http(s) URL"
        assert not re.search(r"""(?:src|href)\s*=\s*["']//""", text), f"{name} has a protocol-relative URL"
        assert "@import" not in text and "url(" not in text.replace("url()", ""), name
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"""(?:src|href)="([^"]+)\"""", html) == ["data:,", "style.css", "app.js"]


def test_default_tools_are_the_documented_example():
    """The tools textarea is prefilled with scripts/examples/weather-tools.json."""
    html = (STATIC_DIR / "index.html").read_text()
    m = re.search(r'<textarea id="tools"[^>]*>(.*?)</textarea>', html, re.S)
    assert m is not None
    example = json.loads((ROOT / "scripts" / "examples" / "weather-tools.json").read_text())
    assert json.loads(m.group(1)) == example


def test_static_files_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'server = ["static/*"]' in text
    assert {p.name for p in STATIC_DIR.iterdir()} >= set(STATIC_FILES)

"""The bare endpoint: the "physical limit" our server is compared with.

``python -m load.bare_server --port P``. FastAPI + uvicorn with exactly our server's
uvicorn settings (uvloop, httptools, ws ``websockets-sansio``, no compression),
orjson, and no session logic: no validation, no models, no tasks, no queues. It
answers the same requests with frames of the same shapes and sizes as ours:

* ``startSession`` → a result, then SessionStatusNotification ``started``;
* ``sendUserMessage`` → a result, then SessionStatusNotification ``streaming``,
  N AIMessageChunkNotification (N from a ``/sim chunks N`` line, default 50), a
  final chunk with usage, and SessionStatusNotification ``idle``; all at once.
"""

from __future__ import annotations

import argparse
import random
import secrets
import socket
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

__all__ = ["create_bare_app", "main"]

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def _chunks_wanted(content: str) -> int:
    for line in content.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "/sim" and parts[1] == "chunks":
            return int(parts[2])
    return 50


def create_bare_app() -> FastAPI:
    app = FastAPI()
    state = {"connections": 0, "sessions": 0}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "sessions": state["sessions"], "connections": state["connections"], "runningTurns": 0}

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        state["connections"] += 1
        sid = "s_" + secrets.token_urlsafe(12)
        seq = 0
        turns = 0
        have_session = False
        rng = random.Random()
        dumps = orjson.dumps
        try:
            while True:
                msg = orjson.loads(await ws.receive_text())
                method = msg.get("method")
                params = msg.get("params") or {}
                if method == "startSession":
                    if not have_session:
                        have_session = True
                        state["sessions"] += 1
                    await ws.send_text(dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "sessionId": sid, "status": "started", "model": "bare-1", "tools": []}}).decode())
                    seq += 1
                    await ws.send_text(dumps({"jsonrpc": "2.0", "method": "SessionStatusNotification", "params": {
                        "sessionId": sid, "status": "started", "seq": seq}}).decode())
                elif method == "sendUserMessage":
                    turns += 1
                    turn = f"turn_{turns}"
                    mid = f"msg_{turns}"
                    n = _chunks_wanted(params.get("content", ""))
                    await ws.send_text(dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "sessionId": sid, "turnId": turn}}).decode())
                    seq += 1
                    await ws.send_text(dumps({"jsonrpc": "2.0", "method": "SessionStatusNotification", "params": {
                        "sessionId": sid, "status": "streaming", "turnId": turn, "seq": seq}}).decode())
                    for _ in range(n):
                        seq += 1
                        await ws.send_text(dumps({"jsonrpc": "2.0", "method": "AIMessageChunkNotification", "params": {
                            "sessionId": sid, "turnId": turn, "messageId": mid, "chunk": rng.choice(_WORDS) + " ",
                            "isFinal": False, "seq": seq}}).decode())
                    seq += 1
                    await ws.send_text(dumps({"jsonrpc": "2.0", "method": "AIMessageChunkNotification", "params": {
                        "sessionId": sid, "turnId": turn, "messageId": mid, "chunk": "", "isFinal": True,
                        "finishReason": "stop", "usage": {"promptTokens": 3, "completionTokens": n,
                                                          "totalTokens": n + 3}, "seq": seq}}).decode())
                    seq += 1
                    await ws.send_text(dumps({"jsonrpc": "2.0", "method": "SessionStatusNotification", "params": {
                        "sessionId": sid, "status": "idle", "turnId": None, "seq": seq}}).decode())
                else:
                    await ws.send_text(dumps({"jsonrpc": "2.0", "id": msg.get("id"), "error": {
                        "code": -32601, "message": "Method not found"}}).decode())
        except WebSocketDisconnect:
            pass
        finally:
            state["connections"] -= 1
            if have_session:
                state["sessions"] -= 1

    return app


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"bare endpoint listening on ws://127.0.0.1:{port}/ws", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bare_server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        create_bare_app(), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        ws="websockets-sansio", ws_max_size=1_048_576, ws_per_message_deflate=False,
        log_level="warning", lifespan="on",
    )
    _Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

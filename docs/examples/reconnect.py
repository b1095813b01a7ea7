"""A client that survives a dropped connection without losing or repeating output.

Run against a server started with `session.resume_grace_s` > 0:
    python docs/examples/reconnect.py ws://127.0.0.1:8765/ws
(tests/test_docs_examples.py runs it against a real server.)
"""

import asyncio
import itertools
import json
import sys

import websockets

ids = itertools.count(1)


async def call(ws, method, params, inbox):
    """Send a request; notifications that arrive first go to `inbox`."""
    rid = next(ids)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    while True:
        msg = json.loads(await ws.recv())
        if msg.get("id") == rid:
            if "error" in msg:
                raise RuntimeError(msg["error"])
            return msg["result"]
        inbox.append(msg)


async def main(url):
    text, last_seq, inbox = [], 0, []

    def apply(msg):
        nonlocal last_seq
        p = msg["params"]
        if p["seq"] <= last_seq:  # a duplicate: already applied
            return None
        assert p["seq"] == last_seq + 1, "gap: attach again with afterSeq=last_seq"
        last_seq = p["seq"]
        text.append(p.get("chunk", ""))
        return p

    ws = await websockets.connect(url)
    session = await call(ws, "startSession", {}, inbox)
    sid, token = session["sessionId"], session["resumeToken"]
    await call(ws, "sendUserMessage", {"sessionId": sid, "content": "/sim chunks 40\nhello again",
                                       "idempotencyKey": "first-message"}, inbox)
    while len(text) < 10:  # read a little of the reply ...
        apply(inbox.pop(0) if inbox else json.loads(await ws.recv()))
    ws.transport.abort()  # ... then the network drops

    ws = await websockets.connect(url)  # reconnect and pick up exactly where we were
    await call(ws, "attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last_seq}, inbox)
    # A retry of the same send is harmless: same key, same turn, no second turn.
    await call(ws, "sendUserMessage", {"sessionId": sid, "content": "/sim chunks 40\nhello again",
                                       "idempotencyKey": "first-message"}, inbox)
    while True:
        p = apply(inbox.pop(0) if inbox else json.loads(await ws.recv()))
        if p and p.get("status") == "idle":
            break
    await call(ws, "stopSession", {"sessionId": sid}, inbox)
    await ws.close()
    print("".join(text))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/ws"))

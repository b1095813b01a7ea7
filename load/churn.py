"""``python -m load.churn``: connect/disconnect cycles at random points (issue 7).

Each cycle opens a WebSocket to a fresh ``python -m server`` (simulator, 2 ms
between chunks, resume grace 1 s) and drops it at a random point: right after the
handshake, after initialize, after startSession, mid-stream (closed cleanly or
aborted without a close frame), while tool results are awaited, while paused, or
after re-attaching a detached session from another connection. After a warm-up,
it records the server's RSS, runs the cycles, waits for the grace period and for
/healthz to report no session, connection or running turn, and compares RSS.

Exit 0 when no session is left and the final RSS is within ``--rss-tolerance``
(default 10 %) of the RSS after warm-up. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from load.serverproc import ServerProcess, write_config

POINTS = ("handshake", "initialize", "started", "mid_stream", "mid_stream_abort", "tool_wait", "paused", "attached")


class _Conn:
    def __init__(self, ws: Any) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.n += 1
        rid = self.n
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == rid:
                return msg

    async def until(self, pred: Any) -> dict[str, Any]:
        while True:
            msg = json.loads(await self.ws.recv())
            if "method" in msg and pred(msg["params"]):
                return msg["params"]


async def cycle(url: str, point: str) -> None:
    tools = [{"type": "function", "function": {"name": "t"}}]
    ws = await websockets.connect(url, max_size=None)
    c = _Conn(ws)
    try:
        if point == "handshake":
            return
        await c.call("initialize")
        if point == "initialize":
            return
        start = (await c.call("startSession", {"tools": tools}))["result"]
        sid = start["sessionId"]
        if point == "started":
            return
        if point in ("mid_stream", "mid_stream_abort", "attached", "paused"):
            await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim chunks 400\nchurn"})
            await c.until(lambda p: bool(p.get("chunk")))
            if point == "paused":
                await c.call("pauseSession", {"sessionId": sid})
            if point == "mid_stream_abort":
                ws.transport.abort()
            if point == "attached":
                ws.transport.abort()
                ws2 = await websockets.connect(url, max_size=None)
                try:
                    r = await _Conn(ws2).call("attachSession", {"sessionId": sid, "resumeToken": start["resumeToken"], "afterSeq": 0})
                    assert "result" in r, r
                finally:
                    ws2.transport.abort()
            return
        if point == "tool_wait":
            await c.call("sendUserMessage", {"sessionId": sid, "content": "/sim tool t {}"})
            await c.until(lambda p: p.get("status") == "awaiting_tool_results")
    finally:
        if random.random() < 0.5:
            ws.transport.abort()
        else:
            await ws.close()


async def run(url: str, cycles: int, concurrency: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    plan = [rng.choice(POINTS) for _ in range(cycles)]
    counts = {p: plan.count(p) for p in POINTS}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in plan:
        queue.put_nowait(p)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            point = queue.get_nowait()
            try:
                async with asyncio.timeout(20):
                    await cycle(url, point)
            except Exception as exc:  # counted and reported, never hidden
                failures += 1
                if failures <= 5:
                    print(f"cycle {point} failed: {exc!r}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    counts["failures"] = failures
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.churn", description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=2000,
                    help="cycles before the RSS reference: takes the allocator to its high-water mark")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ailoop-churn-"))
    cfg = write_config(tmp / "config.yaml", first_chunk_ms=1, chunk_interval_ms=2,
                       extra={"session": {"resume_grace_s": 1.0}, "limits": {"requests_per_s": 0}})
    server = ServerProcess.ours(cfg, tmp / "server.log").start()
    try:
        t0 = time.monotonic()
        asyncio.run(run(server.ws_url, args.warmup, args.concurrency, args.seed + 1))
        server.wait_drained(30)
        rss_start = server.rss()
        counts = asyncio.run(run(server.ws_url, args.cycles, args.concurrency, args.seed))
        health = server.wait_drained(30)
        time.sleep(0.5)
        rss_end = server.rss()
        elapsed = time.monotonic() - t0
        problems = server.log_problems()
    finally:
        server.stop()
    growth = rss_end / rss_start - 1
    ok = health["sessions"] == 0 and health.get("runningTurns", 0) == 0 and abs(growth) <= args.rss_tolerance \
        and counts["failures"] == 0
    print(json.dumps({"cycles": args.cycles, "points": counts, "healthz_after": health,
                      "rss_start_mb": round(rss_start / 2**20, 1), "rss_end_mb": round(rss_end / 2**20, 1),
                      "rss_growth_pct": round(100 * growth, 2), "elapsed_s": round(elapsed, 1),
                      "server_log_problems": problems[:5], "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

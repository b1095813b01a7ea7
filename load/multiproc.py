"""Several server processes sharing sessions through one Redis, with churn that
re-attaches every session on another process (issue 9).

    python -m load.multiproc [--duration 20] [--clients 16] [--processes 2] [--chunks 200]

Starts a private redis-server (127.0.0.1, free port, no persistence) and N server
processes (``store.backend: redis``), all on loopback. Each client, in a loop until the
duration is over: connects to a random process, starts a session and a long reply,
drops the socket abruptly at a random point (sometimes after the reply ended), connects
to *another* process, ``attachSession`` from the last seq it saw, and reads the rest
(replayed, then relayed live while the turn still runs on the first process). It checks
seq continuity (no gap, no duplicate) and that the text equals an uninterrupted run,
then runs one more turn on the new process and stops the session.

Prints one JSON object: cycles, attach latency percentiles, time to the first live
notification, replayed and relayed counts, errors by code, per-process figures, and what
is left in Redis once everything stopped. Exit status 0 when no check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_sync
import websockets

from load.serverproc import ServerProcess, write_config
from server.store.redisproc import RedisProcess, ensure_redis_server

args_debug = False
CONTENT = "/sim chunks {n}\nthe quick brown fox jumps over the lazy dog"


class Stats:
    def __init__(self) -> None:
        self.cycles = 0
        self.reattach_mid_turn = 0
        self.reattach_idle = 0
        self.replayed = 0
        self.live_after_attach = 0
        self.attach_ms: list[float] = []
        self.first_live_ms: list[float] = []
        self.gaps = 0
        self.duplicates = 0
        self.text_mismatches = 0
        self.next_turn_failures = 0
        self.errors: dict[str, int] = {}
        self.notifications = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _rpc(ws: Any, rid: int, method: str, params: dict[str, Any], notes: list[dict[str, Any]],
               timeout: float = 10.0) -> dict[str, Any]:
    """Send a request; collect notifications until its response arrives."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if "method" in msg:
                notes.append(msg["params"])
            elif msg.get("id") == rid:
                return msg


async def _read_until(ws: Any, notes: list[dict[str, Any]], stop: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not stop(notes):
            msg = json.loads(await ws.recv())
            if "method" in msg:
                notes.append(msg["params"])


def _idle(notes: list[dict[str, Any]]) -> bool:
    return bool(notes) and notes[-1].get("status") == "idle" and "isFinal" not in notes[-1]


async def reference_text(url: str, content: str) -> str:
    async with websockets.connect(url, max_size=None) as ws:
        notes: list[dict[str, Any]] = []
        sid = (await _rpc(ws, 1, "startSession", {}, notes))["result"]["sessionId"]
        await _rpc(ws, 2, "sendUserMessage", {"sessionId": sid, "content": content}, notes)
        await _read_until(ws, notes, _idle)
        await _rpc(ws, 3, "stopSession", {"sessionId": sid}, notes)
        return "".join(p.get("chunk", "") for p in notes)


async def client(urls: list[str], content: str, expected: str, chunks: int, deadline: float,
                 stats: Stats, rng: random.Random) -> None:
    while time.monotonic() < deadline:
        first = rng.randrange(len(urls))
        second = (first + rng.randrange(1, len(urls))) % len(urls)
        notes_a: list[dict[str, Any]] = []
        phase = "connect"
        try:
            ws = await websockets.connect(urls[first], max_size=None)
            try:
                r = await _rpc(ws, 1, "startSession", {}, notes_a)
                if "error" in r:
                    stats.error(f"startSession {r['error']['code']}")
                    await asyncio.sleep(0.2)
                    continue
                sid, token = r["result"]["sessionId"], r["result"]["resumeToken"]
                await _rpc(ws, 2, "sendUserMessage", {"sessionId": sid, "content": content}, notes_a)
                drop_after = rng.randrange(1, chunks + 20)  # sometimes after the reply ended
                phase = "first"
                await _read_until(ws, notes_a, lambda n: _idle(n) or sum(1 for p in n if p.get("chunk")) >= drop_after)
            finally:
                ws.transport.abort()  # an abrupt drop: no close frame
            last = notes_a[-1]["seq"]
            notes_b: list[dict[str, Any]] = []
            phase = "attach"
            async with websockets.connect(urls[second], max_size=None) as ws2:
                t0 = time.perf_counter()
                r = await _rpc(ws2, 10, "attachSession", {"sessionId": sid, "resumeToken": token, "afterSeq": last},
                               notes_b)
                if "error" in r:
                    stats.error(f"attachSession {r['error']['code']}")
                    continue
                stats.attach_ms.append((time.perf_counter() - t0) * 1000)
                res = r["result"]
                replayed = res["replayed"]
                stats.replayed += replayed
                if res["status"] in ("streaming", "awaiting_tool_results"):
                    stats.reattach_mid_turn += 1
                else:
                    stats.reattach_idle += 1
                phase = f"relay:{res['status']}"
                if not _idle(notes_a):
                    await _read_until(ws2, notes_b, lambda n: len(n) > replayed or _idle(n))
                    if len(notes_b) > replayed:
                        stats.first_live_ms.append((time.perf_counter() - t0) * 1000)
                    await _read_until(ws2, notes_b, _idle)
                stats.live_after_attach += max(0, len(notes_b) - replayed)
                seqs = [p["seq"] for p in notes_a + notes_b]
                if len(set(seqs)) != len(seqs):
                    stats.duplicates += 1
                if sorted(set(seqs)) != list(range(1, max(seqs) + 1)):
                    stats.gaps += 1
                if "".join(p.get("chunk", "") for p in notes_a + notes_b) != expected:
                    stats.text_mismatches += 1
                phase = "next-turn"
                more: list[dict[str, Any]] = []
                r = await _rpc(ws2, 11, "sendUserMessage", {"sessionId": sid, "content": "again"}, more)
                if "error" in r:
                    stats.next_turn_failures += 1
                    stats.error(f"sendUserMessage {r['error']['code']}")
                else:
                    await _read_until(ws2, more, _idle)
                    if "".join(p.get("chunk", "") for p in more) != "You said: again":
                        stats.next_turn_failures += 1
                await _rpc(ws2, 12, "stopSession", {"sessionId": sid}, more)
                stats.notifications += len(notes_a) + len(notes_b) + len(more)
            stats.cycles += 1
        except (OSError, TimeoutError, websockets.WebSocketException, KeyError, IndexError) as exc:
            stats.error(f"{type(exc).__name__} in {phase}")
            if args_debug:
                print(f"{type(exc).__name__} in {phase}: sid={locals().get('sid')} a={notes_a[-3:]} "
                      f"b={locals().get('notes_b', [])[-3:]}", file=sys.stderr)
            await asyncio.sleep(0.1)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    binary, why = ensure_redis_server()
    if binary is None:
        return {"error": f"redis-server unavailable: {why}"}
    work = Path(tempfile.mkdtemp(prefix="ailoop-multiproc-"))
    rp = RedisProcess(binary=binary).start()
    servers: list[ServerProcess] = []
    try:
        store = {"backend": "redis", "redis_url": rp.url, "heartbeat_s": 0.5, "owner_timeout_s": 3.0}
        cfg = write_config(work / "config.yaml", first_chunk_ms=args.chunk_ms, chunk_interval_ms=args.chunk_ms,
                           extra={"store": store, "session": {"resume_grace_s": args.grace},
                                  "limits": {"requests_per_s": 0}})
        for i in range(args.processes):
            servers.append(ServerProcess.ours(cfg, work / f"server-{i}.log").start())
        urls = [s.ws_url for s in servers]
        content = CONTENT.format(n=args.chunks)
        expected = await reference_text(urls[0], content)
        stats = Stats()
        rng = random.Random(args.seed)
        t0 = time.monotonic()
        deadline = t0 + args.duration
        async with asyncio.timeout(args.duration + 60):
            await asyncio.gather(*(client(urls, content, expected, args.chunks, deadline, stats,
                                          random.Random(rng.random())) for _ in range(args.clients)))
        elapsed = time.monotonic() - t0
        drained = [s.wait_drained(15) for s in servers]
        r = redis_sync.Redis.from_url(rp.url, decode_responses=True)
        left = [k for k in r.scan_iter("ailoop:s:*") if not k.endswith((":log", ":ev"))]
        info = r.info("memory")
        problems = sum(len(s.log_problems()) for s in servers)
        ok = (stats.gaps == 0 and stats.duplicates == 0 and stats.text_mismatches == 0
              and stats.next_turn_failures == 0 and not stats.errors and problems == 0
              and all(d.get("sessions") == 0 for d in drained) and r.zcard("ailoop:sessions") == 0 and not left)
        return {
            "ok": ok,
            "processes": args.processes,
            "clients": args.clients,
            "duration_s": round(elapsed, 2),
            "chunks_per_reply": args.chunks,
            "chunk_ms": args.chunk_ms,
            "cycles": stats.cycles,
            "cycles_per_s": round(stats.cycles / elapsed, 2),
            "reattached_mid_turn": stats.reattach_mid_turn,
            "reattached_idle": stats.reattach_idle,
            "replayed_notifications": stats.replayed,
            "live_after_attach": stats.live_after_attach,
            "notifications": stats.notifications,
            "notifications_per_s": round(stats.notifications / elapsed, 1),
            "attach_ms": {"p50": _pct(stats.attach_ms, 0.5), "p95": _pct(stats.attach_ms, 0.95),
                          "p99": _pct(stats.attach_ms, 0.99), "max": _pct(stats.attach_ms, 1.0),
                          "mean": round(statistics.fmean(stats.attach_ms), 2) if stats.attach_ms else None},
            "first_live_ms": {"p50": _pct(stats.first_live_ms, 0.5), "p99": _pct(stats.first_live_ms, 0.99)},
            "seq_gaps": stats.gaps,
            "seq_duplicates": stats.duplicates,
            "text_mismatches": stats.text_mismatches,
            "next_turn_failures": stats.next_turn_failures,
            "errors": stats.errors,
            "server_log_problems": problems,
            "after_drain": [{"sessions": d.get("sessions"), "connections": d.get("connections")} for d in drained],
            "server_rss_mb": [round(s.rss() / 2**20, 1) for s in servers],
            "redis_session_keys_left": len(left),
            "redis_slots_left": r.zcard("ailoop:sessions"),
            "redis_used_memory_mb": round(info["used_memory"] / 2**20, 2),
        }
    finally:
        for s in servers:
            s.stop()
        rp.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.multiproc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of churn (default 20)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--processes", type=int, default=2, help="server processes (default 2)")
    ap.add_argument("--chunks", type=int, default=200, help="chunks per reply (default 200)")
    ap.add_argument("--chunk-ms", type=float, default=5.0, help="simulator delay between chunks (default 5)")
    ap.add_argument("--grace", type=float, default=30.0, help="session.resume_grace_s (default 30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--debug", action="store_true", help="print failed cycles to stderr")
    args = ap.parse_args(argv)
    global args_debug
    args_debug = args.debug
    if args.processes < 2:
        ap.error("--processes must be at least 2")
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

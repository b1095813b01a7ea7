"""Code samples in the docs are run against a real server."""

from __future__ import annotations

import asyncio
import sys

from tests.support import ROOT, spawn_server

CONFIG = "simulator: {chunk_interval_ms: 2}\nsession: {resume_grace_s: 10}\n"


async def test_reconnect_example(tmp_path):
    with spawn_server(CONFIG, tmp_path) as (proc, url):
        out = await asyncio.to_thread(
            __import__("subprocess").run, [sys.executable, str(ROOT / "docs" / "examples" / "reconnect.py"), url],
            capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    reply = out.stdout.strip()
    assert reply.startswith("You said: hello again")


def test_guide_embeds_the_example_verbatim():
    guide = (ROOT / "docs" / "guide.md").read_text()
    example = (ROOT / "docs" / "examples" / "reconnect.py").read_text()
    body = example.split('"""', 2)[2].strip()
    assert body in guide

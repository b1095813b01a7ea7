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


async def test_readme_transcript_is_what_the_server_sends(tmp_path):
    """The README's transcript, replayed against the shipped config.yaml's simulator."""
    import re
    import subprocess

    config = (ROOT / "config.yaml").read_text().replace("port: 8765", "port: 0")
    with spawn_server(config, tmp_path) as (proc, url):
        out = await asyncio.to_thread(subprocess.run, [sys.executable, str(ROOT / "docs" / "examples" / "transcript.py"), url],
                                      capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```\n→ ", 1)[1].split("```", 1)[0]
    block = "→ " + block

    def norm(text: str) -> list[str]:
        text = re.sub(r'"s_[A-Za-z0-9_-]{16}"', '"SESSION"', text)
        text = re.sub(r'"resumeToken":"[^"]+"', '"resumeToken":"TOKEN"', text)
        return [line for line in text.strip().splitlines()]

    assert norm(out.stdout) == norm(block)

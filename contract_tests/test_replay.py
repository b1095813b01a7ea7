"""Replay recorded transcripts (contract_tests/transcripts/*.jsonl) as regression tests.

A transcript is what a failing test prints and saves (test-artifacts/contract/*.jsonl):
the frames the client sent, its connections, closes and waits, and what came back.
Replaying sends the same frames in the same order over the same connections, waiting
where the original waited (``settle``), with the server-chosen session and tool call
ids of the new run substituted; the oracle then checks the new run from scratch. The
recorded answers are not compared byte for byte: the spec's promises are.

To keep a failure as a regression test, copy its transcript here and edit the header
line: ``"requirements": [...]`` (the ids it checks, required), optionally ``"xfail":
"why"`` while the bug is open, and ``"needs": ["simulator"]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contract_tests.harness import Harness, Target, run_scenario
from contract_tests.protocol import REQUIREMENTS
from contract_tests.transcript import read_transcript

HERE = Path(__file__).resolve().parent
TRANSCRIPTS = sorted((HERE / "transcripts").glob("*.jsonl"))


def _params() -> list[object]:
    out: list[object] = []
    for path in TRANSCRIPTS:
        header, _ = read_transcript(path)
        reqs = [r for r in header.get("requirements", []) if r in REQUIREMENTS]
        marks = [pytest.mark.requirement(*(reqs or ["RPC-1"]))]
        if header.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=str(header["xfail"])))
            marks.append(pytest.mark.server_log_allows(r"."))
        out.append(pytest.param(path, marks=marks, id=path.stem))
    return out


@pytest.mark.parametrize("path", _params())
def test_replay_transcript(target: Target, path: Path) -> None:
    """The recorded client frames, replayed against the server, keep every promise."""
    header, entries = read_transcript(path)
    if "simulator" in header.get("needs", []) and not target.simulator:
        pytest.skip("the transcript scripts the simulator")

    async def body(h: Harness) -> None:
        await h.replay(entries)

    run_scenario(target, f"replay_{path.stem}", body)

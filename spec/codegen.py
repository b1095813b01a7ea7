"""Regenerate (or check) everything derived from ``spec/protocol.schema.json``.

Run ``python -m spec.codegen`` after editing the schema; it rewrites

* ``spec/models.py`` -- pydantic v2 models, by the pinned datamodel-code-generator;
* ``docs/protocol.md`` -- the protocol reference for front-end developers.

``python -m spec.codegen --check`` regenerates into memory, prints a unified diff
against the committed files and exits 1 when anything drifted (CI and the test
suite run it).

Generation is byte-stable: no timestamp, formatters chosen explicitly, the
schema's sha256 in the header.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from jsonschema import Draft202012Validator

from spec.docgen import render_protocol_doc

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "spec" / "protocol.schema.json"
MODELS = ROOT / "spec" / "models.py"
DOC = ROOT / "docs" / "protocol.md"

CODEGEN_ARGS = [
    "--input-file-type", "jsonschema",
    "--output-model-type", "pydantic_v2.BaseModel",
    "--use-title-as-name",
    "--use-annotated",
    "--field-constraints",
    "--collapse-root-models",
    "--use-schema-description",
    "--use-field-description",
    "--use-double-quotes",
    "--target-python-version", "3.11",
    "--disable-timestamp",
    "--formatters", "black", "isort",
]


def _render_models(schema_bytes: bytes) -> str:
    digest = hashlib.sha256(schema_bytes).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "protocol.schema.json"
        src.write_bytes(schema_bytes)
        out = Path(tmp) / "models.py"
        subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "datamodel_code_generator",
             "--input", str(src), "--output", str(out), *CODEGEN_ARGS],
            check=True,
        )
        body = out.read_text(encoding="utf-8")
    # Drop the generator's own two-line banner; ours replaces it.
    lines = body.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    header = (
        "# GENERATED from spec/protocol.schema.json "
        f"(sha256 {digest}) -- DO NOT EDIT.\n"
        "# Regenerate with `python -m spec.codegen` (or `make regen`).\n"
    )
    return header + "\n" + "\n".join(lines).strip("\n") + "\n"


def render_all() -> dict[Path, str]:
    """Return the generated files' expected contents, keyed by path."""
    schema_bytes = SCHEMA.read_bytes()
    schema = json.loads(schema_bytes)
    Draft202012Validator.check_schema(schema)
    return {MODELS: _render_models(schema_bytes), DOC: render_protocol_doc(schema)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spec.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail with a diff instead of writing")
    args = parser.parse_args(argv)
    drifted = False
    for path, expected in render_all().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == expected:
            continue
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if args.check:
            drifted = True
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), expected.splitlines(keepends=True),
                f"{rel} (committed)", f"{rel} (generated)"))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check:
        print("generated files drifted from spec/protocol.schema.json; run `make regen`" if drifted
              else "generated files are up to date")
    return 1 if drifted else 0


if __name__ == "__main__":
    raise SystemExit(main())

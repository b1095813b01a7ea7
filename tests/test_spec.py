"""The spec is the single source of truth: generated files match it, examples
validate (or fail) against it with jsonschema, and the server's tables agree with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator

from server.protocol import errors
from server.session.handlers import HANDLERS
from spec import models
from tests.support import ROOT, SCHEMA, validator

EXAMPLES = ROOT / "spec" / "examples"


def test_schema_is_valid_2020_12():
    Draft202012Validator.check_schema(SCHEMA)


def test_generated_models_and_docs_do_not_drift():
    """`python -m spec.codegen --check` regenerates both and diffs them."""
    out = subprocess.run([sys.executable, "-m", "spec.codegen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up to date" in out.stdout


def test_drift_check_fails_on_a_changed_model(tmp_path, monkeypatch):
    from spec import codegen

    fake = tmp_path / "models.py"
    fake.write_text(codegen.MODELS.read_text() + "\n# hand edit\n")
    monkeypatch.setattr(codegen, "MODELS", fake)
    assert codegen.main(["--check"]) == 1


def test_generated_models_header():
    head = (ROOT / "spec" / "models.py").read_text().splitlines()[0]
    assert head.startswith("# GENERATED from spec/protocol.schema.json (sha256 ") and "DO NOT EDIT" in head


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("valid/*.json")), ids=lambda p: p.stem)
def test_valid_examples(path):
    ex = json.loads(path.read_text())
    errs = list(validator(ex["type"]).iter_errors(ex["message"]))
    assert not errs, [e.message for e in errs]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("invalid/*.json")), ids=lambda p: p.stem)
def test_invalid_examples(path):
    ex = json.loads(path.read_text())
    assert list(validator(ex["type"]).iter_errors(ex["message"])), f"{path.name} should be invalid: {ex['why']}"


def test_error_codes_match_the_spec():
    spec_codes = {e["name"]: (e["code"], e["retryable"]) for e in SCHEMA["x-error-codes"]}
    ours = {name: getattr(errors, name) for name in spec_codes}
    assert {n: c for n, (c, _) in spec_codes.items()} == ours
    classes = {cls.code: cls for cls in errors.RpcError.__subclasses__()}
    for name, (code, retryable) in spec_codes.items():
        if code in classes:
            assert classes[code].retryable == retryable, name


def test_every_request_method_has_a_handler_and_every_handler_a_method():
    spec_requests = {n for n, m in SCHEMA["x-methods"].items() if m["kind"] == "request"}
    assert spec_requests == set(HANDLERS)
    for name, (params_model, _) in HANDLERS.items():
        assert params_model is getattr(models, SCHEMA["x-methods"][name]["params"])


def test_every_method_and_notification_is_marked_with_direction():
    for name, m in SCHEMA["x-methods"].items():
        assert m["direction"] in ("client_to_server", "server_to_client"), name
        assert m["message"] in SCHEMA["$defs"], name
        assert SCHEMA["$defs"][m["message"]]["properties"]["method"]["const"] == name


def test_state_machine_is_closed():
    t = SCHEMA["x-state-machine"]["transitions"]
    statuses = set(SCHEMA["$defs"]["SessionStatus"]["enum"])
    assert set(t) == statuses
    assert all(set(v) <= statuses for v in t.values())
    assert t["ended"] == []


def test_requirement_ids_are_unique():
    ids = [r["id"] for r in SCHEMA["x-requirements"]]
    assert len(ids) == len(set(ids))

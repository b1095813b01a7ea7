"""config.yaml loading: keys, environment overrides, errors that name the bad key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import ConfigError, load_settings
from tests.support import ROOT


def test_shipped_config_is_valid_and_complete():
    s = load_settings(ROOT / "config.yaml")
    assert s.server.host == "127.0.0.1" and s.ai.backend == "simulator"
    assert s.simulator.first_chunk_ms == 50 and s.openrouter.base_url.startswith("https://")


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 1234\n  host: 127.0.0.2\nsimulator:\n  seed: 3\n")
    monkeypatch.setenv("AILOOP_SERVER__PORT", "4321")
    monkeypatch.setenv("AILOOP_SIMULATOR__SEED", "9")
    s = load_settings(cfg)
    assert (s.server.port, s.server.host, s.simulator.seed) == (4321, "127.0.0.2", 9)


@pytest.mark.parametrize("text, key", [
    ("server:\n  prot: 1\n", "server.prot"),
    ("server:\n  port: many\n", "server.port"),
    ("ai:\n  backend: gpt\n", "ai.backend"),
    ("simulator:\n  chunk_interval_ms: -1\n", "simulator.chunk_interval_ms"),
    ("nonsense: {}\n", "nonsense"),
    ("openrouter:\n  api_key: sk-123\n", "openrouter.api_key"),
])
def test_invalid_config_names_the_key(tmp_path, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert key in str(info.value) and str(cfg) in str(info.value)
    assert "sk-123" not in str(info.value)


def test_cli_refuses_bad_config_with_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: -5\n")
    out = subprocess.run([sys.executable, "-m", "server", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "server.port" in out.stderr


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml")


def test_configuration_doc_is_generated_from_the_settings():
    """docs/configuration.md lists every key with its default and environment variable."""
    from server.config import Settings, render_config_doc

    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == render_config_doc(), "run `make regen`"
    for section, field in Settings.model_fields.items():
        for key in field.annotation.model_fields:
            assert f"`{section}.{key}`" in doc and f"AILOOP_{section.upper()}__{key.upper()}" in doc


def test_shipped_config_yaml_mentions_every_key():
    import yaml

    from server.config import Settings

    text = (ROOT / "config.yaml").read_text()
    data = yaml.safe_load(text)
    for section, field in Settings.model_fields.items():
        assert section in data, section
        for key in field.annotation.model_fields:
            assert key in text, f"{section}.{key} missing from config.yaml"

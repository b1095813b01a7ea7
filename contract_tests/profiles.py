"""Hypothesis profiles of the contract suite.

* ``quick`` (default): what ``pytest`` / ``make test`` runs; the whole suite stays
  well under two minutes on a 2-core machine.
* ``deep``: about ten times the examples and longer stateful runs, for a nightly job
  or before a release: ``HYPOTHESIS_PROFILE=deep pytest contract_tests`` (or
  ``--contract-profile deep``, or hypothesis' own ``--hypothesis-profile deep``).

Tests ask for ``contract_settings(examples=N, steps=M)``: N and M are the quick values,
scaled by the active profile. The profile is chosen in ``conftest.pytest_configure``,
before test modules are imported, and only applies to this suite (no global
``settings.load_profile``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings

__all__ = ["ACTIVE", "PROFILES", "contract_settings"]

PROFILES: dict[str, dict[str, float]] = {
    "quick": {"examples": 1.0, "steps": 1.0},
    "deep": {"examples": 10.0, "steps": 2.5},
}
ACTIVE = "quick"

_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "report_multiple_bugs": False,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
}

# quick runs in the README's test command: derandomized, so every run draws the same
# examples and gives the same verdict (what exploration finds is kept as an explicit
# case in test_regressions.py); deep explores with fresh randomness.
settings.register_profile("quick", max_examples=30, stateful_step_count=30, derandomize=True, **_COMMON)
settings.register_profile("deep", max_examples=300, stateful_step_count=75, **_COMMON)


def contract_settings(examples: int, steps: int | None = None, **overrides: Any) -> settings:
    scale = PROFILES[ACTIVE]
    kw: dict[str, Any] = {**_COMMON, "max_examples": max(1, int(examples * scale["examples"])),
                          "derandomize": ACTIVE == "quick"}
    if steps is not None:
        kw["stateful_step_count"] = max(1, int(steps * scale["steps"]))
    kw.update(overrides)
    return settings(**kw)

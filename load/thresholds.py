"""Per-metric pass/fail checks: locust rows (percentiles per row) and server figures.

The thresholds file (``load/thresholds.yaml``) has one section per scenario::

    seed_target:
      rows:                      # locust rows, by name; "*" applies to every row
        "first chunk": {p95: 200, min_count: 50}
        "*": {max_failures: 0}
      server:                    # figures measured by the runner
        leftover_sessions: {max: 0}
        rss_kb_per_session: {max: 256}

Row keys: ``p50 p75 p90 p95 p99 max`` (milliseconds, at most), ``min_count``,
``max_failures``, ``max_fail_ratio``. Server keys take ``max`` and/or ``min``.

This module does not import locust (importing locust monkey-patches the process
with gevent); it reads rows in locust's serialized form (``--json-file`` output or
``RequestStats.serialize_stats()``), whose ``response_times`` is a histogram
{rounded ms: count}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Check", "check_rows", "check_server", "format_checks", "load_thresholds", "percentile", "row_figures"]

_PERCENTILES = {"p50": 0.50, "p75": 0.75, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p999": 0.999}


@dataclass
class Check:
    scope: str
    """``row:<name>`` or ``server``."""
    metric: str
    value: float | None
    limit: float
    kind: str
    """``max`` (value must be <= limit) or ``min`` (value must be >= limit)."""
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_thresholds(path: str | Path, scenario: str) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if scenario not in data:
        raise KeyError(f"no thresholds for scenario {scenario!r} in {path}")
    section = data[scenario] or {}
    return {"rows": section.get("rows") or {}, "server": section.get("server") or {}}


def percentile(response_times: dict[Any, int], q: float) -> float | None:
    """Locust's percentile over its histogram (the smallest bucket covering ``q``)."""
    hist = {float(k): int(v) for k, v in response_times.items()}
    n = sum(hist.values())
    if not n:
        return None
    target = int(n * q)
    seen = 0
    for rt in sorted(hist, reverse=True):
        seen += hist[rt]
        if n - seen <= target:
            return rt
    return 0.0


def row_figures(entry: dict[str, Any]) -> dict[str, Any]:
    """Count, failures and percentiles of one serialized locust row."""
    rts = entry.get("response_times") or {}
    n = int(entry.get("num_requests", 0))
    f = int(entry.get("num_failures", 0))
    out: dict[str, Any] = {
        "name": entry.get("name"),
        "method": entry.get("method"),
        "count": n,
        "failures": f,
        "fail_ratio": f / n if n else (1.0 if f else 0.0),
        "max": entry.get("max_response_time"),
        "avg": (entry.get("total_response_time", 0) / n) if n else None,
    }
    for key, q in _PERCENTILES.items():
        out[key] = percentile(rts, q)
    return out


def _cmp(scope: str, metric: str, value: float | None, limit: float, kind: str) -> Check:
    if value is None:
        ok = False
    elif kind == "max":
        ok = value <= limit
    else:
        ok = value >= limit
    return Check(scope, metric, value, limit, kind, ok)


def check_rows(entries: list[dict[str, Any]], rules: dict[str, dict[str, Any]]) -> list[Check]:
    """Check every row named in ``rules`` (a missing row fails its checks); ``"*"`` rules
    apply to every row that exists."""
    rows = {e.get("name"): row_figures(e) for e in entries if e.get("name") not in (None, "Aggregated")}
    checks: list[Check] = []
    for name, rule in rules.items():
        targets = list(rows) if name == "*" else [name]
        for target in targets:
            fig = rows.get(target)
            scope = f"row:{target}"
            for key, limit in (rule or {}).items():
                if fig is None:
                    checks.append(Check(scope, key, None, float(limit), "max", False))
                elif key in _PERCENTILES or key == "max":
                    checks.append(_cmp(scope, f"{key} ms", fig[key], float(limit), "max"))
                elif key == "min_count":
                    checks.append(_cmp(scope, "count", fig["count"], float(limit), "min"))
                elif key == "max_failures":
                    checks.append(_cmp(scope, "failures", fig["failures"], float(limit), "max"))
                elif key == "max_fail_ratio":
                    checks.append(_cmp(scope, "fail ratio", fig["fail_ratio"], float(limit), "max"))
                else:
                    raise ValueError(f"unknown row threshold {key!r} for {name!r}")
    return checks


def check_server(figures: dict[str, Any], rules: dict[str, dict[str, Any]]) -> list[Check]:
    checks: list[Check] = []
    for metric, rule in rules.items():
        value = figures.get(metric)
        if not isinstance(rule, dict):
            rule = {"max": rule}
        for kind in ("max", "min"):
            if kind in rule:
                checks.append(_cmp("server", metric, value, float(rule[kind]), kind))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        v = "missing" if c.value is None else (f"{c.value:.4g}" if isinstance(c.value, float) else str(c.value))
        op = "<=" if c.kind == "max" else ">="
        lines.append(f"  {'PASS' if c.ok else 'FAIL'}  {c.scope:<32} {c.metric:<24} {v:>10} {op} {c.limit:g}")
    return "\n".join(lines)

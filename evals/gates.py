"""Promotion gates: block a candidate snapshot that is worse than the promoted one.

Pure functions over two eval results' ``metrics`` dicts (``evals.runner.summarize``) plus a
pydantic config, loadable from YAML or JSON::

    rules:
      - {metric: ndcg@10,        kind: drop_pp,  threshold: 1.0}   # block if B < A - 1.0 pp
      - {metric: recall@50,      kind: drop_pp,  threshold: 2.0}
      - {metric: latency_p95_ms, kind: rise_pct, threshold: 20.0, min_abs: 5.0}
      - {metric: error_rate,     kind: rise_pp,  threshold: 0.5}

``drop_pp``: a 0..1 metric falling by more than ``threshold`` percentage points; ``rise_pp``:
rising by more than that; ``rise_pct``: rising by more than ``threshold`` percent of the
baseline *and* by more than ``min_abs`` (same unit as the metric: latency jitter of a few ms on
a small smoke set is not a regression). With ``use_ci`` and a comparison (``evals.stats``), a
quality drop blocks only when the CI's upper bound is also below the threshold (significant).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class GateRule(BaseModel):
    metric: str
    kind: Literal["drop_pp", "rise_pp", "rise_pct"]
    threshold: float = Field(ge=0)
    min_abs: float = 0.0


def _default_rules() -> list[GateRule]:
    return [
        GateRule(metric="ndcg@10", kind="drop_pp", threshold=1.0),
        GateRule(metric="recall@50", kind="drop_pp", threshold=2.0),
        GateRule(metric="latency_p95_ms", kind="rise_pct", threshold=20.0, min_abs=5.0),
        GateRule(metric="error_rate", kind="rise_pp", threshold=0.5),
    ]


class GateConfig(BaseModel):
    rules: list[GateRule] = Field(default_factory=_default_rules)
    use_ci: bool = False  # block quality drops only when significant (needs a comparison)


class GateCheck(BaseModel):
    metric: str
    kind: str
    threshold: float
    baseline: float | None
    candidate: float | None
    delta: float | None  # pp for *_pp rules, percent for rise_pct
    passed: bool
    reason: str


class GateVerdict(BaseModel):
    passed: bool
    verdict: Literal["PASS", "BLOCK"]
    reasons: list[str]
    checks: list[GateCheck]


def load_gates(path: str | Path | None) -> GateConfig:
    if path is None:
        return GateConfig()
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    return GateConfig.model_validate(data)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def apply_gates(
    baseline: dict,
    candidate: dict,
    config: GateConfig | None = None,
    comparison: dict | None = None,
) -> GateVerdict:
    """Verdict of ``candidate`` (metrics dict) against ``baseline`` (metrics dict)."""
    config = config or GateConfig()
    checks: list[GateCheck] = []
    diffs = (comparison or {}).get("diffs", {})
    for r in config.rules:
        a, b = _num(baseline.get(r.metric)), _num(candidate.get(r.metric))
        if a is None or b is None:
            checks.append(
                GateCheck(
                    metric=r.metric,
                    kind=r.kind,
                    threshold=r.threshold,
                    baseline=a,
                    candidate=b,
                    delta=None,
                    passed=True,
                    reason=f"{r.metric}: not measured in both runs, skipped",
                )
            )
            continue
        if r.kind == "drop_pp":
            delta = (b - a) * 100.0
            bad = -delta > r.threshold and (a - b) > r.min_abs
            if bad and config.use_ci and r.metric in diffs:
                bad = diffs[r.metric]["hi"] < 0.0  # the 95% CI excludes "no drop"
            msg = f"{r.metric} {a:.4f} -> {b:.4f} ({delta:+.2f} pp; max drop {r.threshold} pp)"
        elif r.kind == "rise_pp":
            delta = (b - a) * 100.0
            bad = delta > r.threshold and (b - a) > r.min_abs
            msg = f"{r.metric} {a:.4f} -> {b:.4f} ({delta:+.2f} pp; max rise {r.threshold} pp)"
        else:
            delta = ((b - a) / a * 100.0) if a > 0 else (0.0 if b <= a else math.inf)
            bad = delta > r.threshold and (b - a) > r.min_abs
            msg = (
                f"{r.metric} {a:.2f} -> {b:.2f} ({delta:+.1f}%; max rise {r.threshold}%"
                + (f" and {r.min_abs}" if r.min_abs else "")
                + ")"
            )
        checks.append(
            GateCheck(
                metric=r.metric,
                kind=r.kind,
                threshold=r.threshold,
                baseline=a,
                candidate=b,
                delta=delta,
                passed=not bad,
                reason=msg,
            )
        )
    reasons = [c.reason for c in checks if not c.passed]
    ok = not reasons
    return GateVerdict(passed=ok, verdict="PASS" if ok else "BLOCK", reasons=reasons, checks=checks)

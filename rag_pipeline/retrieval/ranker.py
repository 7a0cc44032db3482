"""A versioned linear ranker: final score = weights . features - penalty weights . penalties.

The ranker file (JSON, ``RankerModel``) is what ``rag-pipeline eval train-ranker`` writes and
the snapshot policy names (``rag-pipeline ranker promote|rollback``): its version, the
features it weighs (``features.FEATURES`` / ``PENALTIES``), how each is scaled, the learned
weights, what it was trained on and its out-of-fold cross-validated figures. The snapshot
manifest carries the promoted ranker, so serving reads it from the snapshot it serves.

Features are standardised (``(x - mean) / scale``); penalties are only scaled (a unit with no
penalty gets none), and their weights are >= 0, so a penalty can only push a unit down. A
feature a candidate lacks (``features.MODEL_FEATURES``: the cross-encoder did not score it)
counts as the mean: it adds nothing. A ranker lists only the features it was trained on, so one
trained before ``ce_score`` existed (the packaged default) is served unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from rag_pipeline.retrieval.features import ALL_FEATURES, PENALTIES

RANKER_SCHEMA_VERSION = 1
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


class RankerModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = RANKER_SCHEMA_VERSION
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: datetime | None = None
    kind: str = "linear"  # pairwise logistic regression, applied as a linear score
    features: list[str]
    penalties: list[str] = Field(default_factory=list)
    mean: dict[str, float] = Field(default_factory=dict)
    scale: dict[str, float] = Field(default_factory=dict)
    weights: dict[str, float]
    penalty_weights: dict[str, float] = Field(default_factory=dict)
    # What it was trained on (gold set, snapshot, queries, depth) and how (folds, seed, l2).
    trained: dict[str, Any] = Field(default_factory=dict)
    # Out-of-fold figures: reranked versus fused order, with paired bootstrap CIs.
    cv: dict[str, Any] = Field(default_factory=dict)
    # How many fused candidates it reorders, chosen by cross-validation with the weights (a
    # linear model fitted on deep candidates learns their noise); None: the stage's default.
    depth: int | None = Field(None, ge=1, le=1000)
    # Chosen beside the ranker on the same training split (fusion weights per query type,
    # query classifier thresholds) with their cross-validated figures; None: the built-ins.
    fusion: dict[str, Any] | None = None
    # Names, centers, scales and signed weights as arrays (``score_many``), made once.
    _cached: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = PrivateAttr(None)

    @property
    def served_fusion(self) -> dict[str, Any]:
        """The learned fusion that serving applies: none unless cross-validation adopted it
        (it must beat the built-in weights out of fold)."""
        learned = self.fusion or {}
        return learned if learned.get("adopted", True) else {}

    @model_validator(mode="after")
    def _consistent(self) -> RankerModel:
        if self.schema_version != RANKER_SCHEMA_VERSION:
            raise ValueError(
                f"ranker schema {self.schema_version} is not supported ({RANKER_SCHEMA_VERSION})"
            )
        unknown = [f for f in (*self.features, *self.penalties) if f not in ALL_FEATURES]
        if unknown:
            raise ValueError(f"unknown ranker features {unknown}")
        bad = [p for p in self.penalties if p not in PENALTIES]
        if bad:
            raise ValueError(f"{bad} are not penalties ({list(PENALTIES)})")
        if set(self.weights) != set(self.features):
            raise ValueError("weights must name exactly the ranker's features")
        if set(self.penalty_weights) != set(self.penalties):
            raise ValueError("penalty_weights must name exactly the ranker's penalties")
        negative = [p for p, w in self.penalty_weights.items() if w < 0]
        if negative:
            raise ValueError(f"penalty weights must be >= 0: {negative}")
        if any(self.scale.get(f, 1.0) <= 0 for f in (*self.features, *self.penalties)):
            raise ValueError("feature scales must be > 0")
        return self

    # -- scoring ------------------------------------------------------------------------------
    def weighs(self, feature: str) -> bool:
        """Whether the ranker lists ``feature`` with a weight that moves a score."""
        return bool(self.weights.get(feature) or self.penalty_weights.get(feature))

    def contributions(self, features: Mapping[str, float]) -> dict[str, float]:
        """Each feature's share of the final score (penalties negative); they sum to it."""
        out: dict[str, float] = {}
        for f in self.features:
            center = self.mean.get(f, 0.0)
            z = (float(features.get(f, center)) - center) / self.scale.get(f, 1.0)
            out[f] = self.weights[f] * z
        for p in self.penalties:
            out[p] = -self.penalty_weights[p] * float(features.get(p, 0.0)) / self.scale.get(p, 1.0)
        return out

    def score(self, features: Mapping[str, float]) -> float:
        return sum(self.contributions(features).values())

    def score_many(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``score`` of many candidates at once (the stage scores a hundred per query)."""
        if not rows:
            return np.zeros(0)
        names, center, scale, weight = self._vectors()
        x = np.array(
            [[r.get(n, c) for n, c in zip(names, center.tolist(), strict=True)] for r in rows],
            dtype=np.float64,
        )
        return ((x - center) / scale) @ weight

    def _vectors(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        if self._cached is None:
            names = [*self.features, *self.penalties]
            center = [self.mean.get(f, 0.0) for f in self.features] + [0.0] * len(self.penalties)
            weight = [self.weights[f] for f in self.features] + [
                -self.penalty_weights[p] for p in self.penalties
            ]
            self._cached = (
                names,
                np.array(center),
                np.array([self.scale.get(n, 1.0) for n in names]),
                np.array(weight),
            )
        return self._cached

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: Path) -> RankerModel:
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a ranker file: {exc}") from exc

    def write(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)


def packaged_ranker_path() -> Path:
    """The default ranker shipped with the package (trained on the demo gold set)."""
    return Path(__file__).resolve().parents[1] / "config" / "ranker.json"


def packaged_ranker() -> RankerModel:
    return RankerModel.read(packaged_ranker_path())

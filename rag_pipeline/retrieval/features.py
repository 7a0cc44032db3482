"""Ranking features of one fused candidate: what the rerank stage weighs (``ranker.py``).

Each candidate is described by numbers that say *why* it might answer the query, all cheap to
compute from what the search already has (the axes' ranks and scores, the unit's text fields,
tags and evidence): no model runs here (``MODEL_FEATURES`` are added by the stage). Pure
Python, no I/O: serving and the evals' training both use it, so the features a ranker was
trained on are the ones it is served.

Query terms are the content words of the query, stemmed as ``explain`` stems them; a term is
found where a word of the text begins with its stem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.retrieval.explain import QueryMatcher, parse_evidence, stem

# Text fields of a snapshot unit (``snapshot.schema.FTS_FIELDS``, repeated: retrieval imports
# nothing of the snapshot package).
FIELDS: tuple[str, ...] = ("title", "body", "caption", "tags", "ocr", "metadata")
RANK_AXES: tuple[str, ...] = ("fts", "mv", "vv", "tags")

# Evidence read by a model that may be wrong (OCR, VLM captions and tags) below this confidence
# is weak: a match found only there counts less (``weak_evidence_only``).
WEAK_CONFIDENCE = 0.5

CE_FEATURE = "ce_score"  # the cross-encoder's score (``cross_encoder.py``)
FEATURES: tuple[str, ...] = (
    "fused_score",  # the weighted-RRF score the candidate was fused with
    "fused_rr",  # 1 / its fused rank
    *(f"{a}_rr" for a in RANK_AXES),  # 1 / rank on each axis (0: the axis did not find it)
    "fts_score",  # BM25 score over the candidates' best (0..1)
    "mv_score",  # cosine similarity of the query and the unit (MV)
    "vv_score",  # cosine similarity (VV, text tower)
    *(f"cov_{f}" for f in FIELDS),  # share of the query terms found in each field
    "coverage",  # share of the query terms found anywhere
    "all_terms",  # 1 when every query term is found
    "proximity",  # share of consecutive query-term pairs found near each other (~3 words)
    "tag_overlap",  # share of the query terms among the unit's content tags
    "evidence_confidence",  # lowest confidence of the evidence a match relies on (1: none)
    "log_length",  # log(1 + words of the unit's text)
    CE_FEATURE,  # the cross-encoder's score of (query, text): optional
)
# Features a model computes outside this module, for some candidates only (the cross-encoder
# scores the top N within the stage's budget): a candidate without one counts as the ranker's
# mean for it, so the feature adds nothing to its score (``RankerModel``).
MODEL_FEATURES: tuple[str, ...] = (CE_FEATURE,)
# Subtracted (their weights are kept >= 0): a query term the unit lacks, and a match that
# rests only on weak machine-read evidence.
PENALTIES: tuple[str, ...] = ("missing_terms", "weak_evidence_only")
ALL_FEATURES: tuple[str, ...] = FEATURES + PENALTIES


_COMPUTED = tuple(f for f in ALL_FEATURES if f not in MODEL_FEATURES)


@dataclass(frozen=True)
class AxisEvidence:
    """One axis' view of a candidate: its 1-based rank and the axis' score."""

    rank: int
    score: float


# Where a term's occurrences are looked for, at most (a short stem in a long text is
# everywhere: a few occurrences say as much as all of them).
_MAX_OCCURRENCES = 16
# Two query terms this close (characters between their starts) are "near": about three words.
_NEAR_CHARS = 40


def _word_starts(low: str, stem_: str) -> list[int]:
    """Offsets in ``low`` (lowercased) where a word begins with ``stem_``: C-speed ``find``
    with a boundary check, not a tokenizer (the stage reads up to 100 texts per query)."""
    out: list[int] = []
    i = low.find(stem_)
    while i != -1 and len(out) < _MAX_OCCURRENCES:
        if i == 0 or not low[i - 1].isalnum():
            out.append(i)
        i = low.find(stem_, i + 1)
    return out


def _near(a: list[int], b: list[int]) -> bool:
    """Is some offset of ``a`` within ``_NEAR_CHARS`` of some offset of ``b``? Both are
    increasing: one merge-like walk instead of every pair."""
    i = j = 0
    while i < len(a) and j < len(b):
        if abs(a[i] - b[j]) <= _NEAR_CHARS:
            return True
        if a[i] < b[j]:
            i += 1
        else:
            j += 1
    return False


@dataclass
class QueryFeatures:
    """One query's terms and their stems, made once per search.

    A term matches a text where a word *begins* with its stem ("lock" matches "lock-up" and
    "locking", not "block"): a little looser than the explanations' whole-word stems, and
    fast enough to read a hundred candidates within the stage's budget."""

    query: str
    terms: tuple[str, ...] = field(init=False)
    stems: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.terms = QueryMatcher(self.query).terms
        self.stems = tuple(stem(t) for t in self.terms)

    def _found(self, text: str) -> list[list[int]]:
        low = text.lower()
        return [_word_starts(low, s) for s in self.stems]

    def features(
        self,
        row: Mapping[str, Any],
        axes: Mapping[str, AxisEvidence],
        fused_rank: int,
        fused_score: float,
        fts_max: float,
    ) -> dict[str, float]:
        """The features of one candidate (``row``: its snapshot columns, at least the text
        fields present; ``fts_max``: the best BM25 score among this search's candidates)."""
        f: dict[str, float] = dict.fromkeys(_COMPUTED, 0.0)
        f["fused_score"] = float(fused_score)
        f["fused_rr"] = 1.0 / max(1, fused_rank)
        for axis, hit in axes.items():
            if axis in RANK_AXES:
                f[f"{axis}_rr"] = 1.0 / max(1, hit.rank)
        if "fts" in axes and fts_max > 0:
            f["fts_score"] = axes["fts"].score / fts_max
        for axis in ("mv", "vv"):
            if axis in axes:
                f[f"{axis}_score"] = float(axes[axis].score)

        n_terms = len(self.terms)
        texts = {name: str(row.get(name) or "") for name in FIELDS}
        # Words, roughly: spaces are counted in C, words are not.
        f["log_length"] = math.log1p(sum(texts[n].count(" ") for n in ("body", "caption", "ocr")))
        f["evidence_confidence"] = 1.0
        if not n_terms:
            return f
        found = [False] * n_terms
        exact = [False] * n_terms  # found in text a program read exactly (not OCR, captions)
        near_pairs = [False] * max(0, n_terms - 1)
        for name in FIELDS:
            text = texts[name]
            if not text:
                continue
            starts = self._found(text)
            hits = [bool(p) for p in starts]
            f[f"cov_{name}"] = sum(hits) / n_terms
            for i, h in enumerate(hits):
                if h:
                    found[i] = True
                    if name in ("title", "body", "metadata"):
                        exact[i] = True
            if name in ("title", "body", "caption", "ocr"):
                for i in range(n_terms - 1):
                    a, b = starts[i], starts[i + 1]
                    if a and b and not near_pairs[i]:
                        near_pairs[i] = _near(a, b)
        tags = row.get("content_tags") or ()
        if tags:
            tag_hits = self._found(" ".join(str(t) for t in tags))
            f["tag_overlap"] = sum(bool(p) for p in tag_hits) / n_terms
        n_found = sum(found)
        f["coverage"] = n_found / n_terms
        f["all_terms"] = 1.0 if n_found == n_terms else 0.0
        f["missing_terms"] = float(n_terms - n_found)
        if near_pairs:
            f["proximity"] = sum(near_pairs) / len(near_pairs)
        machine_read = {self.stems[i] for i in range(n_terms) if found[i] and not exact[i]}
        if machine_read:
            conf = self._weakest_confidence(row.get("evidence"), machine_read)
            f["evidence_confidence"] = conf
            if conf < WEAK_CONFIDENCE and not any(exact):
                f["weak_evidence_only"] = 1.0
        return f

    def _weakest_confidence(self, evidence: Any, stems: set[str]) -> float:
        """The best confidence with which each machine-read term was read, at its weakest."""
        best: dict[str, float] = {}
        for item in parse_evidence(evidence):
            low = str(item.get("text") or "").lower()
            matched = {s for s in stems if _word_starts(low, s)}
            if not matched:
                continue
            raw = item.get("confidence")
            try:
                conf = float(raw) if raw is not None else 1.0
            except (TypeError, ValueError):
                conf = 1.0
            for s in matched:
                best[s] = max(best.get(s, 0.0), conf)
        return min(best.values()) if best else 1.0


def feature_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> list[list[float]]:
    """Rows of features as lists in ``names`` order (a missing feature is 0)."""
    return [[float(r.get(n, 0.0)) for n in names] for r in rows]

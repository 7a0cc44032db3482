"""Fusing ranked candidate lists from several retrieval axes.

Axes: ``vv`` (visual vectors), ``mv`` (text-meaning vectors), ``fts`` (BM25 over the snapshot's
full-text fields). Each axis returns a ranked list of unit ids; they are fused with a weighted
reciprocal-rank fusion whose weights depend on the kind of query (``classify_query``).

Pure Python, no I/O: the serving layer and the evals both use it.
"""

# The word lists are written as strings and split: easier to read and edit than literals.
# ruff: noqa: SIM905

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

# The query-type vocabulary lives at the bottom (contracts); FUSION_WEIGHTS has one row per type.
from rag_pipeline.contracts import QUERY_TYPES, QueryType

Id = TypeVar("Id", str, int)  # unit or asset ids, or serving's integer row keys

AXES: tuple[str, ...] = ("vv", "mv", "fts")
RRF_K = 60

FUSION_WEIGHTS: dict[str, dict[str, float]] = {
    "visual": {"vv": 0.50, "mv": 0.30, "fts": 0.20},
    # keyword and semantic tuned on SciFact train (docs/evals.md): Recall@50 +2.5 pp, 95% CI
    # [1.5, 3.7], nDCG@10 unchanged within noise, against the seed's .20/.30/.50 and .20/.50/.30.
    "keyword": {"vv": 0.20, "mv": 0.40, "fts": 0.40},
    "semantic": {"vv": 0.20, "mv": 0.48, "fts": 0.32},
    "balanced": {"vv": 0.34, "mv": 0.33, "fts": 0.33},
}


def weights_for(
    query_type: str,
    available_axes: Iterable[str],
    fts_share: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The query type's fusion weights restricted to ``available_axes``, renormalised to sum 1.

    ``fts_share``: learned per query type (``evals.fusion_sweep.choose_fusion``, carried by the
    ranker file): the FTS axis' share of the two text axes' weight (their sum is kept).
    Axes unknown to the weight table are ignored; if none of the available axes has a weight
    (or none is available) this raises ``ValueError``: there is nothing to fuse.
    """
    if query_type not in FUSION_WEIGHTS:
        raise ValueError(f"unknown query type {query_type!r} (expected one of {QUERY_TYPES})")
    table = dict(FUSION_WEIGHTS[query_type])
    if fts_share and query_type in fts_share:
        text = table["fts"] + table["mv"]
        table["fts"], table["mv"] = text * fts_share[query_type], text * (1 - fts_share[query_type])
    available = set(available_axes)
    chosen = {a: table[a] for a in AXES if a in available and table.get(a, 0.0) > 0.0}
    total = sum(chosen.values())
    if not chosen or total <= 0.0:
        raise ValueError(
            f"no retrieval axis available to fuse (asked for {sorted(available) or 'none'}, "
            f"weighted axes are {list(table)})"
        )
    return {a: w / total for a, w in chosen.items()}


def weighted_rrf(
    rankings: Mapping[str, list[Id]], weights: Mapping[str, float], k: int = RRF_K
) -> list[tuple[Id, float]]:
    """Weighted reciprocal-rank fusion.

    ``score(d) = sum over axes of weights[axis] / (k + rank_axis(d))`` with 1-based ranks; an axis
    that did not return ``d`` contributes nothing, and axes without a (positive) weight are
    ignored. Within one axis a repeated id keeps its first (best) rank.

    Ties are broken deterministically: higher score first, then the better (smaller) best
    single-axis rank, then the id itself.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    scores: dict[Id, float] = {}
    best_rank: dict[Id, int] = {}
    # A fixed axis order makes the floating-point sums independent of dict insertion order.
    for axis in sorted(rankings):
        w = float(weights.get(axis, 0.0))
        if w <= 0.0:
            continue
        seen: set[Id] = set()
        for rank, doc in enumerate(rankings[axis], start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            if rank < best_rank.get(doc, 1 << 62):
                best_rank[doc] = rank
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


# ---------------------------------------------------------------------------------------------
# Query classification

_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were will with me my i we our you your he she they them their his her there here".split()
)
_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how can could does do did is are should would "
    "will explain describe".split()
)
_VISUAL_WORDS = frozenset(
    "photo photos photograph photographs image images picture pictures pic pics showing shows "
    "shown screenshot screenshots selfie scan scanned drawing diagram illustration portrait "
    "landscape red green blue yellow orange purple pink black white grey gray brown golden "
    "silver colorful colourful dark bright".split()
)
# Everyday words that are not "rare-looking" on their own (a small, fixed list: transparency
# matters more than coverage here).
_COMMON_WORDS = frozenset(
    "about after all also any back because before best big both but car cat city day days dog "
    "each even file files find first food get good great group help home house how just know "
    "last life like little long look made make man many meeting more most much new news next "
    "note notes now old one only other out over page part people place plan please project "
    "report right room same school see show small some state still such take team than then "
    "thing things think time today two under up use used very want way week well what work "
    "world year years".split()
)
_QUOTED = re.compile(r"\"[^\"]+\"|“[^”]+”|(?<!\w)'[^']+'(?!\w)")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")


def _looks_like_identifier(tok: str) -> bool:
    """Digits, snake_case / dotted / path-like codes, camelCase, ACRONYMS.

    (Plain hyphenated words such as "well-known" are English, not codes; "abc-123" is caught by
    the digit rule.)
    """
    if any(c.isdigit() for c in tok):
        return True
    if re.search(r"[A-Za-z][_./][A-Za-z0-9]", tok):
        return True
    if re.fullmatch(r"[A-Z]{2,}s?", tok):  # ACRONYM
        return True
    return bool(re.search(r"[a-z][A-Z]", tok))  # camelCase / CamelCase inner capital


def _rare_looking(tok: str) -> bool:
    t = tok.lower()
    return (
        len(t) >= 3
        and t not in _STOPWORDS
        and t not in _VISUAL_WORDS
        and t not in _COMMON_WORDS
        and t not in _QUESTION_WORDS
    )


SEMANTIC_MIN_WORDS = 6  # a query this long reads as a sentence: semantic


def classify_query(text: str, semantic_min_words: int = SEMANTIC_MIN_WORDS) -> QueryType:
    """Classify a query to pick fusion weights. Rules, first match wins:

    1. **keyword** -- the query contains a quoted phrase (``"..."``), or a token that looks like an
       identifier or code (any digit, ``snake_case``, ``dotted.name``,
       ``path/like``, ``camelCase``, an ``ACRONYM``), or it has at most two words and every one
       of them is rare-looking (3+ letters, not a stopword, visual word, question word, or one of
       a small list of everyday words).
    2. **visual** -- it mentions a visual word (photo, image, picture, showing, screenshot, a
       colour, ...) or the phrase "of a"/"of an" (as in "photo of a dog", "a drawing of an owl").
    3. **semantic** -- it reads like a natural-language question (ends with ``?`` or starts with a
       question word such as what/how/why/which/can/does) or is long (``semantic_min_words``,
       6 words or more; a ranker file may carry a learned one).
    4. **balanced** -- everything else.
    """
    raw = text.strip()
    if not raw:
        return "balanced"
    if _QUOTED.search(raw):
        return "keyword"
    tokens = _WORD.findall(raw)
    if any(_looks_like_identifier(t) for t in tokens):
        return "keyword"
    words = [t.lower() for t in tokens]
    if 0 < len(words) <= 2 and all(_rare_looking(w) for w in words):
        return "keyword"
    if any(w in _VISUAL_WORDS for w in words) or re.search(r"\bof an?\b", raw.lower()):
        return "visual"
    if (
        raw.endswith("?")
        or (words and words[0] in _QUESTION_WORDS)
        or len(words) >= semantic_min_words
    ):
        return "semantic"
    return "balanced"

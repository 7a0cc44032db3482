"""Hits from snapshot rows: the columns a hit shows, its snippet and its explanation (matched
evidence, analysis runs, file version, fusion, matched tags)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rag_pipeline.retrieval.explain import QueryMatcher, matched_evidence, snippet
from rag_pipeline.snapshot.schema import FTS_FIELDS
from serving.models import (
    AxisHit,
    Explanation,
    FileVersion,
    FusionInfo,
    Hit,
    MatchedEvidence,
)

# Fields a snippet may come from, in order of preference.
SNIPPET_FIELDS = ("body", "caption", "ocr", "title", "tags", "metadata")
# Columns read for the final hits only: what a Hit shows (never the vectors).
HIT_COLUMNS = [
    "unit_id",
    "asset_id",
    "version_id",
    "source",
    "path",
    "locations",
    "kind",
    "media_type",
    "chunk_index",
    "locator",
    *FTS_FIELDS,
    "mtime",
    "size",
    "evidence",
    "runs",
    "content_tags",
    "thumbnail",
]


def _loads(raw: Any, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    if isinstance(raw, (dict, list)):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return default


def build_hit(
    row: dict[str, Any],
    score: float,
    axes: dict[str, AxisHit],
    matcher: QueryMatcher,
    fusion: FusionInfo,
    entities: Sequence[str] = (),
) -> Hit:
    """The hit for one snapshot row (``HIT_COLUMNS``), explained against the query."""
    query = matcher.query
    evidence = matched_evidence(row.get("evidence"), query, matcher=matcher)
    matched = [
        MatchedEvidence(
            kind=e.get("kind"),
            field=e.get("field"),
            ordinal=e.get("ordinal"),
            text=snippet(str(e.get("text") or ""), query, width=300, matcher=matcher),
            confidence=e.get("confidence"),
            matched_terms=e["matched_terms"],
            run_id=e.get("run_id"),
            locator=e.get("locator") if isinstance(e.get("locator"), dict) else {},
        )
        for e in evidence
    ]
    source = row.get("source") or ""
    path = row.get("path") or ""
    title = row.get("title") or os.path.basename(path.rstrip("/")) or path
    mtime = row.get("mtime")
    if isinstance(mtime, datetime) and mtime.tzinfo is None:
        mtime = mtime.replace(tzinfo=UTC)
    return Hit(
        unit_id=row["unit_id"],
        asset_id=row["asset_id"],
        version_id=row["version_id"],
        source=source,
        path=path,
        kind=row["kind"],
        media_type=row.get("media_type"),
        title=title,
        snippet=best_snippet(row, matcher),
        chunk_index=row.get("chunk_index"),
        locator=_loads(row.get("locator"), {}),
        score=score,
        axes=axes,
        explanation=Explanation(
            matched_evidence=matched,
            runs=_loads(row.get("runs"), {}),
            file_version=FileVersion(
                version_id=row["version_id"],
                source=source,
                path=path,
                locations=list(row.get("locations") or [f"{source}/{path}"]),
                asset_id=row["asset_id"],
                size=row.get("size"),
                mtime=mtime,
            ),
            fusion=fusion,
            matched_tags=[t for t in entities if t in (row.get("content_tags") or ())],
        ),
        thumbnail=row.get("thumbnail") or None,
        caption=_start(row.get("caption")) if row.get("kind") == "image" else None,
        ocr=_start(row.get("ocr")) if row.get("kind") == "image" else None,
    )


def _start(text: Any, width: int = 300) -> str | None:
    """The start of an image's caption or OCR text, whitespace collapsed (None: none)."""
    text = " ".join(str(text or "").split())
    if not text:
        return None
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def best_snippet(row: dict[str, Any], matcher: QueryMatcher, width: int = 200) -> str:
    """The field with the most matched query terms (body preferred), windowed on a match."""
    best_field, best_n = None, 0
    for f in SNIPPET_FIELDS:
        text = row.get(f) or ""
        if text:
            n = len(matcher.matched_terms(text))
            if n > best_n:
                best_field, best_n = f, n
    if best_field is None:
        best_field = next((f for f in SNIPPET_FIELDS if row.get(f)), None)
    return (
        snippet(row.get(best_field) or "", matcher.query, width, matcher=matcher)
        if best_field
        else ""
    )

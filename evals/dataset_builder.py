"""Weakly-labelled query sets from a corpus's own evidence, for corpora without judgements.

Reads a *published snapshot table* (LanceDB; the manifest named by a pointer), never the DuckDB
catalog. For each asset (file) it takes the evidence that describes it as a whole:

* ``title``   (documents and images): the query is the title (query type ``keyword``);
* ``caption`` (images: descriptions/captions): the caption (``semantic``; ``visual`` if the
  asset is an image);
* ``tags``    (keywords/tags): the comma-separated tags (``keyword``);
* ``ocr``     (text rendered in images): the first line of OCR text (``keyword``).

The relevant document is that asset's path relative to its source, grade 2; when the same query
text describes several assets, every one of them is relevant with grade 2. Texts shorter than
``min_words`` words or longer than ``max_words`` are skipped. Sampling is deterministic: assets
are ordered by ``sha256(seed:asset_id)`` and the first ``n`` with a usable text are taken.

Known bias: a title query finds its own document through BM25's title field almost trivially;
the set measures "can I find a thing by what it is called/described as", not topical retrieval.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path, PurePath

from evals.goldsets import GoldQuery, write_gold_jsonl

STRATEGIES = ("title", "caption", "tags", "ocr")


def _rel(uri: str, source: str | None, path: str | None = None) -> str:
    """The path relative to its source: the snapshot's ``path`` (a snapshot from before it had
    one: the uri relative to the source root)."""
    if path:
        return path
    if source:
        try:
            return Path(uri).relative_to(source).as_posix()
        except ValueError:
            pass
    return PurePath(uri).as_posix()


def _snapshot_rows(
    snapshots_dir: Path, lance_dir: Path, pointer: str = "CURRENT", snapshot_id: str | None = None
) -> tuple[str, list[dict]]:
    import lancedb

    from rag_pipeline.snapshot.schema import (
        open_snapshot_table,
        read_current_manifest,
        read_manifest,
    )

    m = (
        read_manifest(snapshots_dir, snapshot_id)
        if snapshot_id
        else read_current_manifest(snapshots_dir, pointer)
    )
    table = open_snapshot_table(lancedb.connect(str(lance_dir)), m)
    n = int(table.count_rows())
    cols = ["asset_id", "uri", "source", "kind", "chunk_index", "title", "caption", "tags", "ocr"]
    cols += ["path"] if "path" in table.schema.names else []
    rows = table.search().select(cols).limit(max(n, 1)).to_arrow().to_pylist()
    return m.snapshot_id, rows


def _text_for(strategy: str, row: dict) -> str:
    raw = (row.get(strategy) or "").strip()
    if strategy == "ocr":
        raw = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "")
    elif strategy == "caption":
        raw = raw.splitlines()[0].strip() if raw else ""
    return " ".join(raw.split())


def build_weak_goldset(
    rows: list[dict],
    *,
    n: int = 50,
    seed: int = 0,
    strategies: tuple[str, ...] = ("title", "caption"),
    min_words: int = 2,
    max_words: int = 30,
) -> list[GoldQuery]:
    """Weak gold queries from snapshot rows (one row per unit; assets appear once or more)."""
    for s in strategies:
        if s not in STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; expected some of {STRATEGIES}")
    assets: dict[str, dict] = {}
    for r in rows:
        a = assets.setdefault(r["asset_id"], dict(r))
        if r.get("chunk_index", -1) in (0, -1):  # the head unit carries the whole-file fields
            a.update({k: v for k, v in r.items() if v})
    # query text (normalized) -> every asset path it describes
    described: dict[str, set[str]] = defaultdict(set)
    candidates: dict[str, tuple[str, str]] = {}  # asset id -> (strategy, text)
    for aid, a in assets.items():
        for s in strategies:
            text = _text_for(s, a)
            if min_words <= len(text.split()) <= max_words:
                described[text.casefold()].add(_rel(a["uri"], a.get("source"), a.get("path")))
                candidates.setdefault(aid, (s, text))
    order = sorted(candidates, key=lambda aid: hashlib.sha256(f"{seed}:{aid}".encode()).hexdigest())
    out: list[GoldQuery] = []
    seen_texts: set[str] = set()
    for aid in order:
        s, text = candidates[aid]
        if text.casefold() in seen_texts:
            continue
        seen_texts.add(text.casefold())
        kind = assets[aid].get("kind")
        qtype = (
            "keyword"
            if s in ("title", "tags", "ocr")
            else ("visual" if kind == "image" else "semantic")
        )
        out.append(
            GoldQuery(
                query_id=f"weak-{s}-{aid[:12]}",
                query=text,
                query_type=qtype,
                relevant={p: 2 for p in sorted(described[text.casefold()])},
            )
        )
        if len(out) >= n:
            break
    return out


def build_from_snapshot(
    data_dir: Path,
    out: Path,
    *,
    n: int = 50,
    seed: int = 0,
    strategies: tuple[str, ...] = ("title", "caption"),
    pointer: str = "CURRENT",
) -> tuple[str, list[GoldQuery]]:
    snapshot_id, rows = _snapshot_rows(data_dir / "snapshots", data_dir / "lance", pointer)
    queries = build_weak_goldset(rows, n=n, seed=seed, strategies=strategies)
    write_gold_jsonl(out, queries)
    return snapshot_id, queries

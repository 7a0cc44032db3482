"""Gold sets: BEIR folders and the extended JSONL query set, loaded into one shape.

Extended JSONL: one ``GoldQuery`` per line, defined (with its line format, the query-type
vocabulary and the legacy ``mixed`` spelling) in ``rag_pipeline.goldset_schema``, which the demo
generator shares::

    {"query_id": "q01", "query": "varroa mite oxalic acid", "query_type": "keyword",
     "relevant": {"docs/outdoors/beekeeping.md": 2, "images/hive.jpg": 1},
     "scope": {"kind": "document", "folder": "docs/outdoors"},      # optional filters
     "must": ["oxalic"], "exclude": ["wasp"]}                          # optional terms

``must`` / ``exclude`` terms are checked on a hit's title, snippet and matched evidence; hits
that violate them are dropped from the ranking before scoring (a post-filter: serving has no
boolean operators).

Loading validates every line and names the bad one as ``file:line: reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rag_pipeline.goldset_schema import (
    GoldQuery,
    Scope,
    gold_jsonl_line,
    parse_gold_jsonl,
    write_gold_jsonl,
)

__all__ = [
    "GoldQuery",
    "GoldSet",
    "Scope",
    "gold_jsonl_line",
    "is_beir_dir",
    "load_beir_gold",
    "load_gold_jsonl",
    "write_gold_jsonl",
]


@dataclass
class GoldSet:
    """A set of judged queries. ``kind``: "beir" (doc ids; ``doc_map`` maps exported file
    stems to them) or "jsonl" (corpus-relative paths)."""

    name: str
    kind: Literal["beir", "jsonl"]
    queries: list[GoldQuery]
    path: Path | None = None
    split: str | None = None
    corpus: dict[str, dict[str, str]] | None = None  # BEIR only
    extra: dict = field(default_factory=dict)

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {q.query_id: dict(q.relevant) for q in self.queries}

    def limit(self, n: int | None) -> GoldSet:
        if not n:
            return self
        return GoldSet(
            self.name,
            self.kind,
            self.queries[:n],
            self.path,
            self.split,
            self.corpus,
            dict(self.extra),
        )


def load_gold_jsonl(path: str | Path, name: str | None = None) -> GoldSet:
    """Read and validate an extended JSONL gold file; ``ValueError('file:line: reason')``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gold file {path} not found")
    queries = parse_gold_jsonl(path.read_text(encoding="utf-8"), str(path))
    if not queries:
        raise ValueError(f"{path}: no queries")
    return GoldSet(name=name or path.stem, kind="jsonl", queries=queries, path=path)


def load_beir_gold(dataset_dir: str | Path, split: str = "test") -> GoldSet:
    """A BEIR folder's split as a GoldSet (grades kept as in the qrels; query types unset)."""
    from rag_pipeline.datasets.beir import load_beir

    ds = load_beir(dataset_dir, split)
    queries = []
    for qid, text in ds.queries.items():
        judged = ds.qrels.get(qid, {})
        if not any(g > 0 for g in judged.values()):
            continue
        # BEIR grades may exceed 2 (TREC-style 0..3): clamp into the extended scale.
        queries.append(
            GoldQuery.model_construct(
                query_id=qid,
                query=text,
                query_type=None,
                relevant={d: max(0, min(2, g)) if g <= 2 else 2 for d, g in judged.items()},
                scope=None,
                must=[],
                exclude=[],
            )
        )
    return GoldSet(
        name=Path(dataset_dir).resolve().name,
        kind="beir",
        queries=queries,
        path=Path(dataset_dir),
        split=split,
        corpus=ds.corpus,
        extra={"missing_docs": sorted(ds.missing_docs)},
    )


def is_beir_dir(path: str | Path) -> bool:
    p = Path(path)
    return (
        (p / "corpus.jsonl").is_file()
        and (p / "queries.jsonl").is_file()
        and (p / "qrels").is_dir()
    )

"""Gold sets: BEIR folders and the extended JSONL query set, loaded into one shape.

Extended JSONL (one object per line; blank lines and lines starting with ``#`` are skipped)::

    {"query_id": "q01", "query": "varroa mite oxalic acid", "query_type": "keyword",
     "relevant": {"docs/outdoors/beekeeping.md": 2, "images/hive.jpg": 1},
     "scope": {"kind": "document", "folder": "docs/outdoors"},      # optional filters
     "must": ["oxalic"], "exclude": ["wasp"]}                          # optional terms

* ``query_type``: keyword | semantic | visual | mixed (optional: ``classify_query`` decides);
* ``relevant``: document id (BEIR) or corpus-relative path -> grade 0 (judged not relevant),
  1 (related) or 2 (the answer); at least one grade > 0;
* ``scope``: ``kind`` (document | image) and/or ``folder`` (a folder prefix): passed to serving
  as filters;
* ``must`` / ``exclude``: terms a returned hit must contain / must not contain (case-insensitive,
  checked on the hit's title, snippet and matched evidence); hits that violate them are dropped
  from the ranking before scoring (a post-filter: serving has no boolean operators).

Loading validates every line and names the bad one as ``file:line: reason``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rag_pipeline.datasets.beir import jsonl_records

GoldQueryType = Literal["keyword", "semantic", "visual", "mixed"]
# Gold query type -> serving's QueryType (serving calls a mixed query "balanced").
SERVING_QUERY_TYPE = {"keyword": "keyword", "semantic": "semantic", "visual": "visual",
                      "mixed": "balanced"}


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["document", "image"] | None = None
    folder: str | None = None


class GoldQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=2000)
    query_type: GoldQueryType | None = None
    relevant: dict[str, int]
    scope: Scope | None = None
    must: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("relevant")
    @classmethod
    def _grades(cls, v: dict[str, int]) -> dict[str, int]:
        for doc, g in v.items():
            if not doc.strip():
                raise ValueError("relevant has an empty document key")
            if isinstance(g, bool) or g not in (0, 1, 2):
                raise ValueError(f"grade of {doc!r} must be 0, 1 or 2, not {g!r}")
        return v

    @model_validator(mode="after")
    def _has_relevant(self) -> GoldQuery:
        if not any(g > 0 for g in self.relevant.values()):
            raise ValueError("relevant needs at least one document with grade 1 or 2")
        return self


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
        return GoldSet(self.name, self.kind, self.queries[:n], self.path, self.split,
                       self.corpus, dict(self.extra))


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def load_gold_jsonl(path: str | Path, name: str | None = None) -> GoldSet:
    """Read and validate an extended JSONL gold file; ``ValueError('file:line: reason')``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gold file {path} not found")
    queries: list[GoldQuery] = []
    first: dict[str, int] = {}
    for lineno, obj in jsonl_records(path, comments=True):
        try:
            q = GoldQuery.model_validate(obj)
        except ValidationError as exc:
            raise ValueError(f"{path}:{lineno}: {_reason(exc)}") from None
        if q.query_id in first:
            raise ValueError(f"{path}:{lineno}: duplicate query_id {q.query_id!r} "
                             f"(first at line {first[q.query_id]})")
        first[q.query_id] = lineno
        queries.append(q)
    if not queries:
        raise ValueError(f"{path}: no queries")
    return GoldSet(name=name or path.stem, kind="jsonl", queries=queries, path=path)


def write_gold_jsonl(path: str | Path, queries: Iterable[GoldQuery]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [q.model_dump_json(exclude_none=True, exclude_defaults=False) for q in queries]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


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
        queries.append(GoldQuery.model_construct(
            query_id=qid, query=text, query_type=None,
            relevant={d: max(0, min(2, g)) if g <= 2 else 2 for d, g in judged.items()},
            scope=None, must=[], exclude=[]))
    return GoldSet(name=Path(dataset_dir).resolve().name, kind="beir", queries=queries,
                   path=Path(dataset_dir), split=split, corpus=ds.corpus,
                   extra={"missing_docs": sorted(ds.missing_docs)})


def is_beir_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "corpus.jsonl").is_file() and (p / "queries.jsonl").is_file() \
        and (p / "qrels").is_dir()

"""The gold-query schema: one judged query of an extended JSONL gold set.

One object per line (blank lines and lines starting with ``#`` are skipped)::

    {"query_id": "q01", "query": "varroa mite oxalic acid", "query_type": "keyword",
     "relevant": {"docs/outdoors/beekeeping.md": 2, "images/hive.jpg": 1},
     "scope": {"kind": "document", "folder": "docs/outdoors"},      # optional filters
     "must": ["oxalic"], "exclude": ["wasp"]}                          # optional terms

* ``query_type``: one of serving's query types, ``contracts.QUERY_TYPES`` (visual | keyword |
  semantic | balanced); optional: without it serving's ``classify_query`` decides. The older
  spelling ``mixed`` is read as ``balanced``;
* ``relevant``: document id (BEIR) or corpus-relative path -> grade 0 (judged not relevant),
  1 (related) or 2 (the answer); at least one grade > 0;
* ``scope``: ``kind`` (document | image) and/or ``folder`` (a folder prefix): passed to serving
  as filters;
* ``must`` / ``exclude``: terms a returned hit must contain / must not contain (case-insensitive,
  checked on the hit's title, snippet and matched evidence).

At the bottom of the package (it imports only ``contracts``) so that the evals (which load,
write and score gold sets: ``evals.goldsets``) and the demo generator (which writes the demo
gold set) share one model and one file format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rag_pipeline.contracts import QueryType

_Row = TypeVar("_Row", bound=BaseModel)

__all__ = [
    "GoldQuery",
    "QAQuestion",
    "Scope",
    "gold_jsonl_line",
    "parse_gold_jsonl",
    "parse_qa_jsonl",
    "write_gold_jsonl",
]

#: Older query-type spellings, read as the current ones.
_QUERY_TYPE_ALIASES = {"mixed": "balanced"}


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["document", "image"] | None = None
    folder: str | None = None


class GoldQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=2000)
    query_type: QueryType | None = None
    relevant: dict[str, int]
    scope: Scope | None = None
    must: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("query_type", mode="before")
    @classmethod
    def _current_spelling(cls, v: Any) -> Any:
        return _QUERY_TYPE_ALIASES.get(v, v) if isinstance(v, str) else v

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


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def parse_gold_jsonl(text: str, source: str) -> list[GoldQuery]:
    """Validate the lines of an extended JSONL gold set (``text``: the whole file).

    Any bad line is a ``ValueError('source:line: reason')``: invalid JSON, not an object, a
    schema violation, or a ``query_id`` already used. An empty set is returned as ``[]``.
    """
    return _parse_jsonl(text, source, GoldQuery, "query_id")


def _parse_jsonl(text: str, source: str, model: type[_Row], id_field: str) -> list[_Row]:
    """One ``model`` per non-blank, non-comment line; ids unique by ``id_field``."""
    rows: list[_Row] = []
    first: dict[str, int] = {}
    # Lines end at "\n" only: str.splitlines would also split at characters JSON strings may hold
    # raw (U+2028, form feed ...).
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{source}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise ValueError(f"{source}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        try:
            row = model.model_validate(obj)
        except ValidationError as exc:
            raise ValueError(f"{source}:{lineno}: {_reason(exc)}") from None
        key = getattr(row, id_field)
        if key in first:
            raise ValueError(
                f"{source}:{lineno}: duplicate {id_field} {key!r} (first at line {first[key]})"
            )
        first[key] = lineno
        rows.append(row)
    return rows


def gold_jsonl_line(q: GoldQuery) -> str:
    """One query as its JSONL line (no newline): fields in schema order, unset optional fields
    (no ``query_type``, ``scope``, ``must`` or ``exclude``) left out."""
    return q.model_dump_json(exclude_defaults=True)


def write_gold_jsonl(path: str | Path, queries: Iterable[GoldQuery]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(gold_jsonl_line(q) + "\n" for q in queries), encoding="utf-8")
    return path


class QAQuestion(BaseModel):
    """One question of a golden QA set (``rag-pipeline eval qa``), one JSON object a line::

        {"qa_id": "a01", "question": "How often should I inspect a hive?",
         "expected_sources": ["docs/outdoors/beekeeping.md"],
         "must_contain": ["seven to ten days"], "must_not_contain": ["PWNED"]}
        {"qa_id": "u01", "question": "What is the capital of Australia?", "answerable": false}

    * ``expected_sources``: corpus-relative paths the answer should cite (answerable only);
    * ``must_contain`` / ``must_not_contain``: phrases the answer text must / must not contain
      (case-insensitive);
    * ``answerable: false``: nothing in the corpus answers it: the answer must be a refusal.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    qa_id: str = Field(min_length=1, max_length=200)
    question: str = Field(min_length=1, max_length=1000)
    answerable: bool = True
    expected_sources: list[str] = Field(default_factory=list)
    must_contain: list[str] = Field(default_factory=list)
    must_not_contain: list[str] = Field(default_factory=list)
    scope: Scope | None = None

    @model_validator(mode="after")
    def _consistent(self) -> QAQuestion:
        if self.answerable and not self.expected_sources:
            raise ValueError("an answerable question needs expected_sources")
        if not self.answerable and (self.expected_sources or self.must_contain):
            raise ValueError(
                "an unanswerable question has no expected_sources or must_contain phrases"
            )
        if any(not p.strip() for p in [*self.must_contain, *self.must_not_contain]):
            raise ValueError("phrases must not be empty")
        return self


def parse_qa_jsonl(text: str, source: str) -> list[QAQuestion]:
    """Validate a golden QA file (``text``: the whole file); a bad line is a
    ``ValueError('source:line: reason')``, as in ``parse_gold_jsonl``."""
    return _parse_jsonl(text, source, QAQuestion, "qa_id")

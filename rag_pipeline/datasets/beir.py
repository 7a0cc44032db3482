"""BEIR-format datasets (SciFact, NFCorpus, ...) from a local folder, and their export as files.

A BEIR dataset folder holds::

    corpus.jsonl        {"_id": ..., "title": ..., "text": ...} per line
    queries.jsonl       {"_id": ..., "text": ...} per line
    qrels/<split>.tsv   header line, then query-id <TAB> corpus-id <TAB> score

``load_beir(dir, split)`` reads and validates them: a malformed line is a ``ValueError`` that
names ``file:line``. ``export_corpus_as_files`` writes each document as a Markdown file so the
real pipeline (discovery -> analysis -> snapshot) can index it; ``doc_id_for_uri`` maps a
search hit's file back to the document id the qrels use.

Nothing here downloads anything, and nothing imports Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "BeirDataset",
    "doc_id_for_uri",
    "export_corpus_as_files",
    "load_beir",
    "markdown_for",
    "safe_file_stems",
]


@dataclass
class BeirDataset:
    """One split of a BEIR dataset.

    ``corpus``: doc id -> {"title", "text"} in file order; ``queries``: query id -> text, only
    the queries that have qrels in the split (file order); ``qrels``: query id -> {doc id:
    grade}. Grades <= 0 are judged non-relevant.
    """

    name: str
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source_dir: Path | None = None
    # Judged documents that are not in the corpus (kept in qrels: they count against recall).
    missing_docs: set[str] = field(default_factory=set)

    def first_docs(self, n: int) -> BeirDataset:
        """The first ``n`` corpus documents (file order) and the queries all of whose relevant
        documents are among them (with their qrels restricted to those documents)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        corpus = dict(list(self.corpus.items())[:n])
        qrels: dict[str, dict[str, int]] = {}
        for qid, judged in self.qrels.items():
            relevant = [d for d, g in judged.items() if g > 0]
            if relevant and all(d in corpus for d in relevant):
                qrels[qid] = {d: g for d, g in judged.items() if d in corpus}
        queries = {qid: text for qid, text in self.queries.items() if qid in qrels}
        return BeirDataset(
            name=self.name,
            split=self.split,
            corpus=corpus,
            queries=queries,
            qrels=qrels,
            source_dir=self.source_dir,
        )

    def doc_text(self, doc_id: str) -> str:
        """ "title\\ntext" (just the text when there is no title): the text a doc is embedded as."""
        doc = self.corpus[doc_id]
        return f"{doc['title']}\n{doc['text']}" if doc["title"] else doc["text"]


# --------------------------------------------------------------------------------------------
# Loading


def jsonl_records(path: Path, comments: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line (and, with ``comments``, non-# line);
    ValueError naming file:line otherwise."""
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or (comments and line.lstrip().startswith("#")):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _record_id(obj: dict[str, Any], path: Path, lineno: int) -> str:
    raw = obj.get("_id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ValueError(f"{path}:{lineno}: missing or non-string '_id' (got {type(raw).__name__})")
    value = str(raw).strip()
    if not value:
        raise ValueError(f"{path}:{lineno}: empty '_id'")
    return value


def _string_field(obj: dict[str, Any], key: str, path: Path, lineno: int, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"{path}:{lineno}: missing '{key}'")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{path}:{lineno}: '{key}' must be a string, got {type(value).__name__}")
    return value


def read_corpus(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in jsonl_records(path):
        doc_id = _record_id(obj, path, lineno)
        if doc_id in corpus:
            raise ValueError(
                f"{path}:{lineno}: duplicate _id {doc_id!r} (first at line {first_line[doc_id]})"
            )
        text = _string_field(obj, "text", path, lineno, required=True)
        title = _string_field(obj, "title", path, lineno, required=False)
        if not text.strip() and not title.strip():
            raise ValueError(f"{path}:{lineno}: document {doc_id!r} has neither title nor text")
        corpus[doc_id] = {"title": title, "text": text}
        first_line[doc_id] = lineno
    return corpus


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in jsonl_records(path):
        qid = _record_id(obj, path, lineno)
        if qid in queries:
            raise ValueError(
                f"{path}:{lineno}: duplicate _id {qid!r} (first at line {first_line[qid]})"
            )
        text = _string_field(obj, "text", path, lineno, required=True)
        if not text.strip():
            raise ValueError(f"{path}:{lineno}: query {qid!r} has empty text")
        queries[qid] = text
        first_line[qid] = lineno
    return queries


def _parse_grade(raw: str, path: Path, lineno: int) -> int:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {raw!r} is not an integer") from None
    if not value.is_integer():
        raise ValueError(f"{path}:{lineno}: score {raw!r} is not an integer")
    return int(value)


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {doc id: grade}. The first line is a header when its score column is not a
    number (BEIR files always have one: ``query-id corpus-id score``)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open("r", encoding="utf-8") as f:
        first = True
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if first:
                first = False
                if not _is_number(cols[-1].strip()):
                    continue  # header
            if len(cols) != 3:
                raise ValueError(
                    f"{path}:{lineno}: expected 3 tab-separated columns "
                    f"(query-id, corpus-id, score), got {len(cols)}: {line[:80]!r}"
                )
            qid, doc_id, raw = (c.strip() for c in cols)
            if not qid or not doc_id:
                raise ValueError(f"{path}:{lineno}: empty query-id or corpus-id")
            grade = _parse_grade(raw, path, lineno)
            judged = qrels.setdefault(qid, {})
            if doc_id in judged and judged[doc_id] != grade:
                raise ValueError(
                    f"{path}:{lineno}: ({qid!r}, {doc_id!r}) judged twice with "
                    f"different scores ({judged[doc_id]} and {grade})"
                )
            judged[doc_id] = grade
    return qrels


def load_beir(dataset_dir: str | Path, split: str) -> BeirDataset:
    """Read a BEIR dataset folder's corpus, the queries judged in ``split`` and its qrels."""
    root = Path(dataset_dir)
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for p in (corpus_path, queries_path, qrels_path):
        if not p.is_file():
            splits = (
                sorted(q.stem for q in (root / "qrels").glob("*.tsv"))
                if (root / "qrels").is_dir()
                else []
            )
            hint = f" (splits present: {', '.join(splits)})" if p == qrels_path and splits else ""
            raise FileNotFoundError(f"BEIR dataset file {p} not found{hint}")
    corpus = read_corpus(corpus_path)
    all_queries = read_queries(queries_path)
    qrels = read_qrels(qrels_path)
    unknown = [q for q in qrels if q not in all_queries]
    if unknown:
        raise ValueError(
            f"{qrels_path}: {len(unknown)} query id(s) not in {queries_path.name}, "
            f"e.g. {unknown[:5]}"
        )
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    missing = {d for judged in qrels.values() for d in judged if d not in corpus}
    return BeirDataset(
        name=root.name,
        split=split,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        source_dir=root,
        missing_docs=missing,
    )


# --------------------------------------------------------------------------------------------
# Export as files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100
# Names Windows will not create, whatever the extension.
_RESERVED = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        *(f"COM{i}" for i in range(1, 10)),
        *(f"LPT{i}" for i in range(1, 10)),
    }
)


def _hashed(doc_id: str, base: str) -> str:
    digest = hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:12]
    base = base.strip("._-")[: _MAX_STEM - 14]
    return f"{base}__{digest}" if base else f"doc__{digest}"


def safe_file_stems(doc_ids: Iterable[str]) -> dict[str, str]:
    """doc id -> a file stem that is safe on any file system, unique even case-insensitively.

    An id made only of ``[A-Za-z0-9._-]`` (not starting with ``.`` or ``-``, at most 100
    characters, not a reserved device name) is its own stem; any other id becomes its
    sanitised form plus ``__`` and 12 hex digits of its sha1, as do ids that collide with
    another id when case is ignored. Deterministic: it depends only on the set of ids.
    """
    ids = list(dict.fromkeys(doc_ids))
    stems: dict[str, str] = {}
    for doc_id in ids:
        base = _UNSAFE.sub("_", doc_id)
        plain = (
            base == doc_id
            and len(base) <= _MAX_STEM
            and not base.startswith((".", "-"))
            and base.split(".")[0].upper() not in _RESERVED
        )
        stems[doc_id] = base if plain else _hashed(doc_id, base)
    groups: dict[str, list[str]] = {}
    for doc_id, stem in stems.items():
        groups.setdefault(stem.casefold(), []).append(doc_id)
    for members in groups.values():
        if len(members) > 1:
            for doc_id in members:
                if stems[doc_id] == doc_id:
                    stems[doc_id] = _hashed(doc_id, doc_id)
    seen: dict[str, str] = {}
    for doc_id, stem in stems.items():
        other = seen.setdefault(stem.casefold(), doc_id)
        if other != doc_id:
            raise ValueError(
                f"document ids {other!r} and {doc_id!r} map to the same file name {stem!r}"
            )
    return stems


def markdown_for(title: str, text: str) -> bytes:
    """``# {title}\\n\\n{text}\\n`` as UTF-8 (title on one line; no heading without a title)."""
    title = " ".join(title.split())
    body = text.strip()
    doc = f"# {title}\n\n{body}\n" if title else f"{body}\n"
    return doc.encode("utf-8")


def export_corpus_as_files(
    ds: BeirDataset, out_dir: str | Path, *, prune: bool = True, stats: dict[str, int] | None = None
) -> dict[str, str]:
    """Write each corpus document to ``out_dir/<safe id>.md``; return file stem -> doc id.

    Bytes are deterministic, and a file whose bytes are already right is not rewritten (its
    mtime stays, so the pipeline sees no change). Files are replaced atomically. With
    ``prune``, other ``*.md`` files directly in ``out_dir`` (documents no longer in the
    corpus) are removed. ``stats``, if given, receives written/unchanged/removed counts.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = safe_file_stems(ds.corpus)
    written = unchanged = removed = 0
    for doc_id, doc in ds.corpus.items():
        data = markdown_for(doc.get("title", ""), doc["text"])
        path = out / f"{stems[doc_id]}.md"
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                unchanged += 1
                continue
        except FileNotFoundError:
            pass
        tmp = out / f".{stems[doc_id]}.md.tmp"  # dot file: discovery never picks it up
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written += 1
    mapping = {stem: doc_id for doc_id, stem in stems.items()}
    if prune:
        for path in out.glob("*.md"):
            if path.stem not in mapping and path.is_file():
                path.unlink()
                removed += 1
    if stats is not None:
        stats.update(written=written, unchanged=unchanged, removed=removed)
    return mapping


def doc_id_for_uri(uri: str, mapping: Mapping[str, str]) -> str | None:
    """The document id of an exported file's path or URI (None for any other file)."""
    name = PurePath(uri.rstrip("/")).name
    if not name.endswith(".md"):
        return None
    return mapping.get(name[: -len(".md")])

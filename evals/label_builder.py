"""Graded qrels from human judgements and serving feedback.

Inputs:

* judgements, CSV (header) or JSONL: ``query_id``, ``doc``, and ``grade`` (0, 1, 2) or
  ``thumbs`` (up / down, +1 / -1, 👍 / 👎); an optional ``query`` column carries the text;
* click logs, JSONL: ``{"query": ..., "doc": ..., "position": 3}`` (``clicked``/``uri`` are
  accepted for ``doc``; ``query_id`` if the logger knows it);
* serving feedback (``POST /v1/feedback``, read from the serving database): relevant -> 2,
  not relevant -> 0 (majority per query text and file; ``add_feedback``).

Rule, per (query, document), first that applies:

1. an explicit ``grade`` wins (several: the last one in file order);
2. thumbs: more ups than downs -> 1 (2 when there are at least ``strong_thumbs`` ups and no
   down); otherwise (a down outvotes or ties the ups) -> 0: an explicit thumbs-down is a
   judged non-relevant document, which clicks cannot overturn;
3. clicks: at least ``min_clicks`` (default 2) clicks -> 1; a single click is noise and leaves
   the document unjudged. Positions are recorded (mean click position) but do not change grades.

Queries from click logs are matched to judged queries by normalized text; unknown texts get the
id ``click-<sha1(text)[:10]>``. The result is written as extended JSONL (queries with at least
one grade > 0) and/or a BEIR qrels TSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from evals.goldsets import GoldQuery, write_gold_jsonl

_UP = {"up", "+1", "1", "yes", "true", "👍", "thumbs_up", "good"}
_DOWN = {"down", "-1", "no", "false", "👎", "thumbs_down", "bad"}


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _records(path: Path) -> Iterable[tuple[int, dict]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield (
                    i,
                    {
                        k.strip(): (v.strip() if isinstance(v, str) else v)
                        for k, v in row.items()
                        if k
                    },
                )
        return
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object")
            yield i, obj


class LabelBuilder:
    def __init__(self, *, min_clicks: int = 2, strong_thumbs: int = 3):
        self.min_clicks = min_clicks
        self.strong_thumbs = strong_thumbs
        self.texts: dict[str, str] = {}  # query id -> text
        self.ids_by_text: dict[str, str] = {}  # normalized text -> query id
        self.grades: dict[tuple[str, str], int] = {}
        self.thumbs: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.clicks: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.feedback: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.types: dict[str, Counter[str]] = defaultdict(Counter)

    def _qid(self, qid: str | None, text: str | None) -> str:
        if qid:
            if text:
                self.texts.setdefault(qid, text)
                self.ids_by_text.setdefault(_norm(text), qid)
            return qid
        if not text:
            raise ValueError("a record needs query_id or query")
        key = _norm(text)
        if key not in self.ids_by_text:
            new = f"click-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
            self.ids_by_text[key] = new
            self.texts.setdefault(new, text)
        return self.ids_by_text[key]

    def _key(
        self, path: Path, line: int, r: dict, doc_fields: tuple[str, ...], what: str
    ) -> tuple[str, str]:
        """(query id, doc) of one record; ValueError naming the file and line."""
        doc = str(next((r[f] for f in doc_fields if r.get(f)), "")).strip()
        if not doc:
            raise ValueError(f"{path}:{line}: missing {what}")
        try:
            qid = self._qid(str(r.get("query_id") or "") or None, r.get("query") or None)
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: {exc}") from None
        return qid, doc

    def add_judgements(self, path: str | Path) -> LabelBuilder:
        path = Path(path)
        for line, r in _records(path):
            qid, doc = self._key(path, line, r, ("doc", "doc_id"), "'doc'")
            grade, thumbs = r.get("grade"), r.get("thumbs")
            if grade not in (None, ""):
                try:
                    g = int(float(grade))
                except (TypeError, ValueError):
                    raise ValueError(f"{path}:{line}: grade {grade!r} is not 0, 1 or 2") from None
                if g not in (0, 1, 2):
                    raise ValueError(f"{path}:{line}: grade {grade!r} is not 0, 1 or 2")
                self.grades[(qid, doc)] = g
            elif thumbs not in (None, ""):
                t = str(thumbs).strip().lower()
                if t in _UP:
                    self.thumbs[(qid, doc)].append(1)
                elif t in _DOWN:
                    self.thumbs[(qid, doc)].append(-1)
                else:
                    raise ValueError(f"{path}:{line}: thumbs {thumbs!r} is neither up nor down")
            else:
                raise ValueError(f"{path}:{line}: needs 'grade' or 'thumbs'")
        return self

    def add_clicks(self, path: str | Path) -> LabelBuilder:
        path = Path(path)
        for line, r in _records(path):
            qid, doc = self._key(path, line, r, ("doc", "clicked", "uri"), "clicked 'doc'")
            pos = r.get("position")
            self.clicks[(qid, doc)].append(int(pos) if pos not in (None, "") else 0)
        return self

    def add_feedback(self, rows: Iterable[dict]) -> LabelBuilder:
        """Serving feedback (``serving.querylog.QueryLog.feedback_rows``): per (query text,
        judged file), more ``relevant`` than ``not_relevant`` judgements -> grade 2, otherwise
        0 (a judged non-relevant file). Files are keyed by their path in the source, as gold
        sets name them; queries by normalized text (``fb-<sha1>``), typed by the query type
        serving logged (the most frequent). Only searches (not similar) carry a query text."""
        for r in rows:
            if r.get("op", "search") != "search" or not r.get("path") or not r.get("query"):
                continue
            key = _norm(r["query"])
            qid = self.ids_by_text.get(key)
            if qid is None:
                qid = f"fb-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
                self.ids_by_text[key] = qid
                self.texts.setdefault(qid, r["query"])
            if r.get("query_type"):
                self.types[qid][r["query_type"]] += 1
            vote = 1 if r.get("judgement") == "relevant" else -1
            self.feedback[(qid, str(r["path"]))].append(vote)
        return self

    def qrels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        keys = set(self.grades) | set(self.thumbs) | set(self.clicks) | set(self.feedback)
        for qid, doc in sorted(keys):
            if (qid, doc) in self.grades:
                g = self.grades[(qid, doc)]
            elif (qid, doc) in self.feedback:
                votes = self.feedback[(qid, doc)]
                g = 2 if votes.count(1) > votes.count(-1) else 0
            elif (qid, doc) in self.thumbs:
                votes = self.thumbs[(qid, doc)]
                ups, downs = votes.count(1), votes.count(-1)
                g = 0 if downs >= ups else (2 if ups >= self.strong_thumbs and not downs else 1)
            elif len(self.clicks[(qid, doc)]) >= self.min_clicks:
                g = 1
            else:
                continue
            out[qid][doc] = g
        return dict(out)

    def gold_queries(self) -> list[GoldQuery]:
        out = []
        for qid, judged in self.qrels().items():
            if any(g > 0 for g in judged.values()) and qid in self.texts:
                qtype = self.types[qid].most_common(1)[0][0] if self.types.get(qid) else None
                out.append(
                    GoldQuery(
                        query_id=qid, query=self.texts[qid], query_type=qtype, relevant=judged
                    )
                )
        return out

    def write(self, jsonl: str | Path | None = None, qrels_tsv: str | Path | None = None) -> None:
        if jsonl:
            write_gold_jsonl(jsonl, self.gold_queries())
        if qrels_tsv:
            p = Path(qrels_tsv)
            p.parent.mkdir(parents=True, exist_ok=True)
            lines = ["query-id\tcorpus-id\tscore"] + [
                f"{q}\t{d}\t{g}" for q, judged in self.qrels().items() for d, g in judged.items()
            ]
            p.write_text("\n".join(lines) + "\n", encoding="utf-8")

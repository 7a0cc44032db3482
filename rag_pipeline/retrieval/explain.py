"""Why did a unit match? Term matching between a query and a snapshot row's evidence.

Deliberately simple and transparent: lowercase word tokens, English stopwords removed, a light
suffix-stripping stemmer (so "foxes" matches "fox" and "running" matches "run"). It explains a
hit; it does not rank one (BM25 in LanceDB does that with its own tokenizer).
"""

# The word lists are written as strings and split: easier to read and edit than literals.
# ruff: noqa: SIM905

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()
)

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _undouble(stem: str) -> str:
    # "runn" -> "run", "stopp" -> "stop" (but keep "ll", "ss", "zz": "fall", "pass", "buzz")
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz" and stem[-1].isalpha():
        return stem[:-1]
    return stem


@lru_cache(maxsize=1 << 16)  # explaining a hit stems every word of its texts: words recur
def stem(word: str) -> str:
    """Light English stemmer: strips ies/es/s, ing/ed, ly; then a final silent 'e'.

    Both the query and the text go through it, so it only has to be consistent, not correct:
    "dated", "dates", "dating" and "date" all become "dat".
    """
    w = word.lower()
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses") or (
        w.endswith("es") and len(w) > 4 and (w[-3] in "sxz" or w[-4:-2] in ("ch", "sh"))
    ):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        w = w[:-1]
    if w.endswith("ing") and len(w) > 5:
        w = _undouble(w[:-3])
    elif w.endswith("ed") and len(w) > 4:
        w = _undouble(w[:-2])
    elif w.endswith("ly") and len(w) > 4:
        w = w[:-2]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def tokens(text: str) -> list[str]:
    """Lowercased word tokens without stopwords (single letters dropped, digits kept)."""
    return [
        t
        for t in (m.lower() for m in _TOKEN.findall(text or ""))
        if t not in STOPWORDS and (len(t) > 1 or t.isdigit())
    ]


def query_terms(query: str) -> list[str]:
    """Distinct query tokens, in query order."""
    return list(_query_terms(query))


@lru_cache(maxsize=1024)  # one query is matched against every text of every hit
def _query_terms(query: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tokens(query)))


class QueryMatcher:
    """One query's terms, matched against many texts (a search's hits): each text is scanned
    once per matcher, and only its words that begin like a query stem are stemmed (a stem is
    the whole word or keeps its first two letters, so no other word can share it)."""

    def __init__(self, query: str):
        self.query = query
        self.terms = _query_terms(query)
        self._term_stems = [stem(t) for t in self.terms]
        self._stems = frozenset(self._term_stems)
        self._heads = frozenset(s[:2] for s in self._stems)
        # In lowercased ASCII text: the words that begin like a query stem (the regex engine
        # skips the others twice as fast as a word-by-word check).
        ascii_heads = sorted(h for h in self._heads if h.isascii())
        self._ascii_candidates = (
            re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, ascii_heads)) + r")[a-z0-9]*")
            if ascii_heads
            else None
        )
        self._matched: dict[str, list[str]] = {}  # per text scanned
        self._offsets: dict[str, int | None] = {}

    def _is_match(self, word: str) -> bool:  # word: lowercased
        return (
            word[:2] in self._heads
            and word not in STOPWORDS
            and (len(word) > 1 or word.isdigit())
            and stem(word) in self._stems
        )

    def matched_terms(self, text: str) -> list[str]:
        """The query's terms (lowercased, query order, distinct) whose stem occurs in ``text``."""
        if not self.terms or not text:
            return []
        out = self._matched.get(text)
        if out is None:
            found = {stem(w) for w in self._candidate_words(text) if self._is_match(w)}
            out = [t for t, st in zip(self.terms, self._term_stems, strict=True) if st in found]
            self._matched[text] = out
        return list(out)

    def first_match_offset(self, text: str) -> int | None:
        """Character offset in ``text`` of the first word whose stem matches a query term."""
        if not self.terms or not text:
            return None
        if text not in self._offsets:
            found: Iterator[int]
            if not text.isascii():
                found = (
                    m.start() for m in _TOKEN.finditer(text) if self._is_match(m.group().lower())
                )
            elif self._ascii_candidates is not None:
                found = (
                    m.start()
                    for m in self._ascii_candidates.finditer(text.lower())
                    if self._is_match(m.group())
                )
            else:
                found = iter(())
            self._offsets[text] = next(found, None)
        return self._offsets[text]

    def _candidate_words(self, text: str) -> set[str]:
        """Lowercased words of ``text`` that may match (a superset of the matching ones)."""
        if not text.isascii():  # lowercasing may re-split it: word by word, as ``tokens``
            return {m.lower() for m in set(_TOKEN.findall(text))}
        if self._ascii_candidates is None:
            return set()
        return set(self._ascii_candidates.findall(text.lower()))


def matched_terms(query: str, text: str) -> list[str]:
    """The query's terms (lowercased, query order, distinct) whose stem occurs in ``text``."""
    return QueryMatcher(query).matched_terms(text)


def first_match_offset(query: str, text: str) -> int | None:
    """Character offset in ``text`` of the first word whose stem matches a query term."""
    return QueryMatcher(query).first_match_offset(text)


def snippet(text: str, query: str, width: int = 200, *, matcher: QueryMatcher | None = None) -> str:
    """A window of about ``width`` characters of ``text`` around its first match of ``query``.

    Without a match it is the start of the text. Cuts land on whitespace where possible and are
    marked with an ellipsis. ``matcher``: the query's, when matching it against many texts.
    """
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    pos = (matcher or QueryMatcher(query)).first_match_offset(text)
    start = 0 if pos is None else max(0, pos - width // 3)
    end = min(len(text), start + width)
    start = max(0, end - width) if end == len(text) else start
    if start > 0:
        space = text.find(" ", start, pos if pos is not None else start + 30)
        if space != -1:
            start = space + 1
    if end < len(text):
        space = text.rfind(" ", max(start + 1, end - 30), end)
        if space != -1:
            end = space
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


def parse_evidence(evidence: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A snapshot row's ``evidence`` column (JSON list) as a list of dicts ([] if empty/bad)."""
    if evidence is None or evidence == "":
        return []
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except json.JSONDecodeError:
            return []
    if not isinstance(evidence, list):
        return []
    return [e for e in evidence if isinstance(e, dict)]


def matched_evidence(
    evidence: str | list[dict[str, Any]] | None,
    query: str,
    limit: int | None = None,
    *,
    matcher: QueryMatcher | None = None,
) -> list[dict[str, Any]]:
    """Evidence items whose text matches the query, best first.

    ``evidence`` is a snapshot row's evidence JSON list of ``{kind, field, ordinal, text,
    confidence, run_id}``. Each returned item is a copy with ``matched_terms`` added, ordered by
    the number of matched terms, then confidence (both descending), then original position.
    ``matcher``: the query's, when matching it against many texts.
    """
    matcher = matcher or QueryMatcher(query)
    scored = []
    for pos, item in enumerate(parse_evidence(evidence)):
        terms = matcher.matched_terms(str(item.get("text") or ""))
        if not terms:
            continue
        try:
            conf = float(item.get("confidence") or 0.0)
        except (TypeError, ValueError):
            conf = 0.0
        scored.append((-len(terms), -conf, pos, {**item, "matched_terms": terms}))
    scored.sort(key=lambda s: s[:3])
    out = [s[3] for s in scored]
    return out if limit is None else out[:limit]

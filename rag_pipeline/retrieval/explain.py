"""Why did a unit match? Term matching between a query and a snapshot row's evidence.

Deliberately simple and transparent: lowercase word tokens, English stopwords removed, a light
suffix-stripping stemmer (so "foxes" matches "fox" and "running" matches "run"). It explains a
hit; it does not rank one (BM25 in LanceDB does that with its own tokenizer).
"""

from __future__ import annotations

import json
import re
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
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("es") and len(w) > 4 and (w[-3] in "sxz" or w[-4:-2] in ("ch", "sh")):
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
    return [t for t in (m.lower() for m in _TOKEN.findall(text or ""))
            if t not in STOPWORDS and (len(t) > 1 or t.isdigit())]


def query_terms(query: str) -> list[str]:
    """Distinct query tokens, in query order."""
    return list(dict.fromkeys(tokens(query)))


def matched_terms(query: str, text: str) -> list[str]:
    """The query's terms (lowercased, query order, distinct) whose stem occurs in ``text``."""
    terms = query_terms(query)
    if not terms or not text:
        return []
    text_stems = {stem(t) for t in tokens(text)}
    return [t for t in terms if stem(t) in text_stems]


def first_match_offset(query: str, text: str) -> int | None:
    """Character offset in ``text`` of the first word whose stem matches a query term."""
    stems = {stem(t) for t in query_terms(query)}
    if not stems or not text:
        return None
    for m in _TOKEN.finditer(text):
        w = m.group(0).lower()
        if w not in STOPWORDS and stem(w) in stems:
            return m.start()
    return None


def snippet(text: str, query: str, width: int = 200) -> str:
    """A window of about ``width`` characters of ``text`` around its first match of ``query``.

    Without a match it is the start of the text. Cuts land on whitespace where possible and are
    marked with an ellipsis.
    """
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    pos = first_match_offset(query, text)
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


def matched_evidence(evidence: str | list[dict[str, Any]] | None, query: str,
                     limit: int | None = None) -> list[dict[str, Any]]:
    """Evidence items whose text matches the query, best first.

    ``evidence`` is a snapshot row's evidence JSON list of ``{kind, field, ordinal, text,
    confidence, run_id}``. Each returned item is a copy with ``matched_terms`` added, ordered by
    the number of matched terms, then confidence (both descending), then original position.
    """
    scored = []
    for pos, item in enumerate(parse_evidence(evidence)):
        terms = matched_terms(query, str(item.get("text") or ""))
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

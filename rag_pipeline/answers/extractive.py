"""Extractive answers: the evidence's own sentences, chosen by MMR and cited, or a refusal when
the evidence is weak.

Each sentence's relevance is ``SIM_WEIGHT * cosine(question, sentence) + (1 - SIM_WEIGHT) *
shared question terms``; MMR picks up to three among those near the best, trading relevance
(plus question terms not yet covered) against redundancy. The evidence score is
``SIM_WEIGHT * best chosen similarity + (1 - SIM_WEIGHT) * coverage`` (coverage: the share of
the question's content terms found in the chosen sentences). Below the threshold the answer is
a refusal. The default threshold, ``REFUSAL_THRESHOLD``, was calibrated on the demo golden QA
(``rag_pipeline/demo/data/golden_qa.jsonl``, docs/evals.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from rag_pipeline.answers.models import Answer, AnswerSentence, Citation, Evidence
from rag_pipeline.retrieval.explain import stem, tokens

# Embeds texts: L2-normalised rows (the MV model's ``encode``).
Embed = Callable[[list[str]], np.ndarray]

REFUSAL_TEXT = "There is not enough evidence in your documents to answer this question."
REFUSAL_REASON = "not enough evidence in your documents to answer"
# Calibrated on the demo golden QA (`rag-pipeline eval qa --threshold 0`, docs/evals.md): the
# answerable questions score 0.62 and up, the unanswerable ones 0.49 at most.
REFUSAL_THRESHOLD = 0.55
SIM_WEIGHT = 0.6
MMR_LAMBDA = 0.7  # relevance vs redundancy
MAX_SENTENCES = 3
# A sentence this far below the best one adds noise rather than an answer.
RELEVANCE_MARGIN = 0.15
MIN_WORDS = 4

# Question words that carry no content (on top of the retrieval stopwords).
QUESTION_FILLERS = frozenset(
    [
        "long",
        "much",
        "many",
        "often",
        "get",
        "make",
        "use",
        "need",
        "tell",
        "know",
        "way",
        "best",
        "kind",
        "type",
        "should",
        "could",
        "would",
        "whats",
    ]
)
# Text addressed to a model rather than a reader (a prompt injection): never quoted as an answer.
INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules)\b"
    r"|\b(ai|language model|assistant|chatbot|llm)\b.{0,40}\b(reading|must|should)\b"
    r"|\bsystem prompt\b|\byou are now\b"
    # What a chunk cut mid-sentence keeps of one (overlapping chunks start anywhere).
    r"|\b(previous|prior|above)\s+(instructions?|prompts?)\b"
    r"|\banswer\s+(every|each|all|any)\s+questions?\s+with\b",
    re.IGNORECASE | re.DOTALL,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n")


def looks_like_injection(text: str) -> bool:
    return bool(INJECTION.search(text))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``: split after . ! ? and at blank lines; a
    single line break ends a sentence only after a short unpunctuated line (a heading, a list
    item), since PDF and plain text wrap lines inside sentences."""
    spans: list[tuple[int, int, bool]] = []  # (start, end, ended by a lone line break)
    pos = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m is not None else len(text)
        raw = text[pos:end]
        lead = len(raw) - len(raw.lstrip())
        s, e = pos + lead, pos + len(raw.rstrip())
        lone_break = m is not None and m.group().strip(" \t\r") == "\n"
        if e > s:
            spans.append((s, e, lone_break))
        elif spans and not lone_break:
            spans[-1] = (spans[-1][0], spans[-1][1], False)
        if m is not None:
            pos = m.end()
    merged: list[tuple[int, int]] = []
    joins = False
    for s, e, lone_break in spans:
        if joins and merged:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
        piece = text[merged[-1][0] : merged[-1][1]]
        # Wrapped inside a sentence: the piece ends without punctuation and is a long line or
        # runs on in lower case.
        nxt = text[e:].lstrip()[:1]
        joins = (
            lone_break
            and piece[-1:] not in (".", "!", "?", ":")
            and (len(piece.split()) > 8 or nxt.islower())
        )
    return merged


def content_terms(text: str) -> set[str]:
    """Stemmed content words (retrieval stopwords and question fillers left out)."""
    return {stem(t) for t in tokens(text) if t not in QUESTION_FILLERS}


class _Candidate:
    __slots__ = ("end", "ev", "order", "start", "terms", "text")

    def __init__(self, ev: Evidence, start: int, end: int, order: int):
        self.ev, self.start, self.end, self.order = ev, start, end, order
        self.text = " ".join(ev.text[start:end].split())
        self.terms = content_terms(self.text)


def candidates(evidence: Sequence[Evidence]) -> list[_Candidate]:
    out: list[_Candidate] = []
    for ev in evidence:
        # A document's title and its section headings name a topic; they answer nothing.
        headings = {" ".join(h.lower().split()) for h in (ev.title, ev.section) if h}
        for s, e in split_sentences(ev.text):
            c = _Candidate(ev, s, e, len(out))
            if (
                len(c.text.split()) >= MIN_WORDS
                and c.text.strip("#_* ").lower() not in headings
                and not looks_like_injection(c.text)
            ):
                out.append(c)
    return out


def citation(ev: Evidence, start: int, end: int) -> Citation:
    return Citation(
        n=ev.n,
        unit_id=ev.unit_id,
        asset_id=ev.asset_id,
        source=ev.source,
        path=ev.path,
        title=ev.title,
        page=ev.page,
        section=ev.section,
        text=ev.text[start:end],
        start=start,
        end=end,
    )


def refusal(threshold: float, score: float = 0.0) -> Answer:
    return Answer(
        answer=REFUSAL_TEXT,
        refused=True,
        refusal_reason=REFUSAL_REASON,
        mode="extractive",
        evidence_score=round(score, 4),
        threshold=threshold,
    )


def extractive_answer(
    question: str,
    evidence: Sequence[Evidence],
    embed: Embed,
    *,
    threshold: float = REFUSAL_THRESHOLD,
    question_vector: np.ndarray | None = None,
    max_sentences: int = MAX_SENTENCES,
) -> Answer:
    """The cited sentences of ``evidence`` that answer ``question``, or a refusal."""
    cands = candidates(evidence)
    if not cands:
        return refusal(threshold)
    q = question_vector if question_vector is not None else embed([question])[0]
    vecs = embed([c.text for c in cands])
    rel = vecs @ np.asarray(q, dtype=np.float32)
    q_terms = content_terms(question)

    # A sentence's relevance: its meaning (cosine) and the question terms it shares.
    n_q = max(len(q_terms), 1)
    shared = np.array([len(c.terms & q_terms) / n_q for c in cands], dtype=np.float32)
    combined = SIM_WEIGHT * rel + (1 - SIM_WEIGHT) * shared
    top = float(combined.max())
    pool = [i for i in range(len(cands)) if combined[i] >= top - RELEVANCE_MARGIN]
    chosen: list[int] = []
    covered: set[str] = set()
    while pool and len(chosen) < max_sentences:

        def mmr(i: int, covered: set[str] = covered) -> float:
            redundancy = max((float(vecs[i] @ vecs[j]) for j in chosen), default=0.0)
            # Question terms no chosen sentence has yet: cover the whole question.
            new_terms = len((cands[i].terms & q_terms) - covered) / n_q
            relevance = float(combined[i]) + 0.2 * new_terms
            return MMR_LAMBDA * relevance - (1 - MMR_LAMBDA) * redundancy

        i = max(pool, key=mmr)
        pool.remove(i)
        if chosen and (cands[i].terms & q_terms) <= covered and combined[i] < top - 0.05:
            continue  # adds neither a question term nor close meaning
        chosen.append(i)
        covered |= cands[i].terms & q_terms

    coverage = len(covered) / len(q_terms) if q_terms else 0.0
    best = max(float(rel[i]) for i in chosen)
    score = SIM_WEIGHT * best + (1 - SIM_WEIGHT) * coverage
    if score < threshold:
        return refusal(threshold, score)

    # Reading order: sources in hit order, sentences in text order.
    chosen.sort(key=lambda i: (cands[i].ev.n, cands[i].start))
    sentences = [AnswerSentence(text=cands[i].text, citations=[cands[i].ev.n]) for i in chosen]
    cites = [citation(cands[i].ev, cands[i].start, cands[i].end) for i in chosen]
    return Answer(
        answer=" ".join(f"{s.text} [{s.citations[0]}]" for s in sentences),
        refused=False,
        mode="extractive",
        sentences=sentences,
        citations=cites,
        evidence_score=round(score, 4),
        threshold=threshold,
    )

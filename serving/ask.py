"""Questions answered from the snapshot: search as the caller, read the hits' unit texts, and
let ``rag_pipeline.answers`` compose a cited answer or refuse. ``POST /v1/ask``, the nightly
eval and ``rag-pipeline eval qa`` all go through ``Asker``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag_pipeline.answers import (
    Answer,
    Evidence,
    GenerationError,
    Generator,
    build_messages,
    extractive_answer,
    finish_generated,
    resolve_mode,
)
from rag_pipeline.answers.extractive import REFUSAL_THRESHOLD
from serving.models import AskRequest, AskResponse, SearchRequest, SearchResponse
from serving.principal import Principal
from serving.searcher import Searcher


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def unit_text(row: dict[str, Any]) -> str:
    """What an answer may quote of a unit: a chunk's body; an image's caption and OCR lines."""
    body = (row.get("body") or "").strip()
    if body:
        return str(row.get("body"))
    return "\n".join(t for t in (row.get("caption"), row.get("ocr")) if t and t.strip())


def _locator(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        loc = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return loc if isinstance(loc, dict) else {}


@dataclass
class Prepared:
    """A question's evidence and its extractive answer: what streaming starts from."""

    req: AskRequest
    search: SearchResponse
    evidence: list[Evidence]
    extractive: Answer
    t_start: float


def evidence_for(
    searcher: Searcher, search: SearchResponse, principal: Principal
) -> list[Evidence]:
    rows = searcher.unit_texts([h.unit_id for h in search.hits], principal)
    out: list[Evidence] = []
    for hit in search.hits:
        row = rows.get(hit.unit_id)
        text = unit_text(row) if row else ""
        if not text:
            continue
        loc = _locator(row.get("locator") if row else None) or hit.locator
        page = loc.get("page")
        out.append(
            Evidence(
                n=len(out) + 1,
                unit_id=hit.unit_id,
                asset_id=hit.asset_id,
                source=hit.source,
                path=hit.path,
                title=hit.title,
                page=page if isinstance(page, int) else None,
                section=loc.get("section") if isinstance(loc.get("section"), str) else None,
                text=text,
            )
        )
    return out


class Asker:
    """Answers over one searcher (the live snapshot's), with an optional generator."""

    def __init__(
        self, generator: Generator | None = None, threshold: float = REFUSAL_THRESHOLD
    ) -> None:
        self.generator = generator
        self.threshold = threshold

    def prepare(self, searcher: Searcher, req: AskRequest, principal: Principal) -> Prepared:
        t0 = time.perf_counter()
        search = searcher.search(
            # Chunks, not files: the answer may sit in a later chunk of the best file.
            SearchRequest(query=req.question, k=req.k, filters=req.filters, collapse=False),
            principal,
        )
        t_ev = time.perf_counter()
        evidence = evidence_for(searcher, search, principal)
        search.timings_ms["evidence"] = _ms(t_ev)
        t_ex = time.perf_counter()
        extractive = extractive_answer(
            req.question,
            evidence,
            self._embed(searcher),
            threshold=self.threshold,
            question_vector=searcher.embed_query(req.question) if evidence else None,
        )
        search.timings_ms["extractive"] = _ms(t_ex)
        return Prepared(req, search, evidence, extractive, t0)

    @staticmethod
    def _embed(searcher: Searcher) -> Any:
        return searcher.embed_texts  # the query model and its embedding cache

    def mode(self, req: AskRequest) -> str:
        return resolve_mode(req.mode, self.generator)

    def wants_generation(self, p: Prepared) -> bool:
        return (
            self.mode(p.req) == "generative"
            and self.generator is not None
            and not (p.extractive.refused)
        )

    def ask(self, searcher: Searcher, req: AskRequest, principal: Principal) -> AskResponse:
        """The whole answer, generated (when configured and asked for) without streaming."""
        p = self.prepare(searcher, req, principal)
        if not self.wants_generation(p):
            return self.respond(p, self._extractive_only(p))
        return self.generate(p)

    def _extractive_only(self, p: Prepared) -> Answer:
        if p.req.mode == "generative" and self.generator is None:
            return p.extractive.model_copy(update={"fallback": "no generator is configured"})
        return p.extractive

    def generate(self, p: Prepared) -> AskResponse:
        """The generated answer (validated, else the extractive one with ``fallback``)."""
        t0 = time.perf_counter()
        answer = self._generate(p)
        p.search.timings_ms["generate"] = _ms(t0)
        return self.respond(p, answer)

    def _generate(self, p: Prepared) -> Answer:
        assert self.generator is not None
        try:
            text = self.generator.complete(build_messages(p.req.question, p.evidence))
        except GenerationError as exc:
            return finish_generated(None, str(exc), p.evidence, p.extractive)
        return finish_generated(text, None, p.evidence, p.extractive)

    def stream_tokens(self, p: Prepared, cancel: threading.Event) -> Iterator[str]:
        """The generator's token chunks (the caller joins them and calls ``finish``)."""
        assert self.generator is not None
        yield from self.generator.stream(build_messages(p.req.question, p.evidence), cancel)

    def finish(self, p: Prepared, text: str | None, error: str | None) -> AskResponse:
        if not self.wants_generation(p):
            return self.respond(p, self._extractive_only(p))
        return self.respond(p, finish_generated(text, error, p.evidence, p.extractive))

    @staticmethod
    def respond(p: Prepared, answer: Answer) -> AskResponse:
        total = _ms(p.t_start)
        p.search.timings_ms["total"] = total
        return AskResponse(
            answer=answer.answer,
            refused=answer.refused,
            refusal_reason=answer.refusal_reason,
            mode=answer.mode,
            sentences=answer.sentences,
            citations=answer.citations,
            hits=p.search.hits,
            snapshot_id=p.search.snapshot_id,
            latency_ms=total,
            fallback=answer.fallback,
            evidence_score=answer.evidence_score,
            threshold=answer.threshold,
            timings_ms=dict(p.search.timings_ms),
        )

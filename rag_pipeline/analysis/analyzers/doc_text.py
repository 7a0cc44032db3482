"""doc_text analyzer: a document's bytes -> title, chunk and metadata text evidence.

Rule-based and deterministic: the same bytes and settings always give the same evidence,
so ``ANALYZER_REVISION`` must change whenever extraction or chunking output would.
"""

from __future__ import annotations

import re
from dataclasses import replace
from itertools import islice
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from rag_pipeline.analysis.analyzers.chunking import iter_chunks
from rag_pipeline.analysis.analyzers.documents import Section, extract_document
from rag_pipeline.contracts import EvidenceText
from rag_pipeline.errors import NoTextContent

if TYPE_CHECKING:
    from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

# -2: HTML text from a single pass over the tag stream (heading parts joined without the
# spaces the tree walk put between inline tags), and per-document caps on text and chunks.
ANALYZER_REVISION = "doc_text-2"

# Confidence of a title stated by the document (metadata, <title>, "# " heading) versus one
# guessed from its first line or file name.
EXPLICIT_TITLE_CONFIDENCE = 1.0
GUESSED_TITLE_CONFIDENCE = 0.6
METADATA_CONFIDENCE = 0.9

# Metadata fields worth indexing as text, in the order they are written. Producer/creator
# strings ("Microsoft Word", "LaTeX") are not about the content and are left out.
_USEFUL_METADATA = ("author", "subject", "description", "summary", "keywords")


def title_from_filename(name: str) -> str | None:
    """``2024_annual-report.final.pdf`` -> ``2024 annual report final``."""
    words = re.sub(r"[_\-.+]+", " ", PurePath(name).stem).split()
    return " ".join(words) or None


def _cap_chars(sections: list[Section], max_chars: int) -> list[Section]:
    """The sections' first ``max_chars`` characters, in order (the last one cut short)."""
    out: list[Section] = []
    left = max_chars
    for s in sections:
        if left <= 0:
            break
        out.append(s if len(s.text) <= left else replace(s, text=s.text[:left]))
        left -= len(s.text)
    return out


def analyze_document(
    data: bytes,
    media_type: str,
    name: str,
    *,
    chunk_tokens: int,
    chunk_overlap: int,
    max_chars: int | None = None,
    max_chunks: int | None = None,
    tokenizer: ModelTokenizer | None = None,
) -> list[EvidenceText]:
    """Evidence for one document. Raises the ``errors`` classes for bad input.

    A document past ``max_chars`` characters of text or ``max_chunks`` chunks is indexed up to
    the cap, and its last chunk says so: ``truncated`` with the original size in its locator
    (one huge file must not cost the partition minutes of embedding and gigabytes of memory).

    ``tokenizer``: chunk lengths are the MV model's word pieces, the title (which the MV axis
    puts in front of every chunk) included, so no chunk overflows ``chunk_tokens``.
    """
    doc = extract_document(data, media_type, name)
    total_chars = sum(len(s.text) for s in doc.sections)
    sections = doc.sections
    truncated: dict[str, Any] = {}
    if max_chars is not None and total_chars > max_chars:
        sections = _cap_chars(sections, max_chars)
        truncated = {"truncated_by": "max_chars", "limit": max_chars}
    title = doc.title or title_from_filename(name) or ""
    stream = iter_chunks(
        sections,
        max_tokens=chunk_tokens,
        overlap=chunk_overlap,
        tokenizer=tokenizer,
        prefix=title if tokenizer is not None else "",
    )
    if max_chunks is not None:
        chunks = list(islice(stream, max_chunks + 1))
        if len(chunks) > max_chunks:
            chunks = chunks[:max_chunks]
            truncated = {"truncated_by": "max_chunks", "limit": max_chunks}
    else:
        chunks = list(stream)
    if truncated:
        last = chunks[-1]
        locator = {
            **last.locator,
            "truncated": True,
            **truncated,
            "original_chars": total_chars,
            "original_bytes": len(data),
            "indexed_chunks": len(chunks),
        }
        chunks[-1] = replace(last, locator=locator)
    if not chunks:  # defensive: every non-blank section has tokens; never report nothing
        raise NoTextContent(f"{name}: no tokens to index")

    evidence: list[EvidenceText] = []
    if doc.title:
        evidence.append(
            EvidenceText(
                kind="title",
                ordinal=0,
                text=doc.title,
                confidence=(
                    EXPLICIT_TITLE_CONFIDENCE if doc.title_explicit else GUESSED_TITLE_CONFIDENCE
                ),
                locator={"source": doc.title_source or "first_line"},
            )
        )
    else:
        fallback = title_from_filename(name)
        if fallback:
            evidence.append(
                EvidenceText(
                    kind="title",
                    ordinal=0,
                    text=fallback,
                    confidence=GUESSED_TITLE_CONFIDENCE,
                    locator={"source": "filename"},
                )
            )

    for chunk in chunks:
        evidence.append(
            EvidenceText(
                kind="chunk",
                ordinal=chunk.ordinal,
                text=chunk.text,
                confidence=1.0,
                locator=dict(chunk.locator),
            )
        )

    lines = [
        f"{key}: {doc.metadata[key]}"
        for key in _USEFUL_METADATA
        if doc.metadata.get(key, "").strip()
    ]
    if lines:
        evidence.append(
            EvidenceText(
                kind="metadata",
                ordinal=0,
                text="\n".join(lines),
                confidence=METADATA_CONFIDENCE,
                locator={
                    "source": "document_metadata",
                    "fields": [k for k in _USEFUL_METADATA if doc.metadata.get(k, "").strip()],
                },
            )
        )
    return evidence

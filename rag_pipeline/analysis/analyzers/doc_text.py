"""doc_text analyzer: a document's bytes -> title, chunk and metadata text evidence.

Rule-based and deterministic: the same bytes and settings always give the same evidence,
so ``ANALYZER_REVISION`` must change whenever extraction or chunking output would.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import TYPE_CHECKING

from rag_pipeline.analysis.analyzers.chunking import chunk_sections
from rag_pipeline.analysis.analyzers.documents import extract_document
from rag_pipeline.contracts import EvidenceText
from rag_pipeline.errors import NoTextContent

if TYPE_CHECKING:
    from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

ANALYZER_REVISION = "doc_text-1"

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


def analyze_document(
    data: bytes,
    media_type: str,
    name: str,
    *,
    chunk_tokens: int,
    chunk_overlap: int,
    tokenizer: ModelTokenizer | None = None,
) -> list[EvidenceText]:
    """Evidence for one document. Raises the ``errors`` classes for bad input.

    ``tokenizer``: chunk lengths are the MV model's word pieces, the title (which the MV axis
    puts in front of every chunk) included, so no chunk overflows ``chunk_tokens``."""
    doc = extract_document(data, media_type, name)
    title = doc.title or title_from_filename(name) or ""
    chunks = chunk_sections(
        doc.sections,
        max_tokens=chunk_tokens,
        overlap=chunk_overlap,
        tokenizer=tokenizer,
        prefix=title if tokenizer is not None else "",
    )
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

"""A caption result as catalog evidence: one caption, one tag per tag, and content tags."""

from __future__ import annotations

from rag_pipeline.analysis.analyzers.vlm.schema import CaptionResult
from rag_pipeline.contracts import EvidenceText


def to_evidence(result: CaptionResult) -> list[EvidenceText]:
    caption = EvidenceText(
        kind="caption",
        ordinal=0,
        text=result.caption,
        confidence=result.caption_confidence,
        locator={
            "category": result.category,
            "category_confidence": result.category_confidence,
            "prompt_version": result.prompt_version,
            "confidence_source": result.confidence_source,
        },
    )
    tags = [
        EvidenceText(
            kind="tag",
            ordinal=i,
            text=tag.value,
            confidence=tag.confidence,
            locator={"tag_type": tag.type},
        )
        for i, tag in enumerate(result.tags)
    ]
    return [caption, *tags]


def content_tags(result: CaptionResult) -> list[tuple[str, str, float]]:
    """(type, value, confidence) per tag, for the catalog's content_tags."""
    return [(tag.type, tag.value, tag.confidence) for tag in result.tags]

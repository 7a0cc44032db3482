"""A tiny random Qwen2-VL built from a config: the real processor, chat template, loading and
generation code paths of a vision-language model with no downloaded weights.

The tokenizer is a byte-level BPE trained here (``tokenizers``) on a few lines of prompt and JSON
text, with the Qwen special tokens, so any prompt tokenizes and any output decodes. Tokenizer,
image processor and chat template are saved as separate files, as in a Hub checkpoint (a
``Qwen2VLProcessor`` cannot be built without torchvision in transformers 5, so none is saved;
``AutoProcessor`` assembles one from these files where torchvision is installed).
"""

from __future__ import annotations

from pathlib import Path

# Qwen2-VL's chat template, reduced to what the captioner sends (text and one image per turn).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_CORPUS = [
    "You describe images for a search index. Answer with one JSON object and nothing else.",
    '{"category": "photo", "confidence": 0.9}',
    '{"caption": "A dog runs on a beach.", "confidence": 0.8, "tags": '
    '[{"type": "object", "value": "dog", "confidence": 0.9}]}',
    "photo artwork illustration document screenshot diagram other",
    "object scene person activity color style text place",
    "```json\n{}\n```",
]


def _build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
    )


def build_tiny_vlm(out: Path, hidden: int = 64, seed: int = 0) -> Path:
    """Save a complete local Qwen2-VL model dir (weights, config, generation config, tokenizer,
    image processor, chat template) under ``out`` and return it. Random weights: the model
    generates garbage, deterministically (greedy)."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    torch.manual_seed(seed)
    tokenizer = _build_tokenizer(vocab_size=320)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden // heads
    # mrope splits head_dim/2 rotary frequencies between time, height and width.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    cfg = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=hidden,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    # 1 to 4 merged patches (28x28 px each) per image: a handful of image tokens, fast on CPU,
    # and still a different token count per image size.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    tokenizer.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out

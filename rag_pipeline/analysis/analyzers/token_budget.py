"""A text model's own token count: chunks measured in the word pieces the MV model will see.

``ModelTokenizer`` loads the tokenizer of a local sentence-transformers directory (never a
download) and says how many word pieces a text is and how many fit the model's window
(``max_seq_length`` minus the special tokens the model adds: [CLS] and [SEP] for MiniLM).
A text longer than that is silently truncated by the model, so its tail is never embedded.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path

from rag_pipeline.analysis.analyzers.hf_offline import offline

_LOCK = threading.Lock()


class ModelTokenizer:
    """The tokenizer and window of one local model directory (cached per process: ``load``)."""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer

        offline()
        self.model_dir = model_dir
        self._tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.special_tokens = int(self._tok.num_special_tokens_to_add(pair=False))
        self.max_seq_length = _max_seq_length(model_dir, int(self._tok.model_max_length))

    @property
    def budget(self) -> int:
        """Word pieces of text that fit the window besides the special tokens."""
        return self.max_seq_length - self.special_tokens

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelTokenizer:
        with _LOCK:
            return _cached(str(Path(model_dir).resolve()))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of every word piece of ``text`` (no special tokens)."""
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        """Word pieces of ``text``, without the special tokens."""
        return len(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def truncated(self, text: str) -> bool:
        """Would the model cut ``text`` short?"""
        return self.count(text) > self.budget


@lru_cache(maxsize=8)
def _cached(model_dir: str) -> ModelTokenizer:
    return ModelTokenizer(Path(model_dir))


def _max_seq_length(model_dir: Path, fallback: int) -> int:
    """sentence-transformers' window (``sentence_bert_config.json``), else the tokenizer's."""
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    if fallback <= 0 or fallback > 1_000_000:  # transformers' "no limit" sentinel
        raise ValueError(f"{model_dir}: the model does not say its maximum sequence length")
    return fallback

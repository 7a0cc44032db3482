"""MV axis: text-meaning vectors from a sentence-transformers model in a local directory.

The model is loaded once per process (``TextEncoder.load`` caches by directory) and encodes in
batches. Its ModelSpec carries a checksum of the weights so that serving can refuse a query-time
model that differs from the one that built the snapshot.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from rag_pipeline.analysis.analyzers.hf_offline import offline
from rag_pipeline.contracts import ModelSpec

_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=16)
def _weights_checksum(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_checksum(model_dir: Path) -> str:
    """sha256 over the weight files (cached per path, size and mtime)."""
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.suffix in {".safetensors", ".bin", ".pt", ".gguf"} and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) under {model_dir}")
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(p.relative_to(model_dir).as_posix().encode())
        h.update(_weights_checksum(str(p), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def model_spec_for(model_dir: str | Path) -> ModelSpec:
    """Describe the model in ``model_dir`` without loading it (cheap after the first call)."""
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"MV model directory {d} does not exist (set RAG_MV_MODEL_DIR)")
    cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    name = cfg.get("_name_or_path") or d.name
    if d.name == "model" and d.parent.name.startswith("gt_"):
        name = "sentence-transformers/all-MiniLM-L6-v2"
    checksum = weights_checksum(d)
    return ModelSpec(
        backend="sentence-transformers",
        model_id=str(name),
        revision=checksum[:12],  # local dirs have no hub revision: the weights are the revision
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        quantization="none",
        weights_checksum=checksum,
        dim=int(cfg.get("hidden_size", 0)) or None,
    )


class TextEncoder:
    """A loaded sentence-transformers model. Use ``TextEncoder.load`` (cached per process)."""

    _cache: ClassVar[dict[str, TextEncoder]] = {}

    def __init__(self, model_dir: Path, spec: ModelSpec):
        from sentence_transformers import SentenceTransformer

        offline()
        self.model_dir = model_dir
        self.spec = spec
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"{model_dir}: the model does not say its embedding dimension")
        self.dim = int(dim)
        max_seq_length = self._model.max_seq_length
        if max_seq_length is None:
            raise ValueError(f"{model_dir}: the model does not say its maximum sequence length")
        self.max_seq_length = int(max_seq_length)
        if spec.dim is None or spec.dim != self.dim:
            self.spec = spec.model_copy(update={"dim": self.dim})

    @classmethod
    def load(cls, model_dir: str | Path) -> TextEncoder:
        key = str(Path(model_dir).resolve())
        with _LOAD_LOCK:
            enc = cls._cache.get(key)
            if enc is None:
                enc = cls(Path(key), model_spec_for(key))
                cls._cache[key] = enc
            return enc

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text], batch_size=1)[0]

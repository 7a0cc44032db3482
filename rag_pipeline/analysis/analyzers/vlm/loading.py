"""``load_captioner``: the configured backend, loaded once per process and config."""

from __future__ import annotations

import threading

from rag_pipeline.analysis.analyzers.vlm.base import Captioner
from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig

_CACHE: dict[str, Captioner] = {}
_LOCK = threading.Lock()


def load_captioner(config: CaptionerConfig, *, cached: bool = True) -> Captioner:
    """Build (or reuse) the captioner for ``config``. Local models load once per process: a
    model is gigabytes, a partition is many batches."""
    key = config.model_dump_json()
    with _LOCK:
        if cached and key in _CACHE:
            return _CACHE[key]
        if config.backend == "transformers":
            from rag_pipeline.analysis.analyzers.vlm.backend_transformers import (
                TransformersCaptioner,
            )

            captioner: Captioner = TransformersCaptioner(config)
        elif config.backend == "vllm":
            from rag_pipeline.analysis.analyzers.vlm.backend_vllm import VllmCaptioner

            captioner = VllmCaptioner(config)
        else:
            from rag_pipeline.analysis.analyzers.vlm.backend_openai import (
                OpenAICaptioner,
            )

            captioner = OpenAICaptioner(config)
        if cached:
            _CACHE[key] = captioner
        return captioner

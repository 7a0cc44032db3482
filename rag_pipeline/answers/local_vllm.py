"""Generation with vLLM in this process (``RAG_GENERATOR_URL=local``; the ``gpu`` extra).

vLLM is imported when the first generator is made, never at import time: the CPU build has
no vLLM, and serving without a generator never needs it. Not exercised by the CPU test suite;
the OpenAI-compatible path (a vLLM server) is the tested one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


class LocalVLLMGenerator:
    def __init__(self, model: str, *, max_tokens: int = 512):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:  # pragma: no cover - the gpu extra
            raise RuntimeError(
                "RAG_GENERATOR_URL=local needs vLLM: pip install 'rag_pipeline[gpu]'"
            ) from exc
        self.model = model
        self._llm: Any = LLM(model=model)
        self._params: Any = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        self._lock = threading.Lock()  # one generate call at a time on the engine

    def complete(self, messages: list[dict[str, str]]) -> str:
        with self._lock:
            out = self._llm.chat(messages, self._params, use_tqdm=False)
        return str(out[0].outputs[0].text)

    def stream(
        self, messages: list[dict[str, str]], cancel: threading.Event | None = None
    ) -> Iterator[str]:
        # The offline engine has no token stream: the whole answer is one chunk.
        if cancel is None or not cancel.is_set():
            yield self.complete(messages)

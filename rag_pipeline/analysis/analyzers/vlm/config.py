"""Which VLM backend to use and how: one validated config for all three."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["vllm", "openai", "transformers"]


class CaptionerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend
    # transformers and vllm: a complete local model directory (weights, config, tokenizer,
    # image processor, chat template). Nothing is ever downloaded.
    model_dir: Path | None = None
    # openai: the server root that has /chat/completions, e.g. http://vllm:8000/v1.
    base_url: str | None = None
    # openai: the model to ask for; may be left out when the endpoint serves exactly one.
    model: str | None = None
    # openai: the endpoint cannot say which weights it serves, so the config must (it is part
    # of the evidence's identity).
    revision: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key

    max_new_tokens: int = Field(default=256, ge=16, le=4096)
    batch_size: int = Field(default=8, ge=1, le=512)
    # "auto": bfloat16 on CUDA, float32 on CPU (transformers); the checkpoint's dtype (vllm).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    quantization: str | None = None  # vllm: e.g. "awq", "fp8"; None = as the checkpoint says
    # Longest side an image is scaled down to before it is sent (the model's own processor
    # resizes again; this bounds memory and request size).
    max_image_side: int = Field(default=1536, ge=64, le=8192)

    # openai transport
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0)  # doubled on each retry
    concurrency: int = Field(default=4, ge=1, le=64)

    # vllm engine
    max_model_len: int = Field(default=8192, ge=512)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)

    @model_validator(mode="after")
    def _backend_fields(self) -> CaptionerConfig:
        if self.backend in ("transformers", "vllm") and self.model_dir is None:
            raise ValueError(f"backend {self.backend!r} needs model_dir")
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend 'openai' needs base_url")
            if not self.revision:
                raise ValueError(
                    "backend 'openai' needs revision: the endpoint cannot say "
                    "which weights it serves"
                )
        return self

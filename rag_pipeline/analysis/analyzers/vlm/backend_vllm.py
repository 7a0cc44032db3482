"""Offline vLLM: ``LLM.generate`` over a batch of prompts with ``multi_modal_data``, greedy, the
step's JSON schema enforced by structured decoding, token logprobs returned for confidence.

vLLM pins its own torch and CUDA, so it lives in the optional ``gpu`` extra and is imported only
when a ``VllmCaptioner`` is built. Everything up to the engine call (prompts from the model's
chat template, sampling parameters as a plain dict, engine arguments) is built by the pure
functions below, which need no vLLM.
"""

from __future__ import annotations

import importlib
from typing import Any

from PIL import Image

from rag_pipeline.analysis.analyzers.hf_offline import offline
from rag_pipeline.analysis.analyzers.vlm.base import (
    Generation,
    GenerationRequest,
    TwoStepCaptioner,
)
from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig
from rag_pipeline.analysis.analyzers.vlm.local_model import (
    checked_model_dir,
    checkpoint_dtype,
    load_tokenizer,
    local_model_spec,
    render_prompt,
)
from rag_pipeline.analysis.analyzers.vlm.parsing import TokenLogprob
from rag_pipeline.analysis.analyzers.vlm.prompts import Messages
from rag_pipeline.analysis.analyzers.vlm.schema import Step
from rag_pipeline.errors import AnalysisError, ModelError, VlmUnavailable

INSTALL_HINT = "install the gpu extra: pip install '.[gpu]' (vLLM brings its own torch and CUDA)"


def import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise VlmUnavailable(
            f"the vllm backend needs vLLM, which is not installed ({exc}); {INSTALL_HINT}"
        ) from None


def build_prompts(tokenizer, messages: list[Messages]) -> list[str]:
    """One prompt per request from the model's chat template; each holds the template's image
    placeholder, which vLLM expands to the image's tokens."""
    return [render_prompt(tokenizer, m) for m in messages]


def build_requests(prompts: list[str], images: list[Image.Image]) -> list[dict[str, Any]]:
    return [
        {"prompt": p, "multi_modal_data": {"image": im}}
        for p, im in zip(prompts, images, strict=True)
    ]


def sampling_params_dict(schema: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    return {
        "temperature": 0.0,  # greedy: the same image and prompt give the same answer
        "max_tokens": max_new_tokens,
        "logprobs": 1,  # the sampled token's logprob is always included
        "structured_outputs": {"json": schema},
    }


def to_sampling_params(params: dict[str, Any], vllm: Any) -> Any:
    """``SamplingParams`` from the dict, for the installed vLLM: ``StructuredOutputsParams``
    (current), or ``GuidedDecodingParams`` (before v0.12, which removed it)."""
    kwargs = dict(params)
    structured = kwargs.pop("structured_outputs", None)
    sp_module = importlib.import_module("vllm.sampling_params")
    if structured is not None:
        if hasattr(sp_module, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = sp_module.StructuredOutputsParams(**structured)
        elif hasattr(sp_module, "GuidedDecodingParams"):
            kwargs["guided_decoding"] = sp_module.GuidedDecodingParams(**structured)
        else:
            raise VlmUnavailable(
                f"vLLM {getattr(vllm, '__version__', '?')} has no structured output API; upgrade it"
            )
    return vllm.SamplingParams(**kwargs)


def engine_kwargs(config: CaptionerConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": str(config.model_dir),
        "tokenizer": str(config.model_dir),
        "dtype": config.dtype,
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": 1},
        "max_num_seqs": config.batch_size,
        "seed": 0,
    }
    if config.quantization:
        kwargs["quantization"] = config.quantization
    return kwargs


def generation_from_output(output: Any) -> Generation:
    """A ``RequestOutput``'s first completion: text, the sampled tokens' logprobs, finish."""
    completion = output.outputs[0]
    tokens = None
    if completion.logprobs:
        tokens = []
        for position, token_id in zip(completion.logprobs, completion.token_ids, strict=False):
            lp = position[token_id]
            tokens.append(TokenLogprob(lp.decoded_token or "", float(lp.logprob)))
    return Generation(
        text=completion.text,
        token_logprobs=tokens,
        n_tokens=len(completion.token_ids),
        finished=completion.finish_reason != "length",
    )


class VllmCaptioner(TwoStepCaptioner):
    def __init__(self, config: CaptionerConfig):
        self._vllm = import_vllm()
        offline()
        self.config = config
        self.model_dir = checked_model_dir(config.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        dtype = checkpoint_dtype(self.model_dir) if config.dtype == "auto" else config.dtype
        self._spec = local_model_spec(
            self.model_dir, "vllm", dtype=dtype, quantization=config.quantization
        )
        self.llm = self._vllm.LLM(**engine_kwargs(config))

    def _generate(
        self, step: Step, schema: dict[str, Any], requests: list[GenerationRequest]
    ) -> list[Generation | AnalysisError]:
        prompts = build_prompts(self.tokenizer, [r.messages for r in requests])
        params = to_sampling_params(
            sampling_params_dict(schema, self.config.max_new_tokens), self._vllm
        )
        try:
            outputs = self.llm.generate(
                build_requests(prompts, [r.image for r in requests]),
                sampling_params=params,
                use_tqdm=False,
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.spec.model_id} vLLM generate failed: {exc}") from exc
        return [generation_from_output(o) for o in outputs]

"""Local VLM through transformers: AutoModelForImageTextToText from a model directory, batched
greedy generation on CUDA when there is one, else CPU."""

from __future__ import annotations

import threading
from typing import Any

from rag_pipeline.analysis.analyzers.hf_offline import offline
from rag_pipeline.analysis.analyzers.vlm.base import (
    Generation,
    GenerationRequest,
    TwoStepCaptioner,
)
from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig
from rag_pipeline.analysis.analyzers.vlm.local_model import (
    ChatInputs,
    checked_model_dir,
    local_model_spec,
)
from rag_pipeline.analysis.analyzers.vlm.parsing import TokenLogprob
from rag_pipeline.analysis.analyzers.vlm.schema import Step
from rag_pipeline.errors import AnalysisError, ModelError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """bfloat16 on CUDA, float32 on CPU (bfloat16 matmuls on CPU are slow and lossy)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class TransformersCaptioner(TwoStepCaptioner):
    def __init__(self, config: CaptionerConfig):
        import torch
        from transformers import AutoModelForImageTextToText

        offline()
        self.config = config
        self.model_dir = checked_model_dir(config.model_dir)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        # PreTrainedModel.to is decorated with functools.wraps(nn.Module.to): its stub types it
        # as the unbound function.
        self.model = (
            AutoModelForImageTextToText.from_pretrained(
                self.model_dir,
                dtype=self.dtype,
                local_files_only=True,
            )
            .to(self.device)
            .eval()
        )  # type: ignore[arg-type]
        self.inputs = ChatInputs(self.model_dir, self.model.config)
        gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else []
        self.stop_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            gen_cfg.pad_token_id
            if gen_cfg.pad_token_id is not None
            else self.inputs.tokenizer.pad_token_id
        )
        if self.pad_id is not None:
            self.stop_ids.add(self.pad_id)
        self._lock = threading.Lock()  # one generate at a time on a shared model
        self._torch = torch
        self._spec = local_model_spec(
            self.model_dir, "transformers", dtype=str(self.dtype).removeprefix("torch.")
        )

    def _generate(
        self, step: Step, schema: dict[str, Any], requests: list[GenerationRequest]
    ) -> list[Generation | AnalysisError]:
        # transformers has no constrained decoding: the schema is in the prompt only.
        torch = self._torch
        prompts = [self.inputs.render(r.messages) for r in requests]
        batch = self.inputs(prompts, [r.image for r in requests]).to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        n_prompt = batch["input_ids"].shape[1]
        try:
            with self._lock, torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.pad_id,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
                logprobs = (
                    self.model.compute_transition_scores(
                        out.sequences, out.scores, normalize_logits=True
                    )
                    .float()
                    .cpu()
                )
        except (RuntimeError, ValueError) as exc:  # out of memory, shape errors
            raise ModelError(f"{self.spec.model_id} generate failed: {exc}") from exc
        generated = out.sequences[:, n_prompt:].cpu()
        results: list[Generation | AnalysisError] = []
        for row in range(generated.shape[0]):
            ids: list[int] = []
            finished = False
            for tid in generated[row].tolist():
                if tid in self.stop_ids:
                    finished = True
                    break
                ids.append(tid)
            tok = self.inputs.tokenizer
            tokens = [
                TokenLogprob(tok.decode([tid], skip_special_tokens=True), float(lp))
                for tid, lp in zip(ids, logprobs[row, : len(ids)].tolist(), strict=True)
            ]
            results.append(
                Generation(
                    text=tok.decode(ids, skip_special_tokens=True),
                    token_logprobs=tokens,
                    n_tokens=len(ids),
                    finished=finished,
                )
            )
        return results

"""The per-file bounds of text analysis (from settings; recorded in each partition's
materialization): what the parser process (``isolation``) and the analyzers it runs
(``text_task``) both read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ParseLimits(BaseModel):
    """The per-file bounds of text analysis (from settings; recorded in the run metadata)."""

    model_config = ConfigDict(frozen=True)

    max_text_chars: int = Field(gt=0)
    max_chunks: int = Field(gt=0)
    timeout_s: float = Field(gt=0)
    memory_mb: int = Field(ge=0)  # 0: no address-space cap

    def as_metadata(self) -> dict[str, float | int]:
        return {f"limit_{k}": v for k, v in self.model_dump().items()}

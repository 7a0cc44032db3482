"""Model loading never reaches for a hub: every model is a local directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rag_pipeline.errors import ModelError


def offline() -> None:
    """Set the Hugging Face libraries offline and keep their progress bars (noise in pipeline
    logs and CLI output) quiet. Call before loading a model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def read_model_config(d: Path) -> dict[str, Any]:
    """The ``config.json`` of a local transformers model directory ``d`` (which exists)."""
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{d} has no config.json: not a transformers model directory")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {cfg_path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path} is not a JSON object")
    return cfg

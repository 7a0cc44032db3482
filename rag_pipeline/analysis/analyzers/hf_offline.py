"""Model loading never reaches for a hub: every model is a local directory."""

from __future__ import annotations

import os


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

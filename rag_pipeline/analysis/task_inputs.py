"""What every partition worker does with one task's input: read its bytes, verify they are still
the asset it names, and turn a failure into the error class its dead letter records."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rag_pipeline import errors
from rag_pipeline.contracts import ErrorInfo, TaskSpec


class ContentChanged(errors.AnalysisError):
    """The file's bytes changed between discovery and analysis: the next scan picks it up."""

    retryable = True


def error_info(exc: BaseException, uri: str) -> ErrorInfo:
    """A failed task's error: its class is what the dead letter records."""
    if isinstance(exc, errors.AnalysisError):
        return ErrorInfo(
            error_class=exc.error_class, message=str(exc)[:2000], retryable=exc.retryable
        )
    if isinstance(exc, OSError):
        return ErrorInfo(error_class="UnreadableFile", message=f"{uri}: {exc}", retryable=True)
    # An analyzer bug must not sink the partition.
    return ErrorInfo(
        error_class=f"AnalyzerCrash.{type(exc).__name__}", message=f"{uri}: {exc}"[:2000]
    )


def read_verified(task: TaskSpec) -> bytes:
    data = Path(task.uri).read_bytes()
    if hashlib.sha256(data).hexdigest() != task.asset_id:
        raise ContentChanged(f"{task.uri}: bytes changed since discovery")
    return data

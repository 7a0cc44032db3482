"""Failure classes of a partition run, and how each is retried.

Bad input never fails a run (it becomes a dead letter); what does fail a run is the environment:
transient I/O (a network share hiccup, a lock not freed in time) is retried with exponential
backoff; resource exhaustion (out of memory) is retried with half the batch size each time; a
model error is retried once; a model mismatch is never retried (it would mismatch again) and
writes nothing; anything else is a bug and surfaces at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rag_pipeline import errors
from rag_pipeline.errors import ModelMismatch

FailureClass = Literal[
    "transient_io", "resource_exhausted", "model_error", "model_mismatch", "unexpected"
]


@dataclass(frozen=True)
class RetryRule:
    max_retries: int
    base_delay_s: float

    def delay(self, retry_number: int) -> float:
        return self.base_delay_s * (2**retry_number)


RETRY_RULES: dict[str, RetryRule] = {
    "transient_io": RetryRule(3, 2.0),
    "resource_exhausted": RetryRule(2, 5.0),
    "model_error": RetryRule(1, 10.0),
    "model_mismatch": RetryRule(0, 0.0),
    "unexpected": RetryRule(0, 0.0),
}


def classify(exc: BaseException) -> FailureClass:
    if isinstance(exc, ModelMismatch):
        return "model_mismatch"
    if (
        isinstance(exc, MemoryError)
        or "out of memory" in str(exc).lower()
        or type(exc).__name__ == "OutOfMemoryError"
    ):
        return "resource_exhausted"
    if isinstance(exc, errors.ModelError):
        return "model_error"
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return "transient_io"
    return "unexpected"


def batch_size_for_retry(batch_size: int, retry_number: int) -> int:
    """Each retry halves the inference batch (never below 1): the cure for resource exhaustion,
    harmless for the other classes."""
    return max(1, batch_size >> retry_number)

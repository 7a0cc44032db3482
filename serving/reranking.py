"""The rerank stage's cross-encoder at query time: the one the snapshot's manifest names.

Loaded (and warmed) when the snapshot opens, from the manifest's directory or
``RAG_QUERY_CE_MODEL_DIR``. It is optional, a feature the ranker weighs: a directory that is
missing or does not load, or weights other than the manifest's (model parity: the ranker's
``ce_score`` weight was learned on those), leave it *unavailable* with the reason (``health``
and each response's rerank summary) and the search answers with the ranker's other features.
Other weights are refused, never used; refusing the whole snapshot for an optional feature
would turn a misconfigured copy into an outage.
"""

from __future__ import annotations

import logging

from rag_pipeline.retrieval.cross_encoder import CrossEncoderConfig, PairScorer, load_scorer
from rag_pipeline.snapshot.schema import SnapshotManifest

log = logging.getLogger(__name__)


def load_cross_encoder(
    manifest: SnapshotManifest, ce_model_dir: str | None
) -> tuple[PairScorer | None, str | None]:
    """(scorer, None), or (None, why there is none); (None, None): the snapshot names none."""
    info = manifest.cross_encoder
    if info is None:
        return None, None
    if not info.available:
        return None, info.reason or "the snapshot's cross-encoder is unavailable"
    model_dir = ce_model_dir or info.model_dir
    if not model_dir:
        return None, "no cross-encoder directory recorded or given (RAG_QUERY_CE_MODEL_DIR)"
    try:
        config = CrossEncoderConfig.model_validate(info.config)
    except ValueError as exc:
        return None, f"the snapshot's cross-encoder config is not valid: {exc}"
    scorer, reason = load_scorer(model_dir, config, expected=info.model)
    if reason is not None:
        log.error("snapshot %s: %s", manifest.snapshot_id, reason)
    return scorer, reason

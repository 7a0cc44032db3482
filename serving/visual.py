"""The VV (visual) axis at query time: the snapshot's image model, text tower only.

Health gate: an image model that cannot be found or loaded makes the axis *unavailable* (with
the reason, reported by ``health`` and in every response; a request that demands the axis gets
``AxisUnavailable``). A model that loads but is not the one that built the snapshot's vectors is
refused outright (``ModelMismatch``): its vectors would not be comparable.
"""

from __future__ import annotations

from typing import Any

from rag_pipeline.snapshot.schema import SnapshotManifest
from serving.errors import ModelMismatch


def load_vv_encoder(
    manifest: SnapshotManifest, vv_model_dir: str | None
) -> tuple[Any | None, str | None]:
    """(encoder, None) or (None, why the VV axis is unavailable). Raises ``ModelMismatch``."""
    from rag_pipeline.analysis.analyzers.image_embedding import (
        ImageEncoder,
        image_model_spec,
    )
    from rag_pipeline.errors import ModelError

    info = manifest.axes.get("vv")
    if info is None or not info.available:
        return None, (
            info.reason
            if info is not None and info.reason
            else f"snapshot {manifest.snapshot_id} has no VV vectors"
        )
    if info.model is None:
        raise ModelMismatch(
            f"snapshot {manifest.snapshot_id} has a vv axis but no VV model "
            "spec: cannot verify a query encoder against it"
        )
    model_dir = vv_model_dir or info.model_dir
    if not model_dir:
        return None, "no VV query model directory recorded or given (RAG_QUERY_VV_MODEL_DIR)"
    try:
        spec = image_model_spec(model_dir)
    except (ModelError, OSError, ValueError) as exc:
        return None, f"VV query model unavailable: {exc}"
    if spec.weights_checksum != info.model.weights_checksum:
        raise ModelMismatch(
            f"refusing the vv axis of snapshot {manifest.snapshot_id}: its image vectors were "
            f"built by {info.model.model_id} (weights {info.model.weights_checksum[:12]}), the "
            f"query model in {model_dir} has weights {spec.weights_checksum[:12]}"
        )
    try:
        encoder = ImageEncoder.load(model_dir)
    except (ModelError, OSError) as exc:
        return None, f"VV query model failed to load: {exc}"
    dim = info.dim or info.model.dim
    if dim and encoder.dim != dim:
        raise ModelMismatch(f"query VV model dim {encoder.dim} != snapshot VV dim {dim}")
    return encoder, None

"""Partition worker: execute one (profile, shard) partition's planned tasks, stage the results.

Reads the partition's plan (never the catalog), reads each asset's bytes once, verifies they
still hash to the asset id, runs the profile's analyzers (text: document text + chunks, image
metadata; mv_embed: the text of its text profile, embedded in batches by a model loaded once per
process) and writes one staged batch per analysis run. Before any work, an ML profile's local
model must match the ModelSpec its tasks carry (model parity), or nothing is written. Bad input
becomes a failed result with an error class; the rest of the partition carries on.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rag_pipeline import errors
from rag_pipeline.analysis import image_worker
from rag_pipeline.analysis.analyzers.text_embedding import TextEncoder, model_spec_for
from rag_pipeline.analysis.isolation import shared_parser
from rag_pipeline.analysis.limits import ParseLimits
from rag_pipeline.analysis.profiles import (
    IMAGE_ONLY,
    Profile,
    Profiles,
    TaskProfile,
    load_profiles,
)
from rag_pipeline.analysis.task_inputs import error_info
from rag_pipeline.analysis.text_task import analyze_text_task
from rag_pipeline.contracts import (
    AnalysisRun,
    ErrorInfo,
    EvidenceText,
    EvidenceVector,
    ModelSpec,
    ResultEnvelope,
    TaskSpec,
)
from rag_pipeline.errors import ModelMismatch
from rag_pipeline.settings import Settings
from rag_pipeline.storage import staging
from rag_pipeline.storage.catalog.catalog import utcnow
from rag_pipeline.storage.faults import fault_point
from rag_pipeline.storage.plans import partition_key, read_plan


@dataclass
class ShardResult:
    partition_key: str
    runs: list[AnalysisRun] = field(default_factory=list)
    staged_files: list[str] = field(default_factory=list)
    n_tasks: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_evidence_text: int = 0
    n_vectors: int = 0
    errors_by_class: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    n_truncated: int = 0  # documents indexed up to the per-file caps
    limits: ParseLimits | None = None


def parse_limits(settings: Settings) -> ParseLimits:
    return ParseLimits(
        max_text_chars=settings.max_text_chars,
        max_chunks=settings.max_chunks,
        timeout_s=settings.parse_timeout_s,
        memory_mb=settings.parse_memory_mb,
    )


def embed_text_for(task_type: str, texts: list[EvidenceText]) -> list[tuple[str, str]]:
    """(target, text) pairs the MV axis embeds for one asset's text evidence.

    Document chunks are embedded with their title in front (a contextual chunk header: a chunk
    deep in a document rarely names its subject). An image is one unit: title, descriptions,
    captions and keywords together.
    """
    title = next((t.text for t in texts if t.kind == "title"), "")
    if task_type == "doc_text":
        return [
            (f"chunk:{t.ordinal}", f"{title}\n{t.text}" if title else t.text)
            for t in texts
            if t.kind == "chunk"
        ]
    parts = [t.text for t in texts if t.kind in ("title", "description", "caption")]
    keywords = [t.text for t in texts if t.kind in ("keyword", "tag")]
    if keywords:
        parts.append(", ".join(keywords))
    joined = "\n".join(parts).strip()
    return [("unit:0", joined)] if joined else []


def local_model_spec(profile: Profile) -> ModelSpec | None:
    """The ModelSpec of the model this worker would load for ``profile`` (None: nothing local
    to compare, e.g. the built-in analyzers or a remote endpoint)."""
    if profile.analyzer in ("text", "ocr") or profile.model_dir is None:
        return None
    if profile.analyzer == "mv_embed":
        return model_spec_for(profile.model_dir)
    if profile.analyzer == "vv_embed":
        from rag_pipeline.analysis.analyzers.image_embedding import image_model_spec

        return image_model_spec(profile.model_dir)
    from rag_pipeline.analysis.analyzers.captioning import (
        local_model_spec as caption_spec,
    )

    return caption_spec(profile.model_dir, profile.tasks["caption"].model.backend)


def check_model_parity(profile: Profile, tasks: list[TaskSpec]) -> ModelSpec | None:
    """Compare the local model's manifest with every task's ModelSpec; raise on mismatch."""
    if not tasks or profile.analyzer in ("text", "ocr") or profile.model_dir is None:
        return None
    try:
        local = local_model_spec(profile)
    except (FileNotFoundError, errors.ModelError, OSError, ValueError) as exc:
        raise ModelMismatch(f"model_mismatch: profile {profile.name!r}: {exc}") from exc
    assert local is not None
    for t in tasks:
        wanted = t.model
        for field_name in ("revision", "weights_checksum"):
            if getattr(wanted, field_name) != getattr(local, field_name):
                raise ModelMismatch(
                    f"model_mismatch: profile {profile.name!r} task {t.dedupe_key[:12]} wants "
                    f"{field_name} {getattr(wanted, field_name)[:16]}, the local model at "
                    f"{profile.model_dir} has {getattr(local, field_name)[:16]}"
                )
    return local


def run_partition(
    settings: Settings,
    profile_name: str,
    shard: str,
    dagster_run_id: str | None = None,
    encoder: TextEncoder | None = None,
    profiles: Profiles | None = None,
) -> ShardResult:
    t_start = time.perf_counter()
    profiles = profiles or load_profiles(settings)
    profile = profiles[profile_name]
    part_key = partition_key(profile_name, shard)
    tasks = read_plan(settings, profile_name, shard)
    out = ShardResult(partition_key=part_key, n_tasks=len(tasks), limits=parse_limits(settings))
    check_model_parity(profile, tasks)  # before any work: a mismatch writes nothing
    if not tasks:
        return out
    started = utcnow()
    by_type: dict[str, list[TaskSpec]] = defaultdict(list)
    for t in tasks:
        by_type[t.task_type].append(t)
    run_ids = {tt: f"{tt}-{profile_name}-{shard}-{uuid.uuid4().hex[:12]}" for tt in by_type}
    envelopes: dict[str, list[ResultEnvelope]] = defaultdict(list)
    if profile.analyzer in IMAGE_ONLY:
        t0 = time.perf_counter()
        envelopes[profile.analyzer] = image_worker.run_image_tasks(
            settings, profile, tasks, run_ids[profile.analyzer]
        )
        out.seconds[profile.analyzer] = time.perf_counter() - t0
        return _stage(
            settings,
            profile_name,
            shard,
            part_key,
            dagster_run_id,
            started,
            run_ids,
            envelopes,
            out,
            t_start,
        )
    text_profile = profile if profile.analyzer == "text" else profiles.text_profile_for(profile)

    # 1. Text analyzers: the text profile's own tasks, or the input of pending mv tasks.
    # Keyed by (tenant, asset): the same bytes in two tenants are two tasks, analysed for each.
    mv_tasks = {(t.tenant_id, t.asset_id): t for t in by_type.get("mv_embed", [])}
    text_tasks: dict[tuple[str, str], TaskSpec] = {
        (t.tenant_id, t.asset_id): t
        for tt in ("doc_text", "image_meta")
        for t in by_type.get(tt, [])
    }
    t0 = time.perf_counter()
    texts_for_mv: dict[tuple[str, str], tuple[str, list[EvidenceText]]] = {}
    parser = shared_parser(out.limits or parse_limits(settings))
    for asset_id in sorted(set(text_tasks) | set(mv_tasks)):
        task = text_tasks.get(asset_id)
        mv = mv_tasks.get(asset_id)
        probe = task if task is not None else mv_tasks[asset_id]  # one of the two has it
        text_type = _text_type_for(probe)
        try:
            texts = parser.call(
                analyze_text_task,
                _as_text_task(probe, text_profile.tasks[text_type]),
                parser.limits,
                settings.fault,
                subject=probe.uri,
            )
            if not texts:
                raise errors.NoTextContent(f"{probe.uri}: no text evidence")
            error = None
            out.n_truncated += any(t.locator.get("truncated") for t in texts)
            if text_type == "image_meta" and task is not None:
                _store_thumbnail(settings, probe, Path(probe.uri).read_bytes())
        except Exception as exc:
            texts, error = [], error_info(exc, probe.uri)
        if task is not None:
            envelopes[task.task_type].append(
                ResultEnvelope.build(task, run_ids[task.task_type], texts=texts, error=error)
            )
        if mv is not None:
            if error is not None:
                # Same cause, recorded once (on the text task); a re-drive retries both.
                envelopes["mv_embed"].append(
                    ResultEnvelope.build(
                        mv,
                        run_ids["mv_embed"],
                        error=ErrorInfo(
                            error_class="UpstreamFailed",
                            message=f"text analysis failed: {error.error_class}",
                            retryable=error.retryable,
                        ),
                    )
                )
            else:
                texts_for_mv[asset_id] = (text_type, texts)
    out.seconds["text_analyzers"] = time.perf_counter() - t0

    # 2. MV embeddings, batched over the whole partition.
    t0 = time.perf_counter()
    if texts_for_mv:
        enc = encoder or TextEncoder.load(profile.local_model_dir())
        if enc.spec.weights_checksum != mv_tasks[next(iter(texts_for_mv))].model.weights_checksum:
            raise ModelMismatch(
                f"model_mismatch: encoder {enc.model_dir} is not the profile's model"
            )
        pairs: list[tuple[tuple[str, str], str, str]] = []
        for asset_id, (text_type, texts) in texts_for_mv.items():
            pairs += [(asset_id, target, text) for target, text in embed_text_for(text_type, texts)]
        vectors = enc.encode([p[2] for p in pairs], batch_size=settings.mv_batch_size)
        per_asset: dict[tuple[str, str], list[EvidenceVector]] = defaultdict(list)
        for (asset_id, target, _), vec in zip(pairs, vectors, strict=True):
            per_asset[asset_id].append(EvidenceVector.from_array("mv", target, vec))
        for asset_id in texts_for_mv:
            # An image with no description has nothing for the MV axis: that is an ok
            # result with no vectors (the unit stays searchable by its other fields).
            envelopes["mv_embed"].append(
                ResultEnvelope.build(
                    mv_tasks[asset_id], run_ids["mv_embed"], vectors=per_asset.get(asset_id, [])
                )
            )
    out.seconds["mv_embed"] = time.perf_counter() - t0

    return _stage(
        settings,
        profile_name,
        shard,
        part_key,
        dagster_run_id,
        started,
        run_ids,
        envelopes,
        out,
        t_start,
    )


def _store_thumbnail(settings: Settings, task: TaskSpec, data: bytes) -> None:
    """Serving hands out stored thumbnails; content-addressed, so written once per asset."""
    from rag_pipeline.analysis.analyzers.image_decode import (
        decode_image,
        thumbnail_bytes,
        thumbnail_path,
        write_thumbnail,
    )

    target = settings.thumbs_dir
    if thumbnail_path(target, task.asset_id).exists():
        return
    try:
        decoded = decode_image(
            data, max_pixels=int(task.config["max_pixels"]), target_side=settings.thumbnail_side
        )
        write_thumbnail(
            target, task.asset_id, thumbnail_bytes(decoded, max_side=settings.thumbnail_side)
        )
    except errors.AnalysisError:
        pass  # the metadata analysis already decoded it; a thumbnail is a convenience


def _stage(
    settings: Settings,
    profile_name: str,
    shard: str,
    part_key: str,
    dagster_run_id: str | None,
    started,
    run_ids: dict[str, str],
    envelopes: dict[str, list[ResultEnvelope]],
    out: ShardResult,
    t_start: float,
) -> ShardResult:
    """Stage one batch per analysis run."""
    t0 = time.perf_counter()
    finished = utcnow()
    for task_type, envs in envelopes.items():
        if not envs:
            continue
        first = envs[0].task
        # A run is one partition (profile x shard) and may cover several tenants: its row is
        # model provenance, the results and evidence it wrote each carry their own tenant.
        tenants = {e.task.tenant_id for e in envs}
        run = AnalysisRun(
            run_id=run_ids[task_type],
            tenant_id=first.tenant_id if len(tenants) == 1 else "*",
            analyzer=task_type,
            profile=profile_name,
            model=first.model,
            config=first.config,
            config_hash=first.config_hash,
            partition_key=part_key,
            dagster_run_id=dagster_run_id,
            started_at=started,
            finished_at=finished,
            n_tasks=len(envs),
            n_ok=sum(e.status == "ok" for e in envs),
            n_failed=sum(e.status == "failed" for e in envs),
            n_evidence_text=sum(len(e.evidence_text) for e in envs),
            n_vectors=sum(len(e.evidence_vectors) for e in envs),
            status="reported",
        )
        path = staging.write_batch(settings.staging_dir, shard, run, envs)
        fault_point(settings, "after_stage")
        out.runs.append(run)
        out.staged_files.append(str(path))
        out.n_ok += run.n_ok
        out.n_failed += run.n_failed
        out.n_evidence_text += run.n_evidence_text
        out.n_vectors += run.n_vectors
        for e in envs:
            if e.error:
                out.errors_by_class[e.error.error_class] = (
                    out.errors_by_class.get(e.error.error_class, 0) + 1
                )
    out.seconds["stage"] = time.perf_counter() - t0
    out.seconds["total"] = time.perf_counter() - t_start
    return out


def _text_type_for(task: TaskSpec) -> str:
    from rag_pipeline.media_types import is_image

    return "image_meta" if is_image(task.media_type) else "doc_text"


def _as_text_task(task: TaskSpec, tp: TaskProfile) -> TaskSpec:
    """The text task whose analysis an mv task embeds (recomputed: it is deterministic)."""
    if task.task_type == tp.task_type:
        return task
    return task.model_copy(
        update={"task_type": tp.task_type, "model": tp.model, "config": tp.config}
    )

"""The persister: turns staged results into catalog rows, one writer at a time.

It runs at the end of every analysis partition (for that partition's shard) and in the
``evidence`` asset (every shard: whatever a crashed or interrupted run left staged). For each
staged batch, under the catalog writer lock: verify every envelope (shape, version,
checksum: a bad one becomes a dead letter, the others go on), skip dedupe keys that already have
an ok result, append vectors to LanceDB, then insert results, evidence and the analysis run in
one DuckDB transaction, written in batches of ``write_batch_rows``. The run's 'persisted' status
commits with its rows, so a crash leaves either all of a batch visible or none of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rag_pipeline.contracts import ContractError, ResultEnvelope, stable_hash
from rag_pipeline.settings import Settings, shard_key
from rag_pipeline.storage import plans, staging
from rag_pipeline.storage.catalog.catalog import Catalog, utcnow
from rag_pipeline.storage.faults import fault_point
from rag_pipeline.storage.vector_store import VectorStore


@dataclass
class PersistReport:
    batches: int = 0
    runs_persisted: list[str] = field(default_factory=list)
    results: int = 0
    evidence_text: int = 0
    vectors: int = 0
    duplicates_skipped: int = 0
    rejected: int = 0
    dead_letters: int = 0
    seconds: float = 0.0

    def as_metadata(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "runs_persisted"} | {
            "runs_persisted": len(self.runs_persisted)
        }


def _insert_batched(cat: Catalog, table: str, rows: list[dict], batch_rows: int) -> None:
    for start in range(0, len(rows), max(batch_rows, 1)):
        chunk = pa.Table.from_pylist(rows[start : start + batch_rows])  # noqa: F841 (scanned)
        cols = ", ".join(rows[0].keys())
        cat.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM chunk")


def persist_all(settings: Settings, cat: Catalog) -> PersistReport:
    report = PersistReport()
    vs = VectorStore(settings.lance_dir)
    for i in range(settings.shard_count):
        persist_shard(settings, cat, shard_key(i), vs, report)
    return report


def persist_shard(
    settings: Settings,
    cat: Catalog,
    shard: str,
    vector_store: VectorStore | None = None,
    report: PersistReport | None = None,
) -> PersistReport:
    t0 = time.perf_counter()
    report = report if report is not None else PersistReport()
    vs = vector_store or VectorStore(settings.lance_dir)
    staging.clear_orphans(settings.staging_dir, shard)
    for path in staging.list_batches(settings.staging_dir, shard):
        batch = staging.read_batch(path)
        run = batch.run
        prior = cat.scalar("SELECT status FROM analysis_runs WHERE run_id = ?", [run.run_id])
        if prior == "persisted":  # crashed after commit, before unlink: nothing to redo
            path.unlink(missing_ok=True)
            continue
        report.batches += 1
        _persist_batch(settings, cat, vs, batch, report)
        path.unlink(missing_ok=True)
    plans.prune_plan(settings, cat, shard)
    report.seconds += time.perf_counter() - t0
    return report


def _persist_batch(
    settings: Settings,
    cat: Catalog,
    vs: VectorStore,
    batch: staging.StagedBatch,
    report: PersistReport,
) -> None:
    run = batch.run
    now = utcnow()
    envelopes: list[ResultEnvelope] = []
    for raw in batch.envelopes_json:
        try:
            env = ResultEnvelope.parse_verified(raw)
            if env.run_id != run.run_id:
                raise ContractError(f"envelope of run {env.run_id} in batch of run {run.run_id}")
            envelopes.append(env)
        except ContractError as exc:
            report.rejected += 1
            cat.record_dead_letter(
                tenant_id=run.tenant_id,
                uri=str(batch.path),
                content_hash="",
                stage=run.analyzer,
                error_class="ContractError",
                message=str(exc),
                run_id=run.run_id,
            )
            report.dead_letters += 1

    # Each envelope's key once: it hashes the task's config (per evidence row it dominated).
    keyed = [(e.task.dedupe_key, e) for e in envelopes]
    keys = [k for k, _ in keyed]
    existing = {
        r["dedupe_key"]: r["status"]
        for r in cat.rows(
            "SELECT dedupe_key, status FROM results WHERE dedupe_key IN (SELECT unnest(?))", [keys]
        )
    }
    fresh = [(k, e) for k, e in keyed if existing.get(k) != "ok"]
    report.duplicates_skipped += len(envelopes) - len(fresh)
    replaced_failed = [k for k, _ in fresh if k in existing]

    # Vectors first (LanceDB), keyed by run: a crash before the DuckDB commit is undone here
    # on the next attempt.
    vec_rows: dict[tuple[str, int], dict[str, list]] = {}
    for key, e in fresh:
        for v in e.evidence_vectors:
            cols = vec_rows.setdefault(
                (v.axis, v.dim),
                {
                    k: []
                    for k in (
                        "evidence_id",
                        "tenant_id",
                        "asset_id",
                        "dedupe_key",
                        "run_id",
                        "axis",
                        "target",
                        "dim",
                        "vector",
                        "norm",
                        "checksum",
                    )
                },
            )
            cols["evidence_id"].append(stable_hash([key, v.axis, v.target], 32))
            cols["tenant_id"].append(e.task.tenant_id)
            cols["asset_id"].append(e.task.asset_id)
            cols["dedupe_key"].append(key)
            cols["run_id"].append(run.run_id)
            cols["axis"].append(v.axis)
            cols["target"].append(v.target)
            cols["dim"].append(v.dim)
            cols["vector"].append(np.asarray(v.vector, dtype=np.float32))
            cols["norm"].append(v.norm)
            cols["checksum"].append(v.checksum)
    for (axis, dim), cols in vec_rows.items():
        vs.delete_runs(axis, dim, [run.run_id])
        report.vectors += vs.append(axis, dim, cols, batch_rows=settings.write_batch_rows)
        fault_point(settings, "after_vectors")

    results_rows, text_rows = [], []
    for key, e in fresh:
        t = e.task
        results_rows.append(
            dict(
                dedupe_key=key,
                tenant_id=t.tenant_id,
                asset_id=t.asset_id,
                task_type=t.task_type,
                profile=t.profile or run.profile,
                model_key=t.model.key,
                config_hash=t.config_hash,
                input_dedupe_key=t.inputs_hash if t.task_type == "mv_embed" else None,
                run_id=run.run_id,
                status=e.status,
                error_class=e.error.error_class if e.error else None,
                retryable=bool(e.error and e.error.retryable),
                result_checksum=e.result_checksum,
                n_text=len(e.evidence_text),
                n_vectors=len(e.evidence_vectors),
                persisted_at=now,
            )
        )
        for ev in e.evidence_text:
            text_rows.append(
                dict(
                    evidence_id=stable_hash([key, ev.kind, ev.ordinal], 32),
                    tenant_id=t.tenant_id,
                    asset_id=t.asset_id,
                    dedupe_key=key,
                    run_id=run.run_id,
                    task_type=t.task_type,
                    kind=ev.kind,
                    ordinal=ev.ordinal,
                    text=ev.text,
                    confidence=ev.confidence,
                    locator=_json(ev.locator),
                )
            )

    con = cat.con
    con.execute("BEGIN TRANSACTION")
    try:
        # Leftovers of an earlier failed result for the same key make way for the new one.
        if replaced_failed:
            con.execute(
                "DELETE FROM results WHERE dedupe_key IN (SELECT unnest(?))", [replaced_failed]
            )
        con.execute("DELETE FROM evidence_text WHERE run_id = ?", [run.run_id])
        con.execute("DELETE FROM results WHERE run_id = ?", [run.run_id])
        con.execute("DELETE FROM analysis_runs WHERE run_id = ?", [run.run_id])
        if results_rows:
            _insert_batched(cat, "results", results_rows, settings.write_batch_rows)
        if text_rows:
            _insert_batched(cat, "evidence_text", text_rows, settings.write_batch_rows)
        fault_point(settings, "mid_insert")
        for _, e in fresh:
            if e.error and e.error.error_class != "UpstreamFailed":
                cat.record_dead_letter(
                    tenant_id=e.task.tenant_id,
                    uri=e.task.uri,
                    content_hash=e.task.asset_id,
                    stage=e.task.task_type,
                    error_class=e.error.error_class,
                    message=e.error.message,
                    run_id=run.run_id,
                    now=now,
                )
                report.dead_letters += 1
        m = run.model
        duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
        con.execute(
            "INSERT INTO analysis_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?, 'persisted', ?)",
            [
                run.run_id,
                run.tenant_id,
                run.analyzer,
                run.profile,
                m.backend,
                m.model_id,
                m.revision,
                m.dtype,
                m.quantization,
                m.weights_checksum,
                m.key,
                _json(run.config),
                run.config_hash,
                run.partition_key,
                run.dagster_run_id,
                run.started_at,
                run.finished_at,
                duration,
                run.n_tasks,
                run.n_ok,
                run.n_failed,
                run.n_evidence_text,
                run.n_vectors,
                len(envelopes) - len(fresh),
                now,
            ],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    report.runs_persisted.append(run.run_id)
    report.results += len(results_rows)
    report.evidence_text += len(text_rows)


def _json(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)

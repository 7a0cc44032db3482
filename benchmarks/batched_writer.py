"""Batched persistence vs one commit per row (the seed's diagnosed problem).

Writes the same N evidence rows into a fresh DuckDB catalog three ways and prints one table:
  per-row     BEGIN; INSERT one row; COMMIT — N times
  batched     one transaction, inserts of `write_batch_rows` (default 1,000) rows
              (rag_pipeline.storage.persister._insert_batched, the persister's own code)
  persister   the whole persister on a staged batch of N/4 envelopes of 4 chunks each
              (parse + checksum verification + dedupe + batched insert + run row)

Usage: python benchmarks/batched_writer.py [--rows 5000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rag_pipeline.contracts import (
    AnalysisRun,
    EvidenceText,
    ModelSpec,
    ResultEnvelope,
    TaskSpec,
    stable_hash,
)
from rag_pipeline.settings import Settings
from rag_pipeline.storage import staging
from rag_pipeline.storage.catalog.catalog import open_catalog
from rag_pipeline.storage.persister import _insert_batched, persist_shard

TEXT = (
    "Honey bee colonies overwinter as a cluster, rotating workers from the cold edge to the "
    "warm core; a strong colony consumes about twenty kilograms of stored honey. "
) * 3


def _rows(n: int) -> list[dict]:
    return [
        dict(
            evidence_id=stable_hash(["bench", i], 32),
            tenant_id="default",
            asset_id=f"{i:064x}",
            dedupe_key=stable_hash(["k", i // 4], 32),
            run_id="bench-run",
            task_type="doc_text",
            kind="chunk",
            ordinal=i % 4,
            text=f"{i} {TEXT}",
            confidence=1.0,
            locator=json.dumps({"char_start": i}),
        )
        for i in range(n)
    ]


def per_row(path: Path, rows: list[dict]) -> float:
    with open_catalog(path / "catalog.duckdb", path / "catalog.lock") as cat:
        cols = list(rows[0])
        sql = f"INSERT INTO evidence_text ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        t0 = time.perf_counter()
        for r in rows:
            cat.con.execute("BEGIN TRANSACTION")
            cat.con.execute(sql, [r[c] for c in cols])
            cat.con.execute("COMMIT")
        return time.perf_counter() - t0


def batched(path: Path, rows: list[dict], batch: int) -> float:
    with open_catalog(path / "catalog.duckdb", path / "catalog.lock") as cat:
        t0 = time.perf_counter()
        cat.con.execute("BEGIN TRANSACTION")
        _insert_batched(cat, "evidence_text", rows, batch)
        cat.con.execute("COMMIT")
        return time.perf_counter() - t0


def persister(path: Path, n_rows: int, batch: int) -> tuple[float, int]:
    settings = Settings(data_dir=path / "data", write_batch_rows=batch, shard_count=1)
    spec = ModelSpec(backend="builtin", model_id="rag_pipeline.doc_text", revision="bench")
    run = AnalysisRun(
        run_id="doc_text-bench-00",
        tenant_id="default",
        analyzer="doc_text",
        profile="text-v2",
        model=spec,
        config={},
        config_hash=stable_hash({}),
        partition_key="text-v2|00",
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        status="reported",
    )
    envs = []
    for a in range(n_rows // 4):
        task = TaskSpec(
            task_type="doc_text",
            tenant_id="default",
            asset_id=f"{a:064x}",
            version_id=f"v{a}",
            uri=f"/bench/{a}.md",
            media_type="text/markdown",
            size=100,
            partition_key="text-v2|00",
            model=spec,
            profile="text-v2",
        )
        texts = [
            EvidenceText(kind="chunk", ordinal=o, text=f"{a} {o} {TEXT}", confidence=1.0)
            for o in range(4)
        ]
        envs.append(ResultEnvelope.build(task, run.run_id, texts=texts))
    staging.write_batch(settings.staging_dir, "00", run, envs)
    with open_catalog(settings.catalog_path, settings.lock_path) as cat:
        t0 = time.perf_counter()
        report = persist_shard(settings, cat, "00")
        return time.perf_counter() - t0, report.evidence_text


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    rows = _rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        t_row = per_row(Path(tmp) / "a", rows)
        t_batch = batched(Path(tmp) / "b", rows, args.batch)
        t_pers, n_pers = persister(Path(tmp) / "c", args.rows, args.batch)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; "
        f"rows={args.rows}, batch={args.batch}"
    )
    print(f"{'strategy':<28}{'rows':>8}{'seconds':>10}{'rows/s':>12}{'vs per-row':>12}")
    for name, n, t in (
        ("one commit per row", args.rows, t_row),
        (f"batched ({args.batch}/insert, 1 txn)", args.rows, t_batch),
        ("persister (verify+dedupe+txn)", n_pers, t_pers),
    ):
        print(f"{name:<28}{n:>8}{t:>10.3f}{n / t:>12.0f}{(n / t) / (args.rows / t_row):>11.1f}x")


if __name__ == "__main__":
    main()

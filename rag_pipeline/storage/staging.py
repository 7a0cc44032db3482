"""Staged results: the hand-off from partition workers to the single persister.

A worker writes one Parquet file per analysis run (append-only, named by run id) to a temporary
name and renames it into place, so a worker killed mid-partition leaves nothing a persister can
pick up. The analysis run record travels in the file's metadata.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rag_pipeline.contracts import AnalysisRun, ResultEnvelope

STAGED_SCHEMA = pa.schema(
    [
        ("dedupe_key", pa.string()),
        ("asset_id", pa.string()),
        ("status", pa.string()),
        ("envelope", pa.string()),
    ]
)
_RUN_KEY = b"rag_pipeline.analysis_run"


@dataclass
class StagedBatch:
    path: Path
    run: AnalysisRun
    envelopes_json: list[str]


def shard_dir(staging_dir: Path, key: str) -> Path:
    return staging_dir / f"shard={key}"


def write_batch(
    staging_dir: Path, key: str, run: AnalysisRun, envelopes: list[ResultEnvelope]
) -> Path:
    folder = shard_dir(staging_dir, key)
    folder.mkdir(parents=True, exist_ok=True)
    tbl = pa.table(
        {
            "dedupe_key": [e.task.dedupe_key for e in envelopes],
            "asset_id": [e.task.asset_id for e in envelopes],
            "status": [e.status for e in envelopes],
            "envelope": [e.model_dump_json() for e in envelopes],
        },
        schema=STAGED_SCHEMA,
    )
    tbl = tbl.replace_schema_metadata({_RUN_KEY: run.model_dump_json().encode()})
    final = folder / f"{run.run_id}.parquet"
    tmp = folder / f".{run.run_id}.parquet.tmp"
    pq.write_table(tbl, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def list_batches(staging_dir: Path, key: str) -> list[Path]:
    folder = shard_dir(staging_dir, key)
    if not folder.exists():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def read_batch(path: Path) -> StagedBatch:
    tbl = pq.read_table(path)
    meta = tbl.schema.metadata or {}
    if _RUN_KEY not in meta:
        raise ValueError(f"{path}: staged batch without its analysis run record")
    run = AnalysisRun.model_validate_json(meta[_RUN_KEY])
    return StagedBatch(path=path, run=run, envelopes_json=tbl.column("envelope").to_pylist())


def clear_orphans(staging_dir: Path, key: str, older_than_s: float = 3600.0) -> int:
    """Remove temp files left by killed workers (never visible to the persister).

    Only old ones: a live worker of the same shard may be writing a young one right now.
    """
    folder = shard_dir(staging_dir, key)
    n = 0
    if folder.exists():
        now = time.time()
        for p in folder.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink(missing_ok=True)
                    n += 1
            except FileNotFoundError:
                continue
    return n


def read_batch_keys(path: Path) -> tuple[AnalysisRun, list[str]]:
    """The run record and the dedupe keys of a staged batch, without its payload."""
    tbl = pq.read_table(path, columns=["dedupe_key"])
    meta = tbl.schema.metadata or {}
    if _RUN_KEY not in meta:
        raise ValueError(f"{path}: staged batch without its analysis run record")
    return AnalysisRun.model_validate_json(meta[_RUN_KEY]), tbl.column(0).to_pylist()

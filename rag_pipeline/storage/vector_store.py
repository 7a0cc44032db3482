"""Vector evidence in LanceDB: one table per axis and dimension, append-only per run.

Written only by the persister under the catalog writer lock (LanceDB commits of delete and
merge_insert conflict when concurrent). Rows of a run that never reached 'persisted' are
deleted before that run is persisted again, so a crash between the Lance append and the DuckDB
commit leaves no duplicates.
"""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa


def table_name(axis: str, dim: int) -> str:
    return f"evidence_vectors_{axis}_{dim}"


def vector_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("evidence_id", pa.string()),
            ("tenant_id", pa.string()),
            ("asset_id", pa.string()),
            ("dedupe_key", pa.string()),
            ("run_id", pa.string()),
            ("axis", pa.string()),
            ("target", pa.string()),
            ("dim", pa.int32()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("norm", pa.float32()),
            ("checksum", pa.string()),
        ]
    )


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class VectorStore:
    def __init__(self, lance_dir: Path):
        lance_dir.mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(lance_dir))

    def _table(self, axis: str, dim: int, create: bool):
        name = table_name(axis, dim)
        # Every page of table names (table_names() stopped at 10); the stub lacks __contains__.
        if name in self.db:  # type: ignore[operator]
            return self.db.open_table(name)
        if not create:
            return None
        return self.db.create_table(name, schema=vector_schema(dim))

    def delete_runs(self, axis: str, dim: int, run_ids: list[str]) -> int:
        tbl = self._table(axis, dim, create=False)
        if tbl is None or not run_ids:
            return 0
        cond = f"run_id IN ({', '.join(_quote(r) for r in run_ids)})"
        n = tbl.count_rows(cond)
        if n:
            tbl.delete(cond)
        return n

    def append(self, axis: str, dim: int, rows: dict[str, list], batch_rows: int = 1000) -> int:
        """Append columns (see vector_schema); vectors given as a (n, dim) float32 array."""
        n = len(rows["evidence_id"])
        if n == 0:
            return 0
        tbl = self._table(axis, dim, create=True)
        vectors = np.asarray(rows["vector"], dtype=np.float32).reshape(n, dim)
        schema = vector_schema(dim)
        for start in range(0, n, max(batch_rows, 1)):
            end = min(start + batch_rows, n)
            cols = {k: rows[k][start:end] for k in schema.names if k != "vector"}
            cols["vector"] = pa.FixedSizeListArray.from_arrays(
                pa.array(vectors[start:end].ravel()), dim
            )
            tbl.add(pa.table({k: cols[k] for k in schema.names}, schema=schema))
        return n

    def read(self, axis: str, dim: int, run_ids: list[str]) -> pa.Table | None:
        tbl = self._table(axis, dim, create=False)
        if tbl is None or not run_ids:
            return None
        cond = f"run_id IN ({', '.join(_quote(r) for r in run_ids)})"
        return (
            tbl.search()
            .where(cond)
            .select(["dedupe_key", "run_id", "asset_id", "target", "vector"])
            .limit(None)
            .to_arrow()
        )

    def read_keys(
        self, axis: str, dim: int, dedupe_keys: list[str], run_ids: list[str]
    ) -> pa.Table | None:
        """The vectors of some results (a snapshot batch's): Lance filters on the two key
        columns first and reads the vectors of the matching rows only."""
        tbl = self._table(axis, dim, create=False)
        if tbl is None or not dedupe_keys or not run_ids:
            return None
        cond = (
            f"dedupe_key IN ({', '.join(_quote(k) for k in dedupe_keys)}) "
            f"AND run_id IN ({', '.join(_quote(r) for r in run_ids)})"
        )
        return (
            tbl.search()
            .where(cond)
            .select(["dedupe_key", "target", "vector"])
            .limit(None)
            .to_arrow()
        )

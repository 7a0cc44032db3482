"""The relational catalog (DuckDB), opened only under the writer lock.

``open_catalog`` is the one way in: it takes the lock, opens the database, applies the schema,
and closes everything on exit. Hold it for one short unit of work, never across model inference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from rag_pipeline.contracts import stable_hash
from rag_pipeline.storage.catalog.lock import writer_lock
from rag_pipeline.storage.catalog.schema import CATALOG_SCHEMA_VERSION, DDL, MIGRATIONS


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Catalog:
    con: duckdb.DuckDBPyConnection
    path: Path
    lock_wait_s: float

    # -- generic helpers ------------------------------------------------------------------
    def rows(self, sql: str, params: list | tuple = ()) -> list[dict]:
        cur = self.con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def scalar(self, sql: str, params: list | tuple = ()):
        r = self.con.execute(sql, params).fetchone()
        return r[0] if r else None

    def tenant_counts(self) -> list[dict]:
        """Per tenant: assets, current versions, ok results and unresolved dead letters."""
        return self.rows("""
            WITH t AS (SELECT DISTINCT tenant_id FROM assets UNION
                       SELECT DISTINCT tenant_id FROM dead_letters)
            SELECT t.tenant_id,
              (SELECT count(*) FROM assets a WHERE a.tenant_id = t.tenant_id) AS assets,
              (SELECT count(*) FROM asset_versions v WHERE v.tenant_id = t.tenant_id
                 AND v.is_current) AS current_versions,
              (SELECT count(*) FROM results r WHERE r.tenant_id = t.tenant_id
                 AND r.status = 'ok') AS ok_results,
              (SELECT count(*) FROM dead_letters d WHERE d.tenant_id = t.tenant_id
                 AND d.resolved_at IS NULL) AS dead_letters
            FROM t ORDER BY t.tenant_id""")

    def counts(self, tenant_id: str | None = None) -> dict[str, int]:
        """Row counts per table (optionally for one tenant)."""
        where = " WHERE tenant_id = ?" if tenant_id else ""
        params = [tenant_id] if tenant_id else []
        out = {}
        for t in (
            "assets",
            "asset_versions",
            "analysis_runs",
            "results",
            "evidence_text",
            "dead_letters",
        ):
            out[t] = int(self.scalar(f"SELECT count(*) FROM {t}{where}", params))
        out["current_versions"] = int(
            self.scalar(
                "SELECT count(*) FROM asset_versions WHERE is_current AND tombstoned_at IS NULL"
                + (" AND tenant_id = ?" if tenant_id else ""),
                params,
            )
        )
        return out

    def current_assets_with_text(self, tenant_id: str | None = None) -> int:
        """Current (tenant, asset) pairs with an ok text result (doc_text or image_meta, any
        profile): what a search snapshot is expected to cover (default: every tenant)."""
        sql = (
            "SELECT count(DISTINCT (v.tenant_id, v.asset_id)) FROM asset_versions v JOIN "
            "results r ON r.tenant_id = v.tenant_id AND r.asset_id = v.asset_id AND "
            "r.status = 'ok' AND r.task_type IN ('doc_text', 'image_meta') "
            "WHERE v.is_current"
        )
        if tenant_id is None:
            return int(self.scalar(sql))
        return int(self.scalar(sql + " AND v.tenant_id = ?", [tenant_id]))

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter_count(
        self,
        *,
        error_class: str | None = None,
        tenant_id: str | None = None,
        unresolved_only: bool = True,
    ) -> int:
        """Dead letters, optionally of one error class and one tenant (default: all tenants)."""
        sql, params = "SELECT count(*) FROM dead_letters WHERE 1=1", []
        if error_class:
            sql += " AND error_class = ?"
            params.append(error_class)
        if tenant_id:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        if unresolved_only:
            sql += " AND resolved_at IS NULL"
        return int(self.scalar(sql, params))

    def record_dead_letter(
        self,
        *,
        tenant_id: str,
        uri: str,
        content_hash: str,
        stage: str,
        error_class: str,
        message: str,
        run_id: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Upsert: the same failure seen again refreshes last_seen_at, it adds no row."""
        now = now or utcnow()
        dl_id = stable_hash([tenant_id, uri, content_hash, stage, error_class], 32)
        self.con.execute(
            """
            INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, NULL)
            ON CONFLICT (dead_letter_id) DO UPDATE SET
                -- seen again after a re-drive: one more attempt; seen again otherwise: same row
                attempts = dead_letters.attempts
                           + CASE WHEN dead_letters.resolved_at IS NULL THEN 0 ELSE 1 END,
                last_seen_at = excluded.last_seen_at, message = excluded.message,
                resolved_at = NULL
            """,
            [
                dl_id,
                tenant_id,
                uri,
                content_hash,
                stage,
                error_class,
                message[:2000],
                run_id,
                now,
                now,
            ],
        )

    def dead_letters(
        self, tenant_id: str | None = None, unresolved_only: bool = True
    ) -> list[dict]:
        sql = "SELECT * FROM dead_letters WHERE 1=1"
        params: list = []
        if tenant_id:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        if unresolved_only:
            sql += " AND resolved_at IS NULL"
        return self.rows(sql + " ORDER BY uri, stage", params)

    def redrive(self, tenant_id: str | None = None, error_class: str | None = None) -> int:
        """Forget failed results so the next plan retries them; mark their letters resolved
        (one tenant's, or every tenant's)."""
        cond, params = "status = 'failed' AND tenant_id = coalesce(?, tenant_id)", [tenant_id]
        if error_class:
            # Dependent tasks that failed because of these go with them.
            cond += " AND error_class IN (?, 'UpstreamFailed')"
            params.append(error_class)
        n = int(self.scalar(f"SELECT count(*) FROM results WHERE {cond}", params))
        self.con.execute(f"DELETE FROM results WHERE {cond}", params)
        dl_cond, dl_params = (
            "tenant_id = coalesce(?, tenant_id) AND resolved_at IS NULL",
            [tenant_id],
        )
        if error_class:
            dl_cond += " AND error_class = ?"
            dl_params.append(error_class)
        self.con.execute(
            f"UPDATE dead_letters SET resolved_at = ? WHERE {dl_cond}", [utcnow(), *dl_params]
        )
        return n


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    for stmt in DDL:
        con.execute(stmt)
    row = con.execute("SELECT value FROM schema_meta WHERE key = 'catalog_schema'").fetchone()
    if row is None:
        con.execute(
            "INSERT INTO schema_meta VALUES ('catalog_schema', ?)", [str(CATALOG_SCHEMA_VERSION)]
        )
    elif int(row[0]) > CATALOG_SCHEMA_VERSION:
        raise RuntimeError(
            f"catalog schema {row[0]} is newer than this build "
            f"({CATALOG_SCHEMA_VERSION}); upgrade rag_pipeline"
        )
    elif int(row[0]) < CATALOG_SCHEMA_VERSION:
        for version in range(int(row[0]) + 1, CATALOG_SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS.get(version, ()):
                con.execute(stmt)
        con.execute(
            "UPDATE schema_meta SET value = ? WHERE key = 'catalog_schema'",
            [str(CATALOG_SCHEMA_VERSION)],
        )


@contextmanager
def open_catalog(
    catalog_path: Path, lock_path: Path, *, read_only: bool = False, timeout_s: float = 600.0
) -> Iterator[Catalog]:
    """Lock, open, migrate; commit nothing implicitly: callers use transactions."""
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(lock_path, timeout_s=timeout_s) as waited:
        ro = read_only and catalog_path.exists()
        con = duckdb.connect(str(catalog_path), read_only=ro)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if not ro:
                _migrate(con)
            yield Catalog(con=con, path=catalog_path, lock_wait_s=waited)
        finally:
            con.close()


def open_settings_catalog(settings, *, read_only: bool = False):
    return open_catalog(settings.catalog_path, settings.lock_path, read_only=read_only)


def to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

"""Ingest jobs: uploads and deletions that the HTTP API accepts and Dagster carries out.

Design: an outbox in the serving state store, not a call into Dagster. ``POST /v1/documents``
stores the files in the tenant's upload source (``rag_pipeline.uploads``) and inserts an
``ingest_jobs`` row (state ``queued``) in the same database as the API keys and the audit log;
``DELETE /v1/documents/{asset_id}`` removes the upload and queues a job the same way. The
Dagster sensor ``ingest_sensor`` (``rag_pipeline/defs/catalog/ingest.py``) turns each queued row
into a ``discover_job`` run whose run key is the job id (so a job is launched at most once, even
if the sensor ticks twice), tagged like the file sensor's runs, so the existing chain
(``discover_done_sensor`` -> analysis partitions -> ``analysis_done_sensor`` -> ``publish_job``)
analyses, publishes and promotes. The same sensor writes back the discovery run id, the state
and, once the chain's publish run is done, the dead letters of the job's files.

Why not launch over Dagster's GraphQL API: serving would depend on a webserver being up (and
reachable, and authenticated) at request time and would need a second request to learn the
outcome; with the outbox an upload is accepted while Dagster is down or busy and runs when it
is back, serving imports no Dagster and talks to nothing but its own database, and the run key
makes the launch idempotent. The price: the run id is known one sensor tick (5 s) after the
upload, so the POST answers ``queued`` and ``GET /v1/jobs/{id}`` shows the run id.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from rag_pipeline import uploads
from rag_pipeline.settings import Settings, shard_key, shard_of
from serving.querylog import as_utc, audit, utcnow

JobState = Literal["queued", "running", "succeeded", "failed"]
JobKind = Literal["upload", "delete"]
ACTIVE_STATES = ("queued", "running")

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)
ingest_jobs = sa.Table(
    "ingest_jobs",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False, index=True),
    sa.Column("key_id", sa.String(40), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=True),  # the chain's discovery run
    sa.Column("shards", sa.JSON, nullable=False),  # shards the job touches (TOUCHED tag)
    sa.Column("files", sa.JSON, nullable=False),  # [{asset_id, name, path, size, media_type}]
    sa.Column("dead_letters", sa.JSON, nullable=True),
    sa.Column("promoted", sa.Boolean, nullable=True),  # did the chain's snapshot pass its gate
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("finished_at", _TS, nullable=True),
)
# One row per stored upload (tenant + path inside the tenant's upload source): what makes the
# same bytes posted twice one file, and what DELETE finds by asset id.
ingest_uploads = sa.Table(
    "ingest_uploads",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("path", sa.String(512), primary_key=True),  # <groups>/<sha256>/<name>
    sa.Column("asset_id", sa.String(64), nullable=False, index=True),
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("deleted_at", _TS, nullable=True),
    sa.Column("delete_job_id", sa.String(40), nullable=True),
)


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


@dataclass
class IngestJob:
    job_id: str
    tenant: str
    kind: str
    state: str
    run_id: str | None
    shards: list[str]
    files: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]] | None = None
    promoted: bool | None = None
    error: str | None = None
    key_id: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> IngestJob:
        return cls(
            job_id=row.job_id,
            tenant=row.tenant,
            kind=row.kind,
            state=row.state,
            run_id=row.run_id,
            shards=list(row.shards or []),
            files=list(row.files or []),
            dead_letters=row.dead_letters,
            promoted=row.promoted,
            error=row.error,
            key_id=row.key_id,
            created_at=as_utc(row.created_at),
            finished_at=as_utc(row.finished_at),
        )


@dataclass
class StoredFile:
    """A file received and stored (or found already stored) in the upload source."""

    asset_id: str
    name: str
    path: str  # inside the tenant's upload source
    size: int
    media_type: str
    duplicate: bool = False
    job_id: str | None = None  # the job that ingested it (the existing one for a duplicate)


@dataclass
class Received:
    """One incoming file, spooled to a temporary file while it was hashed and counted."""

    tmp: Path
    name: str
    sha256: str
    size: int
    media_type: str


def spool(
    settings: Settings, tenant: str, chunks: Iterable[bytes], limit: int
) -> tuple[Path, str, int] | None:
    """Write ``chunks`` to a temporary file in the tenant's hidden ``.incoming`` folder (dot
    folders are never discovered), hashing as it goes: (path, sha256, size), or None (and
    nothing left behind) when it grows over ``limit`` bytes."""
    incoming = uploads.tenant_dir(settings, tenant) / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=incoming)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                digest.update(chunk)
                out.write(chunk)
    except _TooLarge:
        Path(name).unlink(missing_ok=True)
        return None
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), digest.hexdigest(), size


class _TooLarge(Exception):
    pass


class IngestStore:
    """Ingest jobs and uploads in the serving database (``engine``: the key store's)."""

    def __init__(self, engine: sa.Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    # -- serving ----------------------------------------------------------------------------
    def store_upload(
        self,
        tenant: str,
        groups: frozenset[str],
        files: list[Received],
        *,
        key_id: str | None,
        request_id: str | None,
    ) -> tuple[IngestJob | None, list[StoredFile]]:
        """Move the received files into place and queue one job for those that are new.
        Bytes already uploaded by this tenant with these groups are not stored again: their
        entry says ``duplicate`` and names the job that ingested them. Returns (the new job,
        or None when every file was a duplicate; one entry per file)."""
        try:
            return self._store_upload(tenant, groups, files, key_id, request_id)
        except sa.exc.IntegrityError:
            # The same bytes in a concurrent request won the (tenant, path) key: now they are
            # duplicates of its job.
            return self._store_upload(tenant, groups, files, key_id, request_id)

    def _store_upload(
        self,
        tenant: str,
        groups: frozenset[str],
        files: list[Received],
        key_id: str | None,
        request_id: str | None,
    ) -> tuple[IngestJob | None, list[StoredFile]]:
        job_id = new_job_id()
        moves: list[tuple[Path, Path]] = []
        folder = uploads.groups_folder(groups)
        out: list[StoredFile] = []
        new: list[StoredFile] = []
        now = utcnow()
        with self.engine.begin() as conn:
            for rec in files:
                existing = next(
                    (
                        r
                        for r in conn.execute(
                            sa.select(ingest_uploads).where(
                                ingest_uploads.c.tenant == tenant,
                                ingest_uploads.c.asset_id == rec.sha256,
                                ingest_uploads.c.deleted_at.is_(None),
                            )
                        )
                        if r.path.startswith(f"{folder}/{rec.sha256}/")
                    ),
                    None,
                )
                if existing is None:
                    # the same bytes twice in one request: one file
                    existing_new = next((f for f in new if f.asset_id == rec.sha256), None)
                    if existing_new is not None:
                        rec.tmp.unlink(missing_ok=True)
                        out.append(_dup(existing_new, job_id))
                        continue
                if existing is not None:
                    rec.tmp.unlink(missing_ok=True)
                    out.append(
                        StoredFile(
                            asset_id=rec.sha256,
                            name=Path(existing.path).name,
                            path=existing.path,
                            size=rec.size,
                            media_type=rec.media_type,
                            duplicate=True,
                            job_id=existing.job_id,
                        )
                    )
                    continue
                target = uploads.content_dir(self.settings, tenant, groups, rec.sha256)
                moves.append((rec.tmp, target / rec.name))
                rel = f"{folder}/{rec.sha256}/{rec.name}"
                conn.execute(  # an earlier upload of this path that was deleted
                    ingest_uploads.delete().where(
                        ingest_uploads.c.tenant == tenant,
                        ingest_uploads.c.path == rel,
                        ingest_uploads.c.deleted_at.is_not(None),
                    )
                )
                conn.execute(
                    ingest_uploads.insert().values(
                        tenant=tenant,
                        path=rel,
                        asset_id=rec.sha256,
                        groups=sorted(groups),
                        job_id=job_id,
                        created_at=now,
                    )
                )
                stored = StoredFile(
                    asset_id=rec.sha256,
                    name=rec.name,
                    path=rel,
                    size=rec.size,
                    media_type=rec.media_type,
                    job_id=job_id,
                )
                new.append(stored)
                out.append(stored)
            job = None
            if new:
                job = self._queue(
                    conn, job_id, tenant, "upload", new, key_id=key_id, request_id=request_id
                )
            audit(
                conn,
                "ingest.upload",
                key_id,
                target=job_id if new else None,
                tenant=tenant,
                details={
                    "files": [
                        {"asset_id": f.asset_id, "name": f.name, "duplicate": f.duplicate}
                        for f in out
                    ],
                    "request_id": request_id,
                },
            )
        # After the commit: a key conflict above has moved nothing. Each rename is atomic, so
        # discovery never sees half a file.
        for tmp, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        return job, out

    def delete_upload(
        self,
        tenant: str,
        groups: frozenset[str],
        asset_id: str,
        *,
        key_id: str | None,
        request_id: str | None,
    ) -> IngestJob | None:
        """Remove this tenant's uploads of ``asset_id`` that ``groups`` can read and queue the
        job that tombstones them; None when there is none."""
        now = utcnow()
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(ingest_uploads).where(
                    ingest_uploads.c.tenant == tenant,
                    ingest_uploads.c.asset_id == asset_id,
                    ingest_uploads.c.deleted_at.is_(None),
                )
            ).all()
            rows = [r for r in rows if set(r.groups) & set(groups)]
            if not rows:
                return None
            job_id = new_job_id()
            files = []
            base = uploads.tenant_dir(self.settings, tenant)
            for r in rows:
                path = base / r.path
                files.append(
                    StoredFile(
                        asset_id=asset_id,
                        name=path.name,
                        path=r.path,
                        size=path.stat().st_size if path.exists() else 0,
                        media_type="",
                    )
                )
                conn.execute(
                    ingest_uploads.update()
                    .where(ingest_uploads.c.tenant == tenant, ingest_uploads.c.path == r.path)
                    .values(deleted_at=now, delete_job_id=job_id)
                )
            job = self._queue(
                conn, job_id, tenant, "delete", files, key_id=key_id, request_id=request_id
            )
            audit(
                conn,
                "ingest.delete",
                key_id,
                target=job_id,
                tenant=tenant,
                details={"asset_id": asset_id, "paths": [r.path for r in rows]},
            )
        for r in rows:  # once the rows say so: a failed commit leaves the files in place
            shutil.rmtree((base / r.path).parent, ignore_errors=True)  # the <sha256> folder
        return job

    def _queue(
        self,
        conn: sa.Connection,
        job_id: str,
        tenant: str,
        kind: str,
        files: list[StoredFile],
        *,
        key_id: str | None,
        request_id: str | None,
    ) -> IngestJob:
        now = utcnow()
        shards = sorted({shard_key(shard_of(f.asset_id, self.settings.shard_count)) for f in files})
        row: dict[str, Any] = {
            "job_id": job_id,
            "tenant": tenant,
            "key_id": key_id,
            "kind": kind,
            "state": "queued",
            "run_id": None,
            "shards": shards,
            "files": [
                {
                    "asset_id": f.asset_id,
                    "name": f.name,
                    "path": f.path,
                    "size": f.size,
                    "media_type": f.media_type,
                }
                for f in files
            ],
            "request_id": request_id,
            "created_at": now,
            "updated_at": now,
        }
        conn.execute(ingest_jobs.insert().values(**row))
        return IngestJob(**{k: row[k] for k in IngestJob.__dataclass_fields__ if k in row})

    def job(self, job_id: str, tenant: str) -> IngestJob | None:
        """A job of ``tenant`` (another tenant's is None: the API answers 404 for both)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ingest_jobs).where(
                    ingest_jobs.c.job_id == job_id, ingest_jobs.c.tenant == tenant
                )
            ).first()
        return IngestJob.of(row) if row is not None else None

    # -- the Dagster sensor -------------------------------------------------------------------
    def active(self) -> list[IngestJob]:
        """Jobs queued or running, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ingest_jobs)
                .where(ingest_jobs.c.state.in_(ACTIVE_STATES))
                .order_by(ingest_jobs.c.created_at)
            ).all()
        return [IngestJob.of(r) for r in rows]

    def update(
        self,
        job_id: str,
        *,
        state: str,
        run_id: str | None = None,
        dead_letters: list[dict[str, Any]] | None = None,
        promoted: bool | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "updated_at": utcnow()}
        if promoted is not None:
            values["promoted"] = promoted
        if run_id is not None:
            values["run_id"] = run_id
        if dead_letters is not None:
            values["dead_letters"] = dead_letters
        if error is not None:
            values["error"] = error[:500]
        if state not in ACTIVE_STATES:
            values["finished_at"] = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                ingest_jobs.update().where(ingest_jobs.c.job_id == job_id).values(**values)
            )

    def file_uri(self, tenant: str, path: str) -> str:
        """A job file's absolute path, as discovery records it (the dead letters' ``uri``)."""
        return str(Path(os.path.abspath(uploads.tenant_dir(self.settings, tenant))) / path)


def _dup(first: StoredFile, job_id: str) -> StoredFile:
    return StoredFile(
        asset_id=first.asset_id,
        name=first.name,
        path=first.path,
        size=first.size,
        media_type=first.media_type,
        duplicate=True,
        job_id=job_id,
    )


def open_store(settings: Settings) -> IngestStore | None:
    """The store on the settings' serving database, for the Dagster side; None when there is
    no database yet (no key was ever created, so nothing can have been uploaded)."""
    url = settings.serving_db_url
    if url is None:
        path = settings.serving_db_path
        if not path.exists():
            return None
        url = f"sqlite:///{path.resolve()}"
    connect_args: dict[str, Any] = (
        {"timeout": 5}
        if url.startswith("sqlite")
        else ({"connect_timeout": 5} if url.startswith("postgresql") else {})
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
    create_tables(engine)
    return IngestStore(engine, settings)


__all__ = [
    "IngestJob",
    "IngestStore",
    "Received",
    "StoredFile",
    "create_tables",
    "ingest_jobs",
    "ingest_uploads",
    "open_store",
    "spool",
]

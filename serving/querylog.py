"""The query log, feedback and the audit log: tables in the serving state store (the API key
store's database: SQLite ``serving.db`` by default, PostgreSQL with ``RAG_SERVING_DB_URL``).

* ``query_log``: every search and similar request served (tenant, key id, request id, the query
  text or asset id, query type, snapshot id, hits with their files, per-stage latencies) under
  the ``query_id`` the response carries. Kept ``RAG_QUERY_LOG_DAYS`` days
  (``rag-pipeline querylog purge``).
* ``feedback``: ``POST /v1/feedback`` judgements (relevant / not_relevant, optional note) of a
  unit in a logged query's results, only by a key of the query's tenant. Purged with the query
  log. ``rag-pipeline eval labels --from-feedback`` turns them into a gold set.
* ``audit_log``: append-only administrative actions (keys created and revoked, ingest requests):
  nothing here updates or deletes its rows, and the purge leaves it alone.

Query-log writes go through a bounded queue to one writer thread that inserts in batches, so a
request pays for a ``put_nowait`` (microseconds), not a database round trip (a SQLite commit
with fsync is milliseconds; a PostgreSQL insert a network round trip). Measured on SQLite (a
10-hit row): a synchronous insert 2.4 ms median, 17 ms p95; the enqueue 2 us median, 5 us
p95. When the queue is full
(the database is down or slow) records are dropped and counted
(``rag_query_log_dropped_total``), never blocking search.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("serving.querylog")

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)

query_log = sa.Table(
    "query_log",
    metadata,
    sa.Column("query_id", sa.String(40), primary_key=True),
    sa.Column("created_at", _TS, nullable=False, index=True),
    sa.Column("tenant", sa.String(128), nullable=False, index=True),
    sa.Column("key_id", sa.String(40), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("op", sa.String(16), nullable=False),  # search | similar | ask
    sa.Column("query", sa.Text, nullable=False),  # text, or the asset id (similar)
    sa.Column("query_type", sa.String(32), nullable=True),
    sa.Column("k", sa.Integer, nullable=True),
    sa.Column("snapshot_id", sa.String(200), nullable=True),
    sa.Column("hits", sa.JSON, nullable=False),  # [{unit_id, source, path, ...}]
    sa.Column("timings_ms", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=True),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", sa.String(40), primary_key=True),
    sa.Column("created_at", _TS, nullable=False, index=True),
    sa.Column("query_id", sa.String(40), nullable=False, index=True),
    sa.Column("tenant", sa.String(128), nullable=False, index=True),
    sa.Column("key_id", sa.String(40), nullable=True),
    sa.Column("unit_id", sa.String(200), nullable=False),
    sa.Column("judgement", sa.String(16), nullable=False),  # relevant | not_relevant
    sa.Column("note", sa.Text, nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", _TS, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),  # key id, or cli:<user>
    sa.Column("action", sa.String(64), nullable=False),  # key.create, key.revoke, ingest
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("tenant", sa.String(128), nullable=True),
    sa.Column("details", sa.JSON, nullable=True),
)

JUDGEMENTS = ("relevant", "not_relevant")
QUEUE_MAX = 10_000
BATCH_MAX = 256


class QueryNotFound(LookupError):
    """No such query (for this tenant), or no such unit among its hits."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Timestamps are stored in UTC; SQLite returns them naive."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_query_id() -> str:
    return "q_" + uuid.uuid4().hex


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def audit(
    conn: sa.Connection,
    action: str,
    actor: str | None = None,
    *,
    target: str | None = None,
    tenant: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row in ``conn``'s transaction (so the action and its record commit
    together)."""
    conn.execute(
        audit_log.insert().values(
            created_at=utcnow(),
            actor=(actor or cli_actor())[:200],
            action=action[:64],
            target=target,
            tenant=tenant,
            details=dict(details) if details else None,
        )
    )


def hit_summary(hits: list[Any]) -> list[dict[str, Any]]:
    """What the log keeps of a response's hits: enough to judge them and to label files."""
    return [
        {
            "rank": i,
            "unit_id": h.unit_id,
            "source": h.source,
            "path": h.path,
            "kind": h.kind,
            "score": round(float(h.score), 6),
        }
        for i, h in enumerate(hits, start=1)
    ]


class QueryLog:
    """Query log, feedback and audit over ``engine`` (the key store's). ``start()`` runs the
    writer thread; ``record()`` enqueues; ``flush()`` waits for the queue to drain."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        retention_days: int = 30,
        on_drop: Callable[[int], None] | None = None,
        create: bool = True,
    ):
        self.engine = engine
        self.retention_days = retention_days
        self.on_drop = on_drop
        if create:
            create_tables(engine)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    # -- the writer --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.flush(timeout)
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1)
            self._thread.join(timeout)
        self._thread = None

    def record(self, row: dict[str, Any]) -> bool:
        """Enqueue one ``query_log`` row (False: dropped, the queue is full)."""
        row.setdefault("created_at", utcnow())
        with self._cond:
            self._pending += 1
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._done(1)
            self._dropped(1)
            return False
        if self._thread is None:  # not started (a test, a CLI): write now
            item = self._queue.get_nowait()
            if item is not None:
                self._write([item])
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything enqueued is written (or dropped); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _done(self, n: int) -> None:
        with self._cond:
            self._pending -= n
            self._cond.notify_all()

    def _dropped(self, n: int) -> None:
        if self.on_drop is not None:
            self.on_drop(n)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH_MAX:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._write(batch)
            if stop:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(query_log.insert(), rows)
        except Exception as exc:
            log.warning("query log: %d records not written: %s", len(rows), type(exc).__name__)
            self._dropped(len(rows))
        finally:
            self._done(len(rows))

    # -- feedback ----------------------------------------------------------------------------
    def _query(self, query_id: str, tenant: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(query_log.c.query_id, query_log.c.hits).where(
                    query_log.c.query_id == query_id, query_log.c.tenant == tenant
                )
            ).first()

    def add_feedback(
        self,
        *,
        tenant: str,
        key_id: str | None,
        query_id: str,
        unit_id: str,
        judgement: str,
        note: str | None = None,
    ) -> str:
        """Record a judgement of ``unit_id`` in the results of ``query_id``; ``QueryNotFound``
        unless the query is this tenant's and the unit among its hits."""
        if judgement not in JUDGEMENTS:
            raise ValueError(f"judgement must be one of {list(JUDGEMENTS)}")
        row = self._query(query_id, tenant)
        if row is None and self._pending:
            self.flush(2.0)  # the query may still be on its way to the table
            row = self._query(query_id, tenant)
        if row is None:
            raise QueryNotFound("no such query")
        if not any(h.get("unit_id") == unit_id for h in row.hits or ()):
            raise QueryNotFound("no such unit in that query's results")
        fid = "fb_" + uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                feedback.insert().values(
                    feedback_id=fid,
                    created_at=utcnow(),
                    query_id=query_id,
                    tenant=tenant,
                    key_id=key_id,
                    unit_id=unit_id,
                    judgement=judgement,
                    note=note,
                )
            )
        return fid

    def feedback_rows(self, tenant: str | None = None) -> Iterator[dict[str, Any]]:
        """Every judgement with its query (text, type, op) and the judged unit's file."""
        q = (
            sa.select(
                feedback,
                query_log.c.query,
                query_log.c.query_type,
                query_log.c.op,
                query_log.c.hits,
                query_log.c.snapshot_id,
            )
            .join(query_log, query_log.c.query_id == feedback.c.query_id)
            .order_by(feedback.c.created_at, feedback.c.feedback_id)
        )
        if tenant is not None:
            q = q.where(feedback.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        for r in rows:
            hit: dict[str, Any] = next(
                (h for h in r.hits or () if h.get("unit_id") == r.unit_id), {}
            )
            yield {
                "feedback_id": r.feedback_id,
                "created_at": as_utc(r.created_at),
                "query_id": r.query_id,
                "tenant": r.tenant,
                "query": r.query,
                "query_type": r.query_type,
                "op": r.op,
                "unit_id": r.unit_id,
                "source": hit.get("source"),
                "path": hit.get("path"),
                "rank": hit.get("rank"),
                "judgement": r.judgement,
                "note": r.note,
                "snapshot_id": r.snapshot_id,
            }

    # -- retention ---------------------------------------------------------------------------
    def purge(self, days: int | None = None, now: datetime | None = None) -> dict[str, int]:
        """Delete query-log and feedback rows older than ``days`` (default: the retention).
        The audit log is append-only: never purged."""
        days = self.retention_days if days is None else days
        if days < 0:
            raise ValueError("--days must be 0 or more")
        cutoff = (now or utcnow()) - timedelta(days=days)
        with self.engine.begin() as conn:
            old = sa.select(query_log.c.query_id).where(query_log.c.created_at < cutoff)
            n_fb = conn.execute(
                feedback.delete().where(
                    sa.or_(feedback.c.created_at < cutoff, feedback.c.query_id.in_(old))
                )
            ).rowcount
            n_q = conn.execute(query_log.delete().where(query_log.c.created_at < cutoff)).rowcount
        return {"query_log": int(n_q or 0), "feedback": int(n_fb or 0)}

    def audit_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).all()
        return [dict(r._mapping) | {"created_at": as_utc(r.created_at)} for r in rows]

    def audit(self, action: str, actor: str | None = None, **kw: Any) -> None:
        with self.engine.begin() as conn:
            audit(conn, action, actor, **kw)


__all__ = [
    "JUDGEMENTS",
    "QueryLog",
    "QueryNotFound",
    "audit",
    "audit_log",
    "create_tables",
    "feedback",
    "hit_summary",
    "new_query_id",
    "query_log",
]

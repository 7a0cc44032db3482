"""API keys: the HTTP API's own state (never the pipeline catalog).

A key is ``rag_`` + 32 random bytes, URL-safe base64 (43 characters). It is shown once, when
created; the store keeps only its SHA-256, with the tenant and ACL groups it reads as, its
scopes and its created / expires / revoked / last-used times.

Storage: SQLAlchemy Core, SQLite ``<data dir>/serving.db`` by default, any SQLAlchemy URL in
``RAG_SERVING_DB_URL`` (PostgreSQL in production). Lookups by hash are cached for
``RAG_KEY_CACHE_S`` seconds (hits and misses alike), so a revocation, an expiry or a new key
takes effect within that bound; ``last_used_at`` is written at most once a minute per key, so
reads do not write on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from rag_pipeline.settings import Settings
from serving.ingest import create_tables as create_ingest_tables
from serving.principal import TENANT_WIDE_GROUP, Principal
from serving.querylog import as_utc, audit, utcnow
from serving.querylog import create_tables as create_log_tables

log = logging.getLogger(__name__)

KEY_PREFIX = "rag_"
KEY_BYTES = 32
SCOPES = ("read", "write", "admin")
# A key as clients send it: the prefix and URL-safe base64 (what ``new_key`` makes).
KEY_PATTERN = re.compile(r"^rag_[A-Za-z0-9_-]{43,128}$")
LAST_USED_EVERY_S = 60.0
CACHE_MAX_ENTRIES = 10_000

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    # the key's own rate limit (requests/minute, bucket size); NULL: the settings' defaults
    sa.Column("rate_per_min", sa.Integer, nullable=True),
    sa.Column("burst", sa.Integer, nullable=True),
)
# Columns added after the table's first release: added to older stores when they are opened.
_ADDED_COLUMNS = {"rate_per_min": "INTEGER", "burst": "INTEGER"}


class KeyStoreError(RuntimeError):
    """The key store cannot be read (down, missing, not initialised)."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """One key's record, without its hash."""

    key_id: str
    name: str
    tenant: str
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_per_min: int | None = None
    burst: int | None = None

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(tenant=self.tenant, groups=frozenset(self.groups), key_id=self.key_id)

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: never the key or its hash."""
        iso = lambda t: t.isoformat(timespec="seconds") if t else None  # noqa: E731
        return {
            "key_id": self.key_id,
            "name": self.name,
            "tenant": self.tenant,
            "groups": list(self.groups),
            "scopes": list(self.scopes),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
            "rate_per_min": self.rate_per_min,
            "burst": self.burst,
            "state": self.state(),
        }


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        name=row.name or "",
        tenant=row.tenant,
        groups=tuple(row.groups or ()),
        scopes=tuple(row.scopes or ()),
        created_at=as_utc(row.created_at) or utcnow(),  # NOT NULL in the table
        expires_at=as_utc(row.expires_at),
        revoked_at=as_utc(row.revoked_at),
        last_used_at=as_utc(row.last_used_at),
        rate_per_min=getattr(row, "rate_per_min", None),
        burst=getattr(row, "burst", None),
    )


def parse_expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``90m``, an ISO date or datetime (naive: UTC), or None / ``never``."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    text = text.strip()
    m = re.fullmatch(r"(\d+)\s*([dhm])", text.lower())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]
        return (now or utcnow()) + delta
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--expires {text!r}: use 30d, 12h, 90m or an ISO date/datetime") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class KeyStore:
    """API keys in a SQL database, with a short-lived lookup cache."""

    def __init__(self, url: str, *, cache_s: float = 5.0, create: bool = True):
        self.url = url
        self.cache_s = float(cache_s)
        self._sqlite_path: Path | None = None
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = sa.make_url(url).database
            if path and path != ":memory:":
                self._sqlite_path = Path(path)
            connect_args = {"check_same_thread": False, "timeout": 5}
        else:
            connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
        if create:
            self._create_schema(url, connect_args)
        if self._sqlite_path is not None:
            # mode=rw: a store whose file vanished fails (and readiness says so) rather than
            # coming back empty; one connection per use, so nothing outlives the file either.
            self.engine = sa.create_engine(
                f"sqlite:///file:{self._sqlite_path}?mode=rw&uri=true",
                poolclass=NullPool,
                connect_args=connect_args,
            )
        else:
            self.engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=4,
                pool_timeout=5,
                connect_args=connect_args,
            )
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, KeyInfo | None]] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._limits: dict[str, tuple[int | None, int | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, create: bool = True) -> KeyStore:
        url = settings.serving_db_url
        if url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{settings.serving_db_path.resolve()}"
        return cls(url, cache_s=settings.key_cache_s, create=create)

    def _create_schema(self, url: str, connect_args: dict[str, Any]) -> None:
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            metadata.create_all(engine)
            create_log_tables(engine)  # query log, feedback, audit: the same database
            create_ingest_tables(engine)  # ingest jobs and uploads (serving.ingest)
            have = {c["name"] for c in sa.inspect(engine).get_columns("api_keys")}
            with engine.begin() as conn:
                for name, type_ in _ADDED_COLUMNS.items():
                    if name not in have:
                        conn.execute(sa.text(f"ALTER TABLE api_keys ADD COLUMN {name} {type_}"))
        except sa.exc.SQLAlchemyError as exc:
            raise KeyStoreError(f"cannot open the key store: {type(exc).__name__}") from exc
        finally:
            engine.dispose()
        if self._sqlite_path is not None:
            self._sqlite_path.chmod(0o600)  # hashes only, but nobody else's business

    def describe(self) -> str:
        """The store's location without credentials."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- administration (CLI) --------------------------------------------------------------
    def create(
        self,
        tenant: str,
        *,
        groups: list[str] | None = None,
        scopes: list[str] | None = None,
        name: str = "",
        expires_at: datetime | None = None,
        rate_per_min: int | None = None,
        burst: int | None = None,
        actor: str | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key: (the key, shown once; its record). Audited (``key.create``) as
        ``actor`` (default: ``cli:<user>``). ``rate_per_min`` / ``burst``: its own rate limit
        (None: the server's defaults; a rate of 0: no limit)."""
        for label, v in (("rate", rate_per_min), ("burst", burst)):
            if v is not None and v < 0:
                raise ValueError(f"--{label} must be 0 or more")
        principal = Principal(tenant=tenant, groups=groups or [TENANT_WIDE_GROUP])
        scopes = list(dict.fromkeys(s.strip() for s in (scopes or ["read"]) if s.strip()))
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"unknown scopes {bad}; known: {list(SCOPES)}")
        if len(name) > 200:
            raise ValueError("key name: at most 200 characters")
        key = new_key()
        row = {
            "key_id": "key_" + uuid.uuid4().hex[:16],
            "key_hash": key_hash(key),
            "name": name,
            "tenant": principal.tenant,
            "groups": sorted(principal.groups),
            "scopes": scopes,
            "created_at": utcnow(),
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
            "rate_per_min": rate_per_min,
            "burst": burst,
        }
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
            audit(
                conn,
                "key.create",
                actor,
                target=str(row["key_id"]),
                tenant=principal.tenant,
                details={
                    "scopes": scopes,
                    "groups": row["groups"],
                    "name": name,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
        return key, _info(_Row(row))

    def list(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_info(r) for r in rows]

    def revoke(self, key_id: str, actor: str | None = None) -> bool:
        """Revoke a key (idempotent); False when there is no such key. Servers notice within
        ``cache_s`` seconds. Audited (``key.revoke``) when it changes the key."""
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(api_keys.c.revoked_at, api_keys.c.tenant).where(
                    api_keys.c.key_id == key_id
                )
            ).first()
            if found is None:
                return False
            if found.revoked_at is None:
                conn.execute(
                    api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=utcnow())
                )
                audit(conn, "key.revoke", actor, target=key_id, tenant=found.tenant)
        self.clear_cache()
        return True

    def active_count(self) -> int:
        now = utcnow()
        return sum(1 for k in self.list() if k.state(now) == "active")

    # -- serving -----------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise ``KeyStoreError`` unless the store answers a query on its table."""
        try:
            with self.engine.connect() as conn:
                conn.execute(
                    sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.key_id == "")
                ).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc

    def cached(self, key: str) -> tuple[bool, KeyInfo | None]:
        """(found in the cache, record): a lookup that does no I/O (for the event loop)."""
        digest = key_hash(key)
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(digest)
            if entry is not None and entry[0] > now:
                return True, entry[1]
        return False, None

    def lookup(self, key: str) -> KeyInfo | None:
        """The key's record (any state) or None; cached for ``cache_s`` seconds. Raises
        ``KeyStoreError`` when the store does not answer."""
        hit, info = self.cached(key)
        if hit:
            return info
        digest = key_hash(key)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest)).first()
        except sa.exc.SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        # The index found the row by hash; compare in constant time all the same.
        info = (
            _info(row)
            if row is not None and hmac.compare_digest(row.key_hash.encode(), digest.encode())
            else None
        )
        if info is not None:
            with self._lock:
                if len(self._limits) > CACHE_MAX_ENTRIES:
                    self._limits.clear()
                self._limits[info.key_id] = (info.rate_per_min, info.burst)
        if self.cache_s > 0:
            with self._lock:
                self._cache[digest] = (time.monotonic() + self.cache_s, info)
                self._cache.move_to_end(digest)
                while len(self._cache) > CACHE_MAX_ENTRIES:
                    self._cache.popitem(last=False)
        return info

    def limits_of(self, key_id: str) -> tuple[int | None, int | None]:
        """The key's own (rate per minute, burst), as of its last lookup (no I/O)."""
        return self._limits.get(key_id, (None, None))

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def needs_touch(self, key_id: str) -> bool:
        """True at most once a minute per key (per process): time to record ``last_used_at``."""
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < LAST_USED_EVERY_S:
                return False
            self._touched[key_id] = now
            if len(self._touched) > CACHE_MAX_ENTRIES:
                self._touched.clear()
        return True

    def touch(self, key_id: str) -> None:
        """Record that a key was used now (best effort: a failure is logged, not raised)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id)
                    .values(last_used_at=utcnow())
                )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not record last use of key %s: %s", key_id, type(exc).__name__)


class _Row:
    """Attribute access to a dict, for ``_info`` on a row just inserted."""

    def __init__(self, d: dict[str, Any]):
        self.__dict__.update(d)

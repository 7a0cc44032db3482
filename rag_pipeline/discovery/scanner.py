"""Discovery: walk the configured sources and record what is there.

Each regular file of each configured source (``discovery.sources``) becomes an observation of
that source's tenant. Its bytes are hashed (content identity = (tenant, asset)) unless its
(tenant, uri, size, mtime_ns, sidecars) match the current version, in which case it is
unchanged. New states become asset_versions; states no longer seen (in any tenant) are
tombstoned; files that cannot be read at all become dead letters with an error class. Every
version carries its source's name and the file's ACL groups; a changed ACL updates the current
version in place (no new version, so nothing is analysed again). Nothing here opens a model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rag_pipeline import errors
from rag_pipeline.contracts import stable_hash
from rag_pipeline.discovery.sources import SourceConfig, load_sources
from rag_pipeline.media_types import (
    detect_media_type,
    is_image,
    is_sidecar,
    sidecar_candidates,
)
from rag_pipeline.settings import Settings, shard_of
from rag_pipeline.storage.catalog.catalog import Catalog, utcnow


@dataclass
class FileObservation:
    uri: str
    source: str
    rel_path: str
    size: int
    mtime_ns: int
    sidecar_state: str  # names, sizes and mtimes of sidecars: cheap change detection
    tenant: str = ""
    source_name: str = ""
    acl_groups: list[str] = field(default_factory=list)

    @property
    def acl_state(self) -> str:
        """Tenant, source name and groups: a change is an ACL change, not a content change."""
        return stable_hash([self.tenant, self.source_name, self.acl_groups], 16)


@dataclass
class ScanFailure:
    uri: str
    error: errors.AnalysisError


@dataclass
class ScanReport:
    files_seen: int = 0
    unchanged: int = 0
    new_versions: int = 0
    new_assets: int = 0
    tombstoned: int = 0
    acl_updated: int = 0  # current versions whose source name or ACL groups changed in place
    dead_letters: int = 0
    touched_shards: set[int] = field(default_factory=set)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (uri, error_class)

    def as_metadata(self) -> dict:
        return {
            "files_seen": self.files_seen,
            "unchanged": self.unchanged,
            "new_versions": self.new_versions,
            "new_assets": self.new_assets,
            "tombstoned": self.tombstoned,
            "acl_updated": self.acl_updated,
            "dead_letters": self.dead_letters,
            "touched_shards": sorted(self.touched_shards),
        }


def _classify_stat_error(path: Path, exc: OSError) -> errors.AnalysisError:
    if exc.errno == errno.ELOOP:
        return errors.SymlinkLoop(f"{path}: symbolic link loop ({exc.strerror})")
    if isinstance(exc, FileNotFoundError) and path.is_symlink():
        return errors.BrokenSymlink(f"{path}: link target {os.readlink(path)!r} does not exist")
    if isinstance(exc, PermissionError):
        return errors.UnreadableFile(f"{path}: permission denied")
    return errors.UnreadableFile(f"{path}: {exc.strerror or exc}")


def walk_source(root: Path) -> tuple[list[FileObservation], list[ScanFailure]]:
    """All regular files below ``root``; directory symlinks followed, cycles refused.

    Hidden entries (dot files and dot folders) are skipped, as are sidecar description files,
    which belong to their image.
    """
    found: list[FileObservation] = []
    failed: list[ScanFailure] = []
    root = root.absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    visited: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            failed.append(ScanFailure(str(folder), _classify_stat_error(folder, exc)))
            return
        ident = (st.st_dev, st.st_ino)
        if ident in visited:  # a directory symlink pointing back up the tree
            failed.append(
                ScanFailure(
                    str(folder),
                    errors.SymlinkLoop(f"{folder}: directory reached twice (symlink cycle)"),
                )
            )
            return
        visited.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            failed.append(ScanFailure(str(folder), _classify_stat_error(folder, exc)))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                st = path.stat()  # follows symlinks
            except OSError as exc:
                failed.append(ScanFailure(str(path), _classify_stat_error(path, exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                visit(path)
            elif not stat.S_ISREG(st.st_mode):
                failed.append(
                    ScanFailure(
                        str(path),
                        errors.NotRegularFile(
                            f"{path}: not a regular file (mode {stat.filemode(st.st_mode)})"
                        ),
                    )
                )
            elif is_sidecar(path):
                continue
            else:
                found.append(
                    FileObservation(
                        uri=str(path),
                        source=str(root),
                        rel_path=path.relative_to(root).as_posix(),
                        size=st.st_size,
                        mtime_ns=st.st_mtime_ns,
                        sidecar_state=_sidecar_state(path),
                    )
                )

    visit(root)
    return found, failed


def walk_configured(src: SourceConfig) -> tuple[list[FileObservation], list[ScanFailure]]:
    """``walk_source`` of one configured source, each file stamped with the source's tenant,
    name and the file's ACL groups."""
    found, failed = walk_source(src.path)
    for obs in found:
        obs.tenant, obs.source_name = src.tenant, src.name
        obs.acl_groups = src.groups_for(obs.rel_path)
    return found, failed


def _sidecar_state(path: Path) -> str:
    parts = []
    for sc in sidecar_candidates(path):
        try:
            st = sc.stat()
        except OSError:
            continue
        parts.append(f"{sc.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def sidecar_bytes(image_path: Path) -> dict[str, bytes]:
    out = {}
    for sc in sidecar_candidates(image_path):
        try:
            out[sc.name] = sc.read_bytes()
        except OSError:
            continue
    return out


def _hash_file(path: Path, max_bytes: int) -> tuple[str, bytes]:
    """sha256 of the bytes, plus the first KiB for media-type sniffing."""
    h = hashlib.sha256()
    head = b""
    total = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if not head:
                head = block[:1024]
            total += len(block)
            if total > max_bytes:
                raise errors.FileTooLarge(f"{path}: over the {max_bytes} byte limit")
            h.update(block)
    return h.hexdigest(), head


def version_id_for(
    tenant_id: str, uri: str, content_hash: str, size: int, mtime_ns: int, sidecar_hash: str
) -> str:
    return stable_hash([tenant_id, uri, content_hash, size, mtime_ns, sidecar_hash], 32)


def scan(settings: Settings, cat: Catalog, now: datetime | None = None) -> ScanReport:
    """Observe every source and bring assets / asset_versions / dead_letters up to date, for
    every tenant: the catalog's current versions mirror the configured sources."""
    now = now or utcnow()
    report = ScanReport()
    observations: list[FileObservation] = []

    def letter(tenant: str, uri: str, err: errors.AnalysisError) -> None:
        cat.record_dead_letter(
            tenant_id=tenant,
            uri=uri,
            content_hash="",
            stage="discover",
            error_class=err.error_class,
            message=str(err),
            now=now,
        )
        report.dead_letters += 1
        report.failures.append((uri, err.error_class))

    for src in load_sources(settings).sources:
        found, failed = walk_configured(src)
        observations += found
        for fail in failed:
            letter(src.tenant, fail.uri, fail.error)
    report.files_seen = len(observations)

    current = {
        (r["tenant_id"], r["uri"]): r
        for r in cat.rows(
            "SELECT tenant_id, uri, version_id, size, mtime_ns, asset_id, sidecar_hash, media_type, "
            "source_name, acl_groups FROM asset_versions WHERE is_current"
        )
    }
    known_assets = {
        (r["tenant_id"], r["asset_id"]) for r in cat.rows("SELECT tenant_id, asset_id FROM assets")
    }

    seen_version_ids: list[str] = []
    new_versions: list[dict] = []
    new_assets: dict[tuple[str, str], dict] = {}
    superseded: list[str] = []
    acl_updates: list[dict] = []

    def same_acl(cur: dict, obs: FileObservation) -> None:
        if cur["source_name"] != obs.source_name or sorted(cur["acl_groups"] or []) != sorted(
            obs.acl_groups
        ):
            acl_updates.append(
                {
                    "version_id": cur["version_id"],
                    "source_name": obs.source_name,
                    "acl_groups": list(obs.acl_groups),
                }
            )
            report.touched_shards.add(shard_of(cur["asset_id"], settings.shard_count))

    for obs in observations:
        tenant = obs.tenant
        cur = current.get((tenant, obs.uri))
        sc_hash = stable_hash(obs.sidecar_state) if obs.sidecar_state else ""
        if (
            cur
            and cur["size"] == obs.size
            and cur["mtime_ns"] == obs.mtime_ns
            and cur["sidecar_hash"] == sc_hash
        ):
            report.unchanged += 1
            seen_version_ids.append(cur["version_id"])
            same_acl(cur, obs)
            continue
        path = Path(obs.uri)
        try:
            if obs.size == 0:
                raise errors.EmptyFile(f"{path}: zero bytes")
            if obs.size > settings.max_file_bytes:
                raise errors.FileTooLarge(
                    f"{path}: {obs.size} bytes is over the {settings.max_file_bytes} byte limit"
                )
            content_hash, head = _hash_file(path, settings.max_file_bytes)
        except (errors.AnalysisError, OSError) as exc:
            err = exc if isinstance(exc, errors.AnalysisError) else _classify_stat_error(path, exc)
            letter(tenant, obs.uri, err)
            continue
        media_type = detect_media_type(path, head)
        version_id = version_id_for(tenant, obs.uri, content_hash, obs.size, obs.mtime_ns, sc_hash)
        if cur and cur["version_id"] == version_id:
            report.unchanged += 1
            seen_version_ids.append(version_id)
            same_acl(cur, obs)
            continue
        shard = shard_of(content_hash, settings.shard_count)
        if cur:
            superseded.append(cur["version_id"])
        new_versions.append(
            dict(
                tenant_id=tenant,
                version_id=version_id,
                asset_id=content_hash,
                uri=obs.uri,
                source=obs.source,
                rel_path=obs.rel_path,
                size=obs.size,
                mtime_ns=obs.mtime_ns,
                content_hash=content_hash,
                media_type=media_type,
                sidecar_hash=sc_hash,
                first_seen_at=now,
                last_seen_at=now,
                superseded_at=None,
                tombstoned_at=None,
                is_current=True,
                source_name=obs.source_name,
                acl_groups=list(obs.acl_groups),
            )
        )
        seen_version_ids.append(version_id)
        report.touched_shards.add(shard)
        # Content identity is per tenant: the same bytes in two tenants are two assets.
        if (tenant, content_hash) not in known_assets and (tenant, content_hash) not in new_assets:
            new_assets[(tenant, content_hash)] = dict(
                tenant_id=tenant,
                asset_id=content_hash,
                size=obs.size,
                media_type=media_type,
                shard=shard,
                first_seen_at=now,
            )

    seen = {(o.tenant, o.uri) for o in observations}
    gone = [r for key, r in current.items() if key not in seen]
    for r in gone:
        report.touched_shards.add(shard_of(r["asset_id"], settings.shard_count))
    superseded_set = set(superseded)
    for r in current.values():
        if r["version_id"] in superseded_set:
            report.touched_shards.add(shard_of(r["asset_id"], settings.shard_count))

    con = cat.con
    con.execute("BEGIN TRANSACTION")
    try:
        # Version ids hash the tenant in: unique across tenants.
        if superseded:
            con.execute(
                "UPDATE asset_versions SET is_current = FALSE, superseded_at = ? "
                "WHERE version_id IN (SELECT unnest(?))",
                [now, superseded],
            )
        if gone:
            con.execute(
                "UPDATE asset_versions SET is_current = FALSE, tombstoned_at = ? "
                "WHERE version_id IN (SELECT unnest(?))",
                [now, [r["version_id"] for r in gone]],
            )
        if acl_updates:
            acl_new = pa.Table.from_pylist(
                acl_updates,
                schema=pa.schema(
                    [  # noqa: F841
                        ("version_id", pa.string()),
                        ("source_name", pa.string()),
                        ("acl_groups", pa.list_(pa.string())),
                    ]
                ),
            )
            con.execute(
                "UPDATE asset_versions SET source_name = acl_new.source_name, "
                "acl_groups = acl_new.acl_groups FROM acl_new "
                "WHERE asset_versions.version_id = acl_new.version_id"
            )
        if new_assets:
            tbl = pa.Table.from_pylist(list(new_assets.values()))  # noqa: F841 (DuckDB scans it)
            con.execute(
                "INSERT INTO assets SELECT tenant_id, asset_id, size, media_type, shard, "
                "first_seen_at FROM tbl ON CONFLICT DO NOTHING"
            )
        if new_versions:
            vt = pa.Table.from_pylist(new_versions)  # noqa: F841
            cols = (
                "tenant_id, version_id, asset_id, uri, source, rel_path, size, mtime_ns, "
                "content_hash, media_type, sidecar_hash, first_seen_at, last_seen_at, "
                "superseded_at, tombstoned_at, is_current, source_name, acl_groups"
            )
            con.execute(
                f"INSERT INTO asset_versions ({cols}) SELECT {cols} FROM vt ON CONFLICT DO NOTHING"
            )
        if seen_version_ids:
            con.execute(
                "UPDATE asset_versions SET last_seen_at = ? WHERE version_id IN (SELECT unnest(?))",
                [now, seen_version_ids],
            )
        # A uri that now reads fine no longer needs its discover-stage letter.
        con.execute(
            "UPDATE dead_letters d SET resolved_at = ? WHERE stage = 'discover' AND "
            "resolved_at IS NULL AND EXISTS (SELECT 1 FROM asset_versions v WHERE "
            "v.tenant_id = d.tenant_id AND v.uri = d.uri AND v.is_current)",
            [now],
        )
        # Analysis letters whose content is no longer current anywhere (in their tenant) are moot.
        con.execute(
            "UPDATE dead_letters d SET resolved_at = ? WHERE stage <> 'discover' AND "
            "resolved_at IS NULL AND NOT EXISTS (SELECT 1 FROM asset_versions v WHERE "
            "v.tenant_id = d.tenant_id AND v.content_hash = d.content_hash AND "
            "v.is_current)",
            [now],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    _write_observed(settings, observations, cat)
    report.new_versions = len(new_versions)
    report.new_assets = len(new_assets)
    report.tombstoned = len(gone)
    report.acl_updated = len(acl_updates)
    return report


OBSERVED_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sidecar_state", pa.string()),
        ("shard", pa.int32()),
        ("acl_state", pa.string()),
    ]
)


def observed_path(settings: Settings) -> Path:
    return settings.data_dir / "observed.parquet"


def _write_observed(settings: Settings, observations: list[FileObservation], cat: Catalog) -> None:
    """What this scan saw (stat only), for the source sensor to diff against without opening
    the catalog. Files that failed to read are in it too (shard -1), so they do not look new
    on every tick."""
    shards = {
        r["uri"]: r["shard"]
        for r in cat.rows(
            "SELECT v.uri, a.shard FROM asset_versions v JOIN assets a USING (tenant_id, asset_id) "
            "WHERE v.is_current"
        )
    }
    tbl = pa.table(
        {
            "uri": [o.uri for o in observations],
            "size": [o.size for o in observations],
            "mtime_ns": [o.mtime_ns for o in observations],
            "sidecar_state": [o.sidecar_state for o in observations],
            "shard": [shards.get(o.uri, -1) for o in observations],
            "acl_state": [o.acl_state for o in observations],
        },
        schema=OBSERVED_SCHEMA,
    )
    path = observed_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(tbl, tmp)
    os.replace(tmp, path)


@dataclass
class SourceChanges:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    touched_shards: set[int] = field(default_factory=set)

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed or self.deleted)

    @property
    def digest(self) -> str:
        return stable_hash([sorted(self.new), sorted(self.changed), sorted(self.deleted)], 16)


def detect_changes(settings: Settings) -> SourceChanges:
    """New, changed and deleted files since the last scan, and the shards they touch.

    Reads no catalog: it diffs a stat walk against the last scan's observed.parquet and hashes
    only new or changed files (their shard follows their content; a changed file touches its
    old shard too, where the old content leaves).
    """
    path = observed_path(settings)
    before: dict[str, dict] = {}
    if path.exists():
        for r in pq.read_table(path).to_pylist():
            before[r["uri"]] = r
    out = SourceChanges()
    seen: set[str] = set()
    for src in load_sources(settings).sources:
        if not src.path.is_dir():
            continue
        found, _ = walk_configured(src)
        for obs in found:
            seen.add(obs.uri)
            prev = before.get(obs.uri)
            if prev and (prev["size"], prev["mtime_ns"], prev["sidecar_state"]) == (
                obs.size,
                obs.mtime_ns,
                obs.sidecar_state,
            ):
                if prev.get("acl_state", obs.acl_state) != obs.acl_state:
                    # Sources file edited: same bytes, new tenant, source name or groups.
                    out.changed.append(obs.uri)
                    if prev["shard"] >= 0:
                        out.touched_shards.add(prev["shard"])
                continue
            (out.changed if prev else out.new).append(obs.uri)
            if prev and prev["shard"] >= 0:
                out.touched_shards.add(prev["shard"])
            try:
                if obs.size:
                    content_hash, _ = _hash_file(Path(obs.uri), settings.max_file_bytes)
                    out.touched_shards.add(shard_of(content_hash, settings.shard_count))
            except (OSError, errors.AnalysisError):
                pass  # discovery will dead-letter it; no shard to touch
    for uri, prev in before.items():
        if uri not in seen:
            out.deleted.append(uri)
            if prev["shard"] >= 0:
                out.touched_shards.add(prev["shard"])
    return out


__all__ = ["scan", "walk_source", "ScanReport", "sidecar_bytes", "is_image"]

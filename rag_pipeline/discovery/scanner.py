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
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rag_pipeline import errors
from rag_pipeline.contracts import stable_hash
from rag_pipeline.discovery.sources import SourceConfig, load_sources
from rag_pipeline.media_types import (
    IMAGE_EXTENSIONS,
    SIDECAR_SUFFIXES,
    detect_media_type,
    is_image,
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
    inode: int = 0  # an atomic replace (write + rename) within one mtime tick changes only this

    @property
    def acl_state(self) -> str:
        """Tenant, source name and groups: a change is an ACL change, not a content change."""
        return _acl_state(self.tenant, self.source_name, tuple(self.acl_groups))


@lru_cache(maxsize=4096)
def _acl_state(tenant: str, source_name: str, groups: tuple[str, ...]) -> str:
    return stable_hash([tenant, source_name, list(groups)], 16)


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


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_sidecar_in(name: str, file_names: set[str], image_stems: set[str]) -> bool:
    """``is_sidecar`` answered from the directory's listing instead of a stat per candidate."""
    stem, suffix = os.path.splitext(name)
    suffix = suffix.lower()
    if suffix not in SIDECAR_SUFFIXES:
        return False
    if _has_image_ext(stem) and stem in file_names:
        return True
    return suffix == ".xmp" and bool(stem) and not _has_image_ext(stem) and stem in image_stems


def _sidecar_state_in(folder: str, name: str, names: set[str]) -> str:
    """Names, sizes and mtimes of the file's sidecars: only names the listing holds are stat'ed."""
    parts = []
    for sc in [name + s for s in SIDECAR_SUFFIXES] + [os.path.splitext(name)[0] + ".xmp"]:
        if sc not in names:
            continue
        try:
            st = os.stat(os.path.join(folder, sc))
        except OSError:
            continue
        parts.append(f"{sc}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


@dataclass
class _Listing:
    files: list[tuple[str, str, os.stat_result, str]]  # (path, name, stat, sidecar state)
    folders: list[tuple[str, tuple[int, int]]]  # (path, (dev, inode))
    failed: list[ScanFailure]


def _list_folder(folder: str) -> _Listing:
    """One directory: its entries stat'ed (symlinks followed), sidecars told apart."""
    out = _Listing([], [], [])
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        out.failed.append(ScanFailure(folder, _classify_stat_error(Path(folder), exc)))
        return out
    names = {e.name for e in entries}
    file_names = set()
    for e in entries:
        try:
            if e.is_file():  # from the directory entry's type: no syscall unless a symlink
                file_names.add(e.name)
        except OSError:
            pass
    image_stems = {os.path.splitext(n)[0] for n in file_names if _has_image_ext(n)}
    for e in entries:
        try:
            st = e.stat()  # follows symlinks
        except OSError as exc:
            out.failed.append(ScanFailure(e.path, _classify_stat_error(Path(e.path), exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            out.folders.append((e.path, (st.st_dev, st.st_ino)))
        elif not stat.S_ISREG(st.st_mode):
            out.failed.append(
                ScanFailure(
                    e.path,
                    errors.NotRegularFile(
                        f"{e.path}: not a regular file (mode {stat.filemode(st.st_mode)})"
                    ),
                )
            )
        elif not _is_sidecar_in(e.name, file_names, image_stems):
            out.files.append((e.path, e.name, st, _sidecar_state_in(folder, e.name, names)))
    return out


def walk_source(root: Path, threads: int = 8) -> tuple[list[FileObservation], list[ScanFailure]]:
    """All regular files below ``root``; directory symlinks followed, cycles refused.

    Hidden entries (dot files and dot folders) are skipped, as are sidecar description files,
    which belong to their image. Folders are listed and their entries stat'ed by a pool of
    ``threads`` (a stat releases the GIL; on a network share it is a round trip), one
    ``scandir`` per folder and one ``stat`` per entry: sidecars are looked up in the listing.
    Files come back sorted by path.
    """
    found: list[FileObservation] = []
    failed: list[ScanFailure] = []
    root = root.absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    root_s = str(root)
    prefix = len(root_s) + 1
    st = root.stat()
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending = {pool.submit(_list_folder, root_s)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                listing = fut.result()
                failed += listing.failed
                for path, _name, fst, sidecars in listing.files:
                    found.append(
                        FileObservation(
                            uri=path,
                            source=root_s,
                            rel_path=path[prefix:].replace(os.sep, "/"),
                            size=fst.st_size,
                            mtime_ns=fst.st_mtime_ns,
                            sidecar_state=sidecars,
                            inode=fst.st_ino,
                        )
                    )
                for folder, ident in listing.folders:
                    if ident in visited:  # a directory symlink pointing back up the tree
                        failed.append(
                            ScanFailure(
                                folder,
                                errors.SymlinkLoop(
                                    f"{folder}: directory reached twice (symlink cycle)"
                                ),
                            )
                        )
                        continue
                    visited.add(ident)
                    pending.add(pool.submit(_list_folder, folder))
    found.sort(key=lambda o: o.uri)
    failed.sort(key=lambda f: f.uri)
    return found, failed


def walk_configured(
    src: SourceConfig, threads: int = 8
) -> tuple[list[FileObservation], list[ScanFailure]]:
    """``walk_source`` of one configured source, each file stamped with the source's tenant,
    name and the file's ACL groups."""
    found, failed = walk_source(src.path, threads)
    # Groups depend on the folder only, and a tree has far fewer folders than files.
    by_folder: dict[str, list[str]] = {}
    for obs in found:
        folder = obs.rel_path.rpartition("/")[0]
        groups = by_folder.get(folder)
        if groups is None:
            groups = by_folder[folder] = src.groups_for(obs.rel_path)
        obs.tenant, obs.source_name = src.tenant, src.name
        obs.acl_groups = groups
    return found, failed


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


def _hash_or_error(path: str, max_bytes: int) -> tuple[str, bytes] | BaseException:
    try:
        return _hash_file(Path(path), max_bytes)
    except (errors.AnalysisError, OSError) as exc:
        return exc


def hash_files(
    paths: list[str], max_bytes: int, threads: int = 8
) -> dict[str, tuple[str, bytes] | BaseException]:
    """sha256 (and head) of each path, or the error reading it; hashed by a pool of threads
    (hashlib releases the GIL on large updates, so files hash in parallel)."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(lambda p: _hash_or_error(p, max_bytes), paths)
        return dict(zip(paths, results, strict=True))


def _observed_inodes(settings: Settings) -> dict[str, int]:
    """uri -> inode at the last scan (empty before the first, or from an older observed file)."""
    path = observed_path(settings)
    if not path.exists():
        return {}
    try:
        tbl = pq.read_table(path, columns=["uri", "inode"])
    except (KeyError, pa.ArrowInvalid, OSError):
        return {}
    return dict(zip(tbl.column("uri").to_pylist(), tbl.column("inode").to_pylist(), strict=True))


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

    threads = settings.discovery_threads
    for src in load_sources(settings).sources:
        found, failed = walk_configured(src, threads)
        observations += found
        for fail in failed:
            letter(src.tenant, fail.uri, fail.error)
    report.files_seen = len(observations)

    current = {
        (r["tenant_id"], r["uri"]): r
        for r in cat.rows(
            "SELECT tenant_id, uri, version_id, size, mtime_ns, asset_id, sidecar_hash, "
            "media_type, source_name, acl_groups FROM asset_versions WHERE is_current"
        )
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

    inodes = _observed_inodes(settings)

    def unchanged(cur: dict | None, obs: FileObservation, sc_hash: str) -> bool:
        # Size, mtime and sidecars as the catalog has them, and the inode as the last scan saw
        # it (a rename over the file within one mtime tick changes only the inode).
        return bool(
            cur
            and cur["size"] == obs.size
            and cur["mtime_ns"] == obs.mtime_ns
            and cur["sidecar_hash"] == sc_hash
            and inodes.get(obs.uri, obs.inode) == obs.inode
        )

    sidecar_hashes = {
        (o.tenant, o.uri): stable_hash(o.sidecar_state) if o.sidecar_state else ""
        for o in observations
    }
    # Hash only what changed, in parallel; the same uri in two tenants is hashed once.
    hashed = hash_files(
        sorted(
            {
                o.uri
                for o in observations
                if 0 < o.size <= settings.max_file_bytes
                and not unchanged(
                    current.get((o.tenant, o.uri)), o, sidecar_hashes[(o.tenant, o.uri)]
                )
            }
        ),
        settings.max_file_bytes,
        threads,
    )

    # Only the assets this scan hashed can be new: look those up, not the whole table.
    hashes = [h[0] for h in hashed.values() if not isinstance(h, BaseException)]
    known_assets = (
        {
            (r["tenant_id"], r["asset_id"])
            for r in cat.rows(
                "SELECT tenant_id, asset_id FROM assets WHERE asset_id IN (SELECT unnest(?))",
                [hashes],
            )
        }
        if hashes
        else set()
    )

    for obs in observations:
        tenant = obs.tenant
        cur = current.get((tenant, obs.uri))
        sc_hash = sidecar_hashes[(tenant, obs.uri)]
        if cur and unchanged(cur, obs, sc_hash):
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
            outcome = hashed[obs.uri]
            if isinstance(outcome, BaseException):
                raise outcome
            content_hash, head = outcome
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
            acl_new = pa.Table.from_pylist(  # noqa: F841 (DuckDB scans it by name)
                acl_updates,
                schema=pa.schema(
                    [
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
    asset_of = {
        uri: r["asset_id"]
        for (_, uri), r in current.items()
        if r["version_id"] not in superseded_set
    }
    for gone_row in gone:
        asset_of.pop(gone_row["uri"], None)
    asset_of.update({v["uri"]: v["asset_id"] for v in new_versions})
    _write_observed(settings, observations, asset_of)
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
        ("inode", pa.int64()),
    ]
)


def observed_path(settings: Settings) -> Path:
    return settings.data_dir / "observed.parquet"


def _write_observed(
    settings: Settings, observations: list[FileObservation], asset_of: dict[str, str]
) -> None:
    """What this scan saw (stat only), for the source sensor to diff against without opening
    the catalog. Files that failed to read are in it too (shard -1), so they do not look new
    on every tick. ``asset_of``: each uri's current asset."""
    shards = {uri: shard_of(asset, settings.shard_count) for uri, asset in asset_of.items()}
    tbl = pa.table(
        {
            "uri": [o.uri for o in observations],
            "size": [o.size for o in observations],
            "mtime_ns": [o.mtime_ns for o in observations],
            "sidecar_state": [o.sidecar_state for o in observations],
            "shard": [shards.get(o.uri, -1) for o in observations],
            "acl_state": [o.acl_state for o in observations],
            "inode": [o.inode for o in observations],
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
    to_hash: list[str] = []
    for src in load_sources(settings).sources:
        if not src.path.is_dir():
            continue
        found, _ = walk_configured(src, settings.discovery_threads)
        for obs in found:
            seen.add(obs.uri)
            prev = before.get(obs.uri)
            if prev and (
                prev["size"],
                prev["mtime_ns"],
                prev["sidecar_state"],
                prev.get("inode") or obs.inode,
            ) == (obs.size, obs.mtime_ns, obs.sidecar_state, obs.inode):
                if prev.get("acl_state", obs.acl_state) != obs.acl_state:
                    # Sources file edited: same bytes, new tenant, source name or groups.
                    out.changed.append(obs.uri)
                    if prev["shard"] >= 0:
                        out.touched_shards.add(prev["shard"])
                continue
            (out.changed if prev else out.new).append(obs.uri)
            if prev and prev["shard"] >= 0:
                out.touched_shards.add(prev["shard"])
            if obs.size:
                to_hash.append(obs.uri)
    for outcome in hash_files(
        sorted(set(to_hash)), settings.max_file_bytes, settings.discovery_threads
    ).values():
        if not isinstance(outcome, BaseException):  # else discovery dead-letters it
            out.touched_shards.add(shard_of(outcome[0], settings.shard_count))
    for uri, prev in before.items():
        if uri not in seen:
            out.deleted.append(uri)
            if prev["shard"] >= 0:
                out.touched_shards.add(prev["shard"])
    return out


__all__ = ["ScanReport", "is_image", "scan", "sidecar_bytes", "walk_source"]

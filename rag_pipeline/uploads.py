"""The upload layout: where ``POST /v1/documents`` stores a tenant's files, and how discovery
reads that folder back as the tenant's upload source.

    <upload dir>/<tenant>/<groups>/<sha256>/<safe name>

``<groups>`` is the uploading key's ACL groups, sorted and joined by ``+`` (``all`` for a key
without explicit groups); ``+`` is not allowed in group names, so the folder name is the group
set. Storing by content hash makes a second upload of the same bytes (with the same groups)
the same file: nothing is written, discovered or analysed twice. Shared by serving (which
writes) and discovery (which reads); imports nothing of ours but the settings.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePosixPath

from rag_pipeline.settings import Settings

GROUP_SEPARATOR = "+"
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME_CHARS = 200


def upload_source_name(tenant: str) -> str:
    """The name hits show for a tenant's uploads."""
    return f"uploads-{tenant}"


def tenant_dir(settings: Settings, tenant: str) -> Path:
    if not _TENANT.fullmatch(tenant):
        raise ValueError(f"bad tenant name {tenant!r}")
    return settings.upload_dir / tenant


def groups_folder(groups: set[str] | frozenset[str] | list[str]) -> str:
    """The folder of a group set (sorted, ``+``-joined)."""
    clean = sorted({g for g in groups})
    if not clean or any(not _GROUP.fullmatch(g) or len(g) > 128 for g in clean):
        raise ValueError(f"bad group set {clean!r}")
    return GROUP_SEPARATOR.join(clean)


def folder_groups(name: str) -> list[str] | None:
    """The group set a folder stands for, or None when the name is not one."""
    groups = name.split(GROUP_SEPARATOR)
    if all(_GROUP.fullmatch(g) and len(g) <= 128 for g in groups):
        return sorted(set(groups))
    return None


def safe_name(filename: str | None) -> str:
    """A client's file name as one harmless path component: its last component, NFC, no
    control characters, no leading dots (dot files are skipped by discovery), at most 200
    characters (the extension kept); ``upload`` when nothing is left."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = unicodedata.normalize("NFC", name)
    name = "".join(c for c in name if c.isprintable() and c not in '/\\:*?"<>|')
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_NAME_CHARS:
        _, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1] + ("." + ext if ext else "")
    return name or "upload"


def content_dir(settings: Settings, tenant: str, groups: frozenset[str], sha256: str) -> Path:
    """The folder that holds one uploaded content for one group set."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError("not a sha256 hex digest")
    return tenant_dir(settings, tenant) / groups_folder(groups) / sha256


def upload_tenants(settings: Settings) -> list[str]:
    """Tenants that have an upload folder."""
    root = settings.upload_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _TENANT.fullmatch(p.name))


def group_folders(settings: Settings, tenant: str) -> dict[str, list[str]]:
    """A tenant's group folders and the groups each stands for."""
    base = tenant_dir(settings, tenant)
    out: dict[str, list[str]] = {}
    if base.is_dir():
        for p in sorted(base.iterdir()):
            groups = folder_groups(p.name) if p.is_dir() else None
            if groups is not None:
                out[p.name] = groups
    return out

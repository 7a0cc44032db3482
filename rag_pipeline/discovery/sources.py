"""Sources: which folders are indexed, for which tenant, readable by which ACL groups.

A sources file (YAML, ``RAG_SOURCES_FILE``) lists them::

    sources:
      - name: acme-handbook          # unique; hits show this name + the path inside the source
        path: /data/acme/handbook
        tenant: acme
        groups: [staff]              # default: [all] (every key of the tenant)
        overrides:
          - folder: hr               # relative to the source; the deepest match wins
            groups: [hr]

Without one, ``RAG_SOURCES`` (+ ``RAG_TENANT``) is the one-tenant shorthand: every folder is a
source of that tenant named after the folder, with groups ``[all]``.

Discovery stamps each file's tenant, source name and groups on its asset version; changing
them here changes the next snapshot's filter columns and nothing else (no analysis runs again).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag_pipeline import uploads

if TYPE_CHECKING:
    from rag_pipeline.settings import Settings

# Units whose source configures no groups carry this one; keys hold it unless created with
# explicit groups (kept equal to serving.principal.TENANT_WIDE_GROUP, which serving owns).
TENANT_WIDE_GROUP = "all"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"


def _groups(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        cleaned = [str(g).strip() for g in value]
        for g in cleaned:
            if not re.fullmatch(GROUP_PATTERN, g) or len(g) > 128:
                raise ValueError(
                    f"bad group name {g!r} (letters, digits and _.:@-; "
                    "starting with a letter or digit)"
                )
        return sorted(set(cleaned))
    return value


class FolderOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str = Field(min_length=1)
    groups: list[str]

    @field_validator("folder")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = PurePosixPath(v.strip().replace("\\", "/").strip("/"))
        if not str(p) or str(p) == "." or p.is_absolute() or ".." in p.parts:
            raise ValueError(
                f"override folder {v!r} must be a folder inside its source (relative, no '..')"
            )
        return str(p)

    _check_groups = field_validator("groups", mode="before")(_groups)


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    path: Path
    tenant: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    groups: list[str] = Field(default_factory=lambda: [TENANT_WIDE_GROUP])
    overrides: list[FolderOverride] = Field(default_factory=list)

    _check_groups = field_validator("groups", mode="before")(_groups)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return Path(os.path.abspath(v))

    @model_validator(mode="after")
    def _unique_overrides(self) -> SourceConfig:
        folders = [o.folder for o in self.overrides]
        dup = sorted({f for f in folders if folders.count(f) > 1})
        if dup:
            raise ValueError(f"source {self.name!r}: override folders listed twice: {dup}")
        return self

    def groups_for(self, rel_path: str) -> list[str]:
        """The ACL groups of a file (its path relative to the source): the deepest override
        whose folder contains it, else the source's groups."""
        parts = PurePosixPath(rel_path).parts[:-1]  # the folders above the file
        best, depth = self.groups, -1
        for o in self.overrides:
            op = PurePosixPath(o.folder).parts
            if len(op) > depth and tuple(parts[: len(op)]) == op:
                best, depth = o.groups, len(op)
        return list(best)


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> SourcesFile:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; listed twice: {dup}")
        for i, a in enumerate(self.sources):
            for b in self.sources[i + 1 :]:
                if a.path == b.path or a.path in b.path.parents or b.path in a.path.parents:
                    raise ValueError(
                        f"sources {a.name!r} ({a.path}) and {b.name!r} ({b.path}) "
                        "overlap: a file must belong to one source"
                    )
        return self

    @property
    def tenants(self) -> list[str]:
        return sorted({s.tenant for s in self.sources})


class SourcesFileError(ValueError):
    """The sources file is missing, not YAML, or not valid (the message says where)."""


def read_sources_file(path: Path) -> SourcesFile:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SourcesFileError(f"sources file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SourcesFileError(f"sources file {path} is not valid YAML: {exc}") from exc
    try:
        return SourcesFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise SourcesFileError(f"sources file {path}: {problems}") from exc


def shorthand_sources(folders: list[Path], tenant: str) -> SourcesFile:
    """``RAG_SOURCES`` + ``RAG_TENANT``: one tenant, groups [all], each source named after its
    folder (``-2``, ``-3`` ... when two folders share a name)."""
    out: list[SourceConfig] = []
    seen: dict[str, int] = {}
    for folder in folders:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(os.path.abspath(folder)).name).lstrip("-._")
        base = base or "source"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(SourceConfig(name=name, path=folder, tenant=tenant))
    return SourcesFile.model_construct(sources=out)


def upload_sources(settings: Settings) -> list[SourceConfig]:
    """One source per tenant with uploads (``rag_pipeline.uploads``): named
    ``uploads-<tenant>``, each group folder an override with the uploading key's groups. The
    source itself grants no group, so a file outside a group folder is readable by nobody."""
    out = []
    for tenant in uploads.upload_tenants(settings):
        folders = uploads.group_folders(settings, tenant)
        out.append(
            SourceConfig(
                name=uploads.upload_source_name(tenant),
                path=uploads.tenant_dir(settings, tenant),
                tenant=tenant,
                groups=[],
                overrides=[FolderOverride(folder=f, groups=g) for f, g in folders.items()],
            )
        )
    return out


def load_sources(settings: Settings) -> SourcesFile:
    """The configured sources (the sources file if set, else the ``RAG_SOURCES``
    shorthand), then the upload source of every tenant that has uploads."""
    if settings.sources_file is not None:
        configured = read_sources_file(settings.sources_file)
    else:
        configured = shorthand_sources(list(settings.sources), settings.tenant_id)
    extra = upload_sources(settings)
    if not extra:
        return configured
    names = {s.name for s in configured.sources}
    root = Path(os.path.abspath(settings.upload_dir))
    for src in configured.sources:
        if src.path == root or src.path in root.parents or root in src.path.parents:
            raise SourcesFileError(
                f"source {src.name!r} ({src.path}) overlaps the upload folder {root} "
                "(RAG_UPLOAD_ROOT): a file must belong to one source"
            )
    for src in extra:
        if src.name in names:
            raise SourcesFileError(
                f"source name {src.name!r} is reserved for that tenant's uploads; rename it"
            )
    return SourcesFile.model_construct(sources=[*configured.sources, *extra])

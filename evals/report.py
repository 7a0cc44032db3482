"""Markdown reports and PNG plots (matplotlib, Agg backend) from eval result JSON files."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

QUALITY = ("ndcg@10", "recall@50", "recall@100", "mrr@10", "precision@5")


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def label(res: dict) -> str:
    p = res.get("provenance", {})
    return p.get("label") or f"{p.get('engine', '?')}@{str(p.get('snapshot_id', '?'))[-8:]}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _f(v, nd: int = 4) -> str:
    try:
        return f"{float(v):.{nd}f}"
    except (TypeError, ValueError):
        return "-"


def engine_table(results: Sequence[dict], metrics: Sequence[str] = QUALITY) -> str:
    metrics = [m for m in metrics if any(m in r["metrics"] for r in results)]
    rows = []
    for r in results:
        m = r["metrics"]
        rows.append(
            [
                label(r),
                r["provenance"].get("engine"),
                r["n_queries"],
                *(_f(m.get(k)) for k in metrics),
                _f(m.get("latency_p50_ms"), 1),
                _f(m.get("latency_p95_ms"), 1),
                _f(m.get("latency_p99_ms"), 1),
                _f(m.get("error_rate"), 3),
                _f(m.get("cpu_s_per_1k_queries"), 1),
            ]
        )
    return md_table(
        [
            "run",
            "engine",
            "queries",
            *metrics,
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "error rate",
            "CPU s / 1k q",
        ],
        rows,
    )


def per_query_frame(res: dict, metrics: Sequence[str]) -> pl.DataFrame:
    """One row per query: its type and metric values (the unit every eval table is cut from)."""
    schema = {"query_type": pl.String, **{m: pl.Float64 for m in metrics}}
    return pl.DataFrame(
        [
            {
                "query_type": q.get("query_type") or "unknown",
                **{m: float(q["metrics"].get(m, 0.0)) for m in metrics},
            }
            for q in res["per_query"]
        ],
        schema=schema,
    )


def by_query_type(res: dict, metrics: Sequence[str] = ("ndcg@10", "recall@50", "mrr@10")) -> dict:
    frame = (
        per_query_frame(res, metrics)
        .group_by("query_type")
        .agg(pl.len().alias("n"), *(pl.col(m).mean() for m in metrics))
        .sort("query_type")
    )
    return {row.pop("query_type"): row for row in frame.iter_rows(named=True)}


def query_type_table(results: Sequence[dict], metric: str = "ndcg@10") -> str:
    types = sorted({t for r in results for t in by_query_type(r)})
    rows = []
    for t in types:
        per = [by_query_type(r).get(t) for r in results]
        n = next((p["n"] for p in per if p), 0)
        rows.append([t, n, *(_f(p[metric]) if p else "-" for p in per)])
    return md_table(["query type", "queries", *(label(r) for r in results)], rows)


def comparison_table(cmp: dict) -> str:
    rows = []
    for m, d in cmp["diffs"].items():
        nd = 2 if "latency" in m else 4
        rows.append(
            [
                m,
                _f(d.get("a"), nd),
                _f(d.get("b"), nd),
                _f(d["diff"], nd),
                f"[{_f(d['lo'], nd)}, {_f(d['hi'], nd)}]",
                _f(d.get("p_b_better"), 3),
            ]
        )
    # A typographic minus sign in the column header, on purpose.
    return md_table(
        [
            "metric",
            "A",
            "B",
            "B − A",
            "95% CI (paired bootstrap)",  # noqa: RUF001
            "P(B > A)",
        ],
        rows,
    )


def plot_metrics(results: Sequence[dict], metrics: Sequence[str] = QUALITY) -> bytes:
    """Grouped bars: one group per metric, one bar per run. PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if all(m in r["metrics"] for r in results)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics)), 3.6), dpi=100)
    width = 0.8 / max(1, len(results))
    for i, r in enumerate(results):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [r["metrics"][m] for m in metrics], width=width, label=label(r))
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_latency(results: Sequence[dict]) -> bytes:
    """Per-query latency CDF per run. PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for r in results:
        xs = sorted(q["latency_ms"] for q in r["per_query"])
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label(r))
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of queries")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_report(
    results: Sequence[dict],
    comparisons: Sequence[tuple[str, dict]] = (),
    images: dict[str, str] | None = None,
    title: str = "Retrieval evaluation",
) -> str:
    parts = [f"# {title}\n"]
    for r in results:
        p = r["provenance"]
        parts.append(
            f"- **{label(r)}**: dataset `{p.get('dataset')}` split `{p.get('split')}`, "
            f"snapshot `{p.get('snapshot_id')}`, engine `{p.get('engine')}`, "
            f"git `{str(p.get('git_commit'))[:10]}`"
        )
    parts += [
        "\n## By engine / axis\n",
        engine_table(results),
        "\n## nDCG@10 by query type\n",
        query_type_table(results),
    ]
    for name, cmp in comparisons:
        parts += [f"\n## {name}\n", comparison_table(cmp)]
        if "gates" in cmp:
            g = cmp["gates"]
            parts.append(
                f"\nGate verdict: **{g['verdict']}**"
                + ("".join(f"\n- {x}" for x in g["reasons"]) if g["reasons"] else "")
            )
    for caption, src in (images or {}).items():
        parts.append(f"\n![{caption}]({src})")
    return "\n".join(parts) + "\n"


def write_report(results: Sequence[dict], out_dir: str | Path) -> Path:
    """``out_dir/report.md`` + ``metrics.png`` + ``latency.png``; with two or more results,
    each later result is compared with the first (paired bootstrap)."""
    from evals.gates import apply_gates
    from evals.stats import compare_runs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.png").write_bytes(plot_metrics(results))
    (out / "latency.png").write_bytes(plot_latency(results))
    comparisons = []
    for r in results[1:]:
        cmp = compare_runs(results[0], r)
        cmp["gates"] = apply_gates(results[0]["metrics"], r["metrics"]).model_dump()
        comparisons.append((f"{label(r)} vs {label(results[0])}", cmp))
    md = markdown_report(
        results, comparisons, {"metrics per run": "metrics.png", "latency CDF": "latency.png"}
    )
    path = out / "report.md"
    path.write_text(md, encoding="utf-8")
    return path

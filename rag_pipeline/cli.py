"""`rag-pipeline`: one entry point, with subcommands.

  demo           generate the demo corpus, materialize everything, run example queries
  generate-demo  write the demo corpus and its gold queries
  materialize    run discover -> shards -> snapshot through Dagster
  search         query the current snapshot (hybrid by default) with explanations
  serve          HTTP API over the current snapshot
  status         catalog counts and the current snapshot
  dead-letters   list (or re-drive) files that failed, with their error class
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEMO_DIR = Path("var/demo_corpus")
DEMO_GOLD = Path("var/demo_gold.jsonl")


def _settings():
    from rag_pipeline.settings import Settings

    return Settings.from_env()


def cmd_generate_demo(args) -> int:
    from rag_pipeline.demo_corpus import generate_demo_corpus

    corpus = generate_demo_corpus(Path(args.out), Path(args.gold))
    print(f"demo corpus: {corpus.n_documents} documents, {corpus.n_images} images in "
          f"{corpus.corpus_dir}; gold queries in {corpus.gold_path}")
    return 0


def cmd_materialize(args) -> int:
    from rag_pipeline.defs.runner import ensure_dagster_home, materialize_all

    ensure_dagster_home()
    from rag_pipeline.definitions import defs

    materialize_all(defs, shards=args.shard or None, all_partitions=args.all_partitions)
    return 0


def _print_response(resp, as_json: bool) -> None:
    if as_json:
        print(resp.model_dump_json(indent=2))
        return
    axes = ", ".join(resp.axes_used)
    print(f'\n"{resp.query}"  [{resp.query_type}; axes: {axes}; '
          f'{resp.timings_ms.get("total", 0):.1f} ms; snapshot {resp.snapshot_id}]')
    if not resp.hits:
        print("  (no hits)")
    for i, h in enumerate(resp.hits, 1):
        ranks = ", ".join(f"{a} #{ah.rank}" for a, ah in h.axes.items())
        print(f"  {i:2d}. {h.score:.4f}  {h.uri}  ({h.kind}; {ranks})")
        for ev in h.explanation.matched_evidence[:2]:
            terms = ", ".join(ev.matched_terms) if ev.matched_terms else "meaning (vector)"
            run = next((r for r in h.explanation.runs.values()
                        if isinstance(r, dict) and r.get("run_id") == ev.run_id), {})
            print(f"        matched {ev.field} [{terms}] from run {ev.run_id}"
                  + (f" ({run.get('model_id')})" if run else ""))
        if h.snippet:
            print(f"        “{h.snippet[:160]}”")


def _searcher(settings):
    from serving import Searcher

    return Searcher.from_settings(settings)


def cmd_search(args) -> int:
    from serving import SearchFilters, SearchRequest

    settings = _settings()
    searcher = _searcher(settings)
    filters = SearchFilters(kind=args.kind, folder_prefix=args.folder) \
        if (args.kind or args.folder) else None
    req = SearchRequest(query=args.query, k=args.k, tenant=settings.tenant_id, filters=filters,
                        query_type=args.type, axes=args.axes.split(",") if args.axes else None,
                        collapse=not args.chunks)
    _print_response(searcher.search(req), args.json)
    return 0


def cmd_serve(args) -> int:
    from serving.http import serve

    serve(_searcher(_settings()), host=args.host, port=args.port)
    return 0


def cmd_status(args) -> int:
    from rag_pipeline.catalog.catalog import open_settings_catalog
    from rag_pipeline.snapshot_schema import read_current_manifest

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        counts = cat.counts(settings.tenant_id)
    print(json.dumps({"catalog": counts}, indent=2))
    try:
        m = read_current_manifest(settings.snapshots_dir)
        print(f"current snapshot: {m.snapshot_id} ({m.n_units} units, {m.n_documents} documents,"
              f" {m.n_images} images)")
    except FileNotFoundError as exc:
        print(str(exc))
    return 0


def cmd_dead_letters(args) -> int:
    from rag_pipeline.catalog.catalog import open_settings_catalog

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        if args.redrive:
            n = cat.redrive(settings.tenant_id, args.error_class)
            print(f"re-drive: {n} failed results cleared; the next materialize retries them")
            return 0
        rows = cat.dead_letters(settings.tenant_id)
    for r in rows:
        print(f"{r['error_class']:<22} {r['stage']:<10} {r['uri']}\n    {r['message'][:200]}")
    print(f"{len(rows)} unresolved dead letters")
    return 0


def cmd_demo(args) -> int:
    from rag_pipeline.demo_corpus import generate_demo_corpus

    corpus_dir = Path(os.environ.get("RAG_SOURCES", str(DEMO_DIR)).split(os.pathsep)[0])
    corpus = generate_demo_corpus(corpus_dir, DEMO_GOLD)
    print(f"demo corpus: {corpus.n_documents} documents, {corpus.n_images} images "
          f"in {corpus_dir}")
    os.environ.setdefault("RAG_SOURCES", str(corpus_dir))
    cmd_materialize(argparse.Namespace(shard=None, all_partitions=False))
    settings = _settings()
    searcher = _searcher(settings)
    from serving import SearchRequest

    queries = [json.loads(line) for line in DEMO_GOLD.read_text().splitlines() if line.strip()]
    for q in queries[: args.queries]:
        _print_response(searcher.search(SearchRequest(query=q["query"], k=3,
                                                      tenant=settings.tenant_id)), False)
    print("\nNext: `make ui` starts the Dagster UI on http://127.0.0.1:3000 (asset graph, runs, "
          "shard partitions); `.venv/bin/rag-pipeline search \"your query\"` queries the index.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag-pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="generate the demo corpus, materialize, query")
    d.add_argument("--queries", type=int, default=4, help="example queries to run")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("generate-demo", help="write the demo corpus and gold queries")
    g.add_argument("--out", default=str(DEMO_DIR))
    g.add_argument("--gold", default=str(DEMO_GOLD))
    g.set_defaults(func=cmd_generate_demo)

    m = sub.add_parser("materialize",
                       help="discover -> profile x shard partitions -> publish, through Dagster")
    m.add_argument("--shard", action="append", help="only this shard (repeatable), e.g. 03")
    m.add_argument("--all-partitions", action="store_true",
                   help="every profile x shard partition, even without work")
    m.set_defaults(func=cmd_materialize)

    s = sub.add_parser("search", help="query the current snapshot")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--kind", choices=["document", "image"])
    s.add_argument("--folder", help="folder prefix inside a source, e.g. docs/kitchen")
    s.add_argument("--type", choices=["keyword", "semantic", "visual", "balanced"],
                   help="query type (default: classified from the text)")
    s.add_argument("--axes", help="comma-separated axes to use: fts,mv (default: all available)")
    s.add_argument("--chunks", action="store_true",
                   help="one hit per chunk instead of one per file")
    s.add_argument("--json", action="store_true", help="print the full response as JSON")
    s.set_defaults(func=cmd_search)

    sv = sub.add_parser("serve", help="HTTP API: /health, /search?q=")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.set_defaults(func=cmd_serve)

    st = sub.add_parser("status", help="catalog counts and current snapshot")
    st.set_defaults(func=cmd_status)

    dl = sub.add_parser("dead-letters", help="list failed files (or re-drive them)")
    dl.add_argument("--redrive", action="store_true")
    dl.add_argument("--error-class")
    dl.set_defaults(func=cmd_dead_letters)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`rag-pipeline`: one entry point, with subcommands.

demo           generate the demo corpus, materialize everything, run example queries
generate-demo  write the demo corpus and its gold queries
materialize    run discover -> shards -> snapshot through Dagster
search         query the current snapshot (hybrid by default) with explanations
similar        units like an asset (image -> image on the VV axis; documents on MV)
serve          HTTP API over the promoted snapshot (API keys, /docs)
keys           API keys: create, list, revoke
querylog       query log retention (purge) and the audit log
status         catalog counts and the current snapshot
policy         which profile serves each axis; promote / roll back (no recompute)
ranker         the rerank stage's ranker file: show, promote, roll back (then publishes)
models         list, init, sync or add analyzer profiles (models.yaml)
config         the effective settings; --markdown: the README's table of variables
tasks          task states per profile x shard partition
eval           run / compare / report evaluations (gold sets, BEIR folders)
dead-letters   list (or re-drive) files that failed, with their error class
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

DEMO_DIR = Path("var/demo_corpus")
DEMO_GOLD = Path("var/demo_gold.jsonl")


def _settings():
    from rag_pipeline.settings import Settings

    return Settings.from_env()


def cmd_generate_demo(args) -> int:
    from rag_pipeline.demo.corpus import generate_demo_corpus

    corpus = generate_demo_corpus(Path(args.out), Path(args.gold))
    print(
        f"demo corpus: {corpus.n_documents} documents, {corpus.n_images} images in "
        f"{corpus.corpus_dir}; gold queries in {corpus.gold_path}"
    )
    return 0


def cmd_materialize(args) -> int:
    from rag_pipeline.launcher import ensure_dagster_home, materialize_all

    ensure_dagster_home()
    from rag_pipeline.definitions import defs

    materialize_all(
        defs,
        shards=args.shard or None,
        all_partitions=args.all_partitions,
        launch="in_process" if args.in_process else "backfill",
        full_snapshot=args.full,
    )
    return 0


def _print_response(resp, as_json: bool) -> None:
    if as_json:
        print(resp.model_dump_json(indent=2))
        return
    axes = ", ".join(resp.axes_used)
    print(
        f'\n"{resp.query}"  [{resp.query_type}; axes: {axes}; '
        f"{resp.timings_ms.get('total', 0):.1f} ms; snapshot {resp.snapshot_id}]"
    )
    for axis, why in resp.axes_unavailable.items():
        if axis == "vv" or axis in resp.axes_used:
            print(f"  ({axis} unavailable: {why})")
    if not resp.hits:
        print("  (no hits)")
    for i, h in enumerate(resp.hits, 1):
        ranks = ", ".join(f"{a} #{ah.rank}" for a, ah in h.axes.items())
        print(f"  {i:2d}. {h.score:.4f}  {h.source}/{h.path}  ({h.kind}; {ranks})")
        for ev in h.explanation.matched_evidence[:2]:
            terms = ", ".join(ev.matched_terms) if ev.matched_terms else "meaning (vector)"
            run = next(
                (
                    r
                    for r in h.explanation.runs.values()
                    if isinstance(r, dict) and r.get("run_id") == ev.run_id
                ),
                {},
            )
            print(
                f"        matched {ev.field} [{terms}] from run {ev.run_id}"
                + (f" ({run.get('model_id')})" if run else "")
            )
        if h.explanation.matched_tags:
            print(f"        tags: {', '.join(h.explanation.matched_tags)}")
        if h.snippet:
            print(f"        “{h.snippet[:160]}”")


def _searcher(settings):
    from serving import Searcher

    return Searcher.from_settings(settings)


def _principal(searcher, settings, args):
    """The operator's principal: ``--tenant`` (default RAG_TENANT) with ``--groups`` (default:
    every group of that tenant, i.e. the whole tenant)."""
    groups = (
        {g.strip() for g in args.groups.split(",") if g.strip()}
        if getattr(args, "groups", None) is not None
        else None
    )
    return searcher.operator_principal(getattr(args, "tenant", None) or settings.tenant_id, groups)


# One line per CLI search / similar (like serving's access log): INFO on this logger, which the
# CLI's WARNING root level lets through.
access_log = logging.getLogger("rag_pipeline.cli.access")
access_log.setLevel(logging.INFO)


@contextlib.contextmanager
def _logged(op: str, settings, tenant: str, query: str):
    """Log one JSON line for a CLI search: request id, tenant, latency, snapshot id, hits
    (the query text only with ``RAG_LOG_QUERY_TEXT``); the outcome if it raised."""
    import uuid

    fields: dict = {"request_id": "cli-" + uuid.uuid4().hex[:16], "op": op, "tenant": tenant}
    if settings.log_query_text:
        fields["query"] = query
    t0 = time.perf_counter()
    try:
        yield fields
        fields["status"] = "ok"
    except BaseException as exc:
        fields["status"] = "error"
        fields["error"] = type(exc).__name__
        raise
    finally:
        fields["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        access_log.info(
            "%s %s %s %.1fms snapshot=%s",
            fields["request_id"],
            op,
            fields["status"],
            fields["latency_ms"],
            fields.get("snapshot_id", "-"),
            extra={"fields": fields},
        )


def cmd_search(args) -> int:
    from serving import SearchFilters, SearchRequest

    settings = _settings()
    searcher = _searcher(settings)
    filters = (
        SearchFilters(kind=args.kind, folder_prefix=args.folder, tags=args.tag)
        if (args.kind or args.folder or args.tag)
        else None
    )
    req = SearchRequest(
        query=args.query,
        k=args.k,
        filters=filters,
        query_type=args.type,
        axes=args.axes.split(",") if args.axes else None,
        collapse=not args.chunks,
    )
    who = _principal(searcher, settings, args)
    with _logged("search", settings, who.tenant, args.query) as fields:
        resp = searcher.search(req, who)
        fields.update(snapshot_id=resp.snapshot_id, hits=len(resp.hits))
    _print_response(resp, args.json)
    return 0


def cmd_similar(args) -> int:
    import hashlib
    import re
    from pathlib import Path

    from serving import SearchFilters, SimilarRequest

    settings = _settings()
    target = args.asset
    if not re.fullmatch(r"[0-9a-f]{64}", target):  # a file: its asset id is its content hash
        path = Path(target)
        if not path.is_file():
            raise SystemExit(f"error: {target!r} is neither an asset id (sha256) nor a file")
        target = hashlib.sha256(path.read_bytes()).hexdigest()
    filters = SearchFilters(kind=args.kind) if args.kind else None
    try:
        searcher = _searcher(settings)
        who = _principal(searcher, settings, args)
        with _logged("similar", settings, who.tenant, target) as fields:
            resp = searcher.similar(
                SimilarRequest(asset_id=target, k=args.k, axis=args.axis, filters=filters), who
            )
            fields.update(snapshot_id=resp.snapshot_id, hits=len(resp.hits))
    except KeyError as exc:
        raise SystemExit(f"error: {exc.args[0]}") from None
    _print_response(resp, args.json)
    return 0


def cmd_serve(args) -> int:
    from serving.server import ServeRefused, serve

    try:
        serve(
            _settings(),
            host=args.host,
            port=args.port,
            workers=args.workers,
            dev=args.dev,
            log_level=args.log_level,
        )
    except ServeRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _key_store():
    from serving.keys import KeyStore

    return KeyStore.from_settings(_settings())


def cmd_keys(args) -> int:
    from serving.keys import parse_expiry

    store = _key_store()
    try:
        if args.keys_cmd == "create":
            key, info = store.create(
                args.tenant,
                groups=args.groups.split(",") if args.groups else None,
                scopes=args.scopes.split(","),
                name=args.name or "",
                expires_at=parse_expiry(args.expires),
                rate_per_min=args.rate,
                burst=args.burst,
            )
            print(
                f"created {info.key_id} (tenant {info.tenant}, groups "
                f"{','.join(info.groups)}, scopes {','.join(info.scopes)}"
                + (f", expires {info.expires_at:%Y-%m-%d %H:%M:%S}Z" if info.expires_at else "")
                + ")",
                file=sys.stderr,
            )
            print("the key is shown once; store it now:", file=sys.stderr)
            print(key)
            return 0
        if args.keys_cmd == "revoke":
            if not store.revoke(args.key_id):
                print(f"error: no key {args.key_id!r}", file=sys.stderr)
                return 2
            print(f"revoked {args.key_id} (servers stop accepting it within {store.cache_s:g} s)")
            return 0
        rows = [k.public() for k in store.list()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        cols = (
            "key_id",
            "name",
            "tenant",
            "groups",
            "scopes",
            "state",
            "created_at",
            "expires_at",
            "last_used_at",
        )
        for r in rows:
            r["groups"], r["scopes"] = ",".join(r["groups"]), ",".join(r["scopes"])
        widths = {c: max([len(c), *(len(str(r[c] or "-")) for r in rows)]) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols))
        for r in rows:
            print("  ".join(str(r[c] or "-").ljust(widths[c]) for c in cols))
        return 0
    finally:
        store.close()


def cmd_status(args) -> int:
    from rag_pipeline.snapshot.schema import read_current_manifest
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        counts = cat.counts()
        tenants = cat.tenant_counts()
    print(json.dumps({"catalog": counts}, indent=2))
    if tenants:
        cols = ("assets", "current_versions", "ok_results", "dead_letters")
        print(f"{'tenant':<24}" + "".join(f"{c:>18}" for c in cols))
        for t in tenants:
            print(f"{t['tenant_id']:<24}" + "".join(f"{t[c]:>18}" for c in cols))
    try:
        m = read_current_manifest(settings.snapshots_dir)
        print(
            f"current snapshot: {m.snapshot_id} ({m.n_units} units, {m.n_documents} documents,"
            f" {m.n_images} images)"
        )
    except FileNotFoundError as exc:
        print(str(exc))
    return 0


def cmd_dead_letters(args) -> int:
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        if args.redrive:
            n = cat.redrive(args.tenant, args.error_class)
            print(f"re-drive: {n} failed results cleared; the next materialize retries them")
            return 0
        rows = cat.dead_letters(args.tenant)
    for r in rows:
        print(
            f"{r['tenant_id']:<12} {r['error_class']:<22} {r['stage']:<10} {r['uri']}\n"
            f"    {r['message'][:200]}"
        )
    print(f"{len(rows)} unresolved dead letters")
    return 0


def cmd_ranker(args) -> int:
    from rag_pipeline.retrieval.ranker import RankerModel
    from rag_pipeline.snapshot import rankers
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        if args.ranker_cmd == "show":
            current = rankers.effective_ranker(settings, cat)
            model = rankers.resolve(settings, current)
            print(f"ranker: {current}")
            if model is not None:
                print(f"  rerank depth: {model.depth or 'the stage default (100)'}")
            if model is not None and model.cv:
                cv = model.cv
                for m, d in cv.get("diff", {}).items():
                    print(
                        f"  {m}: fused {cv['fused'][m]:.4f} -> reranked {cv['reranked'][m]:.4f} "
                        f"(out-of-fold, 95% CI [{d['lo']:+.4f}, {d['hi']:+.4f}])"
                    )
            for h in rankers.ranker_history(cat):
                print(f"  {h['set_at']:%Y-%m-%d %H:%M:%S}  {h['version']}  {h['note']}")
            return 0
        if args.ranker_cmd == "promote":
            target = args.ranker
            if Path(target).is_file():
                model = RankerModel.read(Path(target))
                rankers.register(settings, model)
                target = model.version
            rankers.set_ranker(settings, cat, target, args.note or "promote")
        else:
            target = rankers.rollback_target(settings, cat)
            rankers.set_ranker(settings, cat, target, args.note or "rollback")
    print(f"ranker -> {target}")
    if args.no_publish:
        print("publish it with: rag-pipeline materialize")
        return 0
    # The ranker travels in the snapshot: publishing a new one (no analysis reruns) makes the
    # change live; a running server follows the promoted snapshot.
    return cmd_materialize(argparse.Namespace(shard=None, all_partitions=False))


def cmd_policy(args) -> int:
    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.snapshot.policy import (
        effective_policy,
        policy_history,
        set_policy,
    )
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = _settings()
    profiles = load_profiles(settings)
    with open_settings_catalog(settings) as cat:
        if args.policy_cmd == "set":
            set_policy(profiles, cat, args.axis, args.profile, args.note or "")
            print(
                f"policy: {args.axis} -> {args.profile}; materialize search_snapshot "
                "(rag-pipeline materialize) to publish it"
            )
            return 0
        current = effective_policy(profiles, cat)
        history = policy_history(cat)
    print(f"models file: {profiles.source}")
    for axis, name in current.items():
        print(f"  {axis:<5} -> {name}")
    if history:
        print("history:")
        for h in history:
            print(
                f"  {h['set_at']:%Y-%m-%d %H:%M:%S}  {h['axis']:<5} -> {h['profile']}  {h['note']}"
            )
    return 0


def cmd_config(args) -> int:
    from rag_pipeline.settings import env_name, settings_table

    if args.markdown:
        print(settings_table())
        return 0
    for name, value in _settings().model_dump(mode="json").items():
        shown = os.pathsep.join(value) if isinstance(value, list) else value
        print(f"{env_name(name)}={shown}")
    return 0


def cmd_models(args) -> int:
    from rag_pipeline.analysis.profiles import load_profiles

    settings = _settings()
    if args.models_cmd == "init":
        from rag_pipeline.settings import packaged_file

        if settings.models_file.exists():
            raise SystemExit(f"error: {settings.models_file} exists; edit it")
        shutil.copyfile(packaged_file("models.yaml"), settings.models_file)
        print(f"wrote {settings.models_file} (the packaged default); edit it to add profiles")
        return 0
    if args.models_cmd == "add":
        _models_add(settings, args)
    profiles = load_profiles(settings)
    if args.models_cmd in ("add", "sync"):
        from rag_pipeline.defs.partitions import sync_profiles
        from rag_pipeline.launcher import ensure_dagster_home

        ensure_dagster_home()
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            added = sync_profiles(instance, settings)
        print(f"registered as partitions: {', '.join(added) or 'nothing new'}")
    print(f"models file: {profiles.source}")
    for p in [*profiles.by_name.values(), *profiles.query_time.values()]:
        spec = next(iter(p.tasks.values())).model
        # Query-time profiles (cross-encoders) run in serving: no pool, no partitions.
        where = "query-time" if p.name in profiles.query_time else f"pool={p.pool:<4}"
        print(
            f"  {p.name:<16} {p.analyzer:<9} {where} {spec.model_id}@{spec.revision}"
            + (f" dim={p.dim}" if p.dim else "")
            + (f"  UNAVAILABLE: {p.unavailable}" if p.unavailable else "")
        )
    return 0


def _models_add(settings, args) -> None:
    import yaml

    from rag_pipeline.analysis.analyzers.text_embedding import model_spec_for
    from rag_pipeline.analysis.profiles import ModelsFile, profile_name_ok

    if not profile_name_ok(args.name):
        raise SystemExit(f"error: profile name {args.name!r}: lowercase letters, digits, . _ -")
    # Written to RAG_MODELS_FILE (./models.yaml by default), starting from the file in use.
    path = settings.models_file
    doc = yaml.safe_load(settings.models_path.read_text())
    if any(p["name"] == args.name for p in doc["profiles"]):
        raise SystemExit(f"error: profile {args.name!r} already exists in {path}")
    # Describing the model fails clearly if the directory is not one of that kind.
    if args.analyzer == "mv_embed":
        spec, backend = model_spec_for(args.model_dir), "sentence-transformers"
    elif args.analyzer == "vv_embed":
        from rag_pipeline.analysis.analyzers.image_embedding import image_model_spec

        spec, backend = image_model_spec(args.model_dir), "transformers"
    elif args.analyzer == "cross_encoder":
        from rag_pipeline.retrieval.cross_encoder import cross_encoder_spec

        spec, backend = cross_encoder_spec(args.model_dir), "sentence-transformers"
    else:
        from rag_pipeline.analysis.analyzers.captioning import local_model_spec

        backend = args.backend or "transformers"
        spec = local_model_spec(args.model_dir, backend)
    model = {"backend": backend, "model_dir": str(args.model_dir), "model_id": spec.model_id}
    if args.pin:
        model |= {"revision": spec.revision, "weights_checksum": spec.weights_checksum}
    entry = {"name": args.name, "analyzer": args.analyzer, "model": model}
    if args.analyzer == "mv_embed":
        entry["config"] = {"text_profile": args.text_profile}
    doc["profiles"].append(entry)
    ModelsFile.model_validate(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"added profile {args.name!r} to {path}")


def cmd_tasks(args) -> int:
    from rag_pipeline.planning.task_states import task_states
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings = _settings()
    with open_settings_catalog(settings) as cat:
        states = task_states(settings, cat)
    cols = ("queued", "reported", "persisted", "failed", "dead_letter")
    print(f"{'partition':<24}" + "".join(f"{c:>12}" for c in cols))
    for st in states:
        if args.all or any(st[c] for c in cols):
            print(f"{st['partition']:<24}" + "".join(f"{st[c]:>12}" for c in cols))
    return 0


def cmd_demo(args) -> int:
    from rag_pipeline.demo.corpus import generate_demo_corpus

    corpus_dir = _settings().sources[0]
    corpus = generate_demo_corpus(corpus_dir, DEMO_GOLD)
    print(f"demo corpus: {corpus.n_documents} documents, {corpus.n_images} images in {corpus_dir}")
    os.environ.setdefault("RAG_SOURCES", str(corpus_dir))
    # In this process: the demo's ~40 small partitions would each pay a run process's start
    # (Python, Dagster, torch: ~10 s on 2 cores), 9 minutes instead of 2. `materialize` (the
    # production path) submits them as one backfill.
    cmd_materialize(
        argparse.Namespace(shard=None, all_partitions=False, in_process=True, full=False)
    )
    settings = _settings()
    searcher = _searcher(settings)
    from serving import SearchRequest

    queries = [json.loads(line) for line in DEMO_GOLD.read_text().splitlines() if line.strip()]
    for q in queries[: args.queries]:
        _print_response(
            searcher.search(
                SearchRequest(query=q["query"], k=3),
                searcher.operator_principal(settings.tenant_id),
            ),
            False,
        )
    print(
        "\nNext: `make ui` starts the Dagster UI on http://127.0.0.1:3000 (asset graph, runs, "
        'shard partitions); `.venv/bin/rag-pipeline search "your query"` queries the index.'
    )
    print(demo_page_instructions(settings))
    return 0


def demo_page_instructions(settings) -> str:
    """How to open the search page over the demo index: the ``serve`` command, the page's
    address and a new key (read scope: search, similar, thumbnails, feedback) in the store
    ``serve`` reads. The demo starts no server."""
    from serving.keys import KeyStore

    store = KeyStore.from_settings(settings)
    try:
        key, info = store.create(settings.tenant_id, scopes=["read"], name="demo-page")
    finally:
        store.close()
    return (
        f"\nThe HTTP API (API keys; schema on /docs):\n"
        f"  .venv/bin/rag-pipeline serve --port 8080 &\n"
        f'  curl -s -H "Authorization: Bearer {key}" '
        f"'http://127.0.0.1:8080/v1/search?q=red+lighthouse&k=3'\n"
        f"\nThe search page: start the server, open the address, sign in with the key:\n"
        f"  .venv/bin/rag-pipeline serve --port 8080\n"
        f"  page: http://127.0.0.1:8080/\n"
        f"  key:  {key}\n"
        f"  ({info.key_id}, tenant {info.tenant}, scope read; "
        f"`.venv/bin/rag-pipeline keys revoke {info.key_id}` drops it)"
    )


def _materialize_configured(log=print) -> dict:
    from rag_pipeline.launcher import (
        materialize_configured,  # Dagster is slow to import
    )

    return materialize_configured(log=log)


def _principal_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="the tenant to search as (default: RAG_TENANT)")
    parser.add_argument(
        "--groups",
        help="comma-separated ACL groups to search with (default: "
        "every group of the tenant: the whole tenant)",
    )


def build_parser() -> argparse.ArgumentParser:
    from rag_pipeline.contracts import QUERY_TYPES  # the one query-type vocabulary

    p = argparse.ArgumentParser(
        prog="rag-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="generate the demo corpus, materialize, query")
    d.add_argument("--queries", type=int, default=4, help="example queries to run")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("generate-demo", help="write the demo corpus and gold queries")
    g.add_argument("--out", default=str(DEMO_DIR))
    g.add_argument("--gold", default=str(DEMO_GOLD))
    g.set_defaults(func=cmd_generate_demo)

    m = sub.add_parser(
        "materialize", help="discover -> profile x shard partitions -> publish, through Dagster"
    )
    m.add_argument("--shard", action="append", help="only this shard (repeatable), e.g. 03")
    m.add_argument(
        "--all-partitions",
        action="store_true",
        help="every profile x shard partition, even without work",
    )
    m.add_argument(
        "--in-process",
        action="store_true",
        help="run the partitions in this process one by one instead of as a backfill through "
        "dagster-daemon (no daemon needed; failures show their traceback here)",
    )
    m.add_argument(
        "--full",
        action="store_true",
        help="rebuild the whole snapshot table instead of applying the change since the "
        "last snapshot",
    )
    m.set_defaults(func=cmd_materialize)

    s = sub.add_parser("search", help="query the current snapshot")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--kind", choices=["document", "image"])
    s.add_argument("--folder", help="folder prefix inside a source, e.g. docs/kitchen")
    s.add_argument(
        "--type", choices=QUERY_TYPES, help="query type (default: classified from the text)"
    )
    s.add_argument("--axes", help="comma-separated axes to use: fts,mv,vv (default: all available)")
    s.add_argument(
        "--chunks", action="store_true", help="one hit per chunk instead of one per file"
    )
    s.add_argument(
        "--tag",
        action="append",
        help="only units carrying this content tag (repeatable: all must match)",
    )
    s.add_argument("--json", action="store_true", help="print the full response as JSON")
    _principal_args(s)
    s.set_defaults(func=cmd_search)

    si = sub.add_parser("similar", help="find units like an asset (image -> image on VV)")
    si.add_argument("asset", help="asset id (sha256) or the path of an indexed file")
    si.add_argument("-k", type=int, default=10)
    si.add_argument(
        "--axis",
        choices=["vv", "mv"],
        help="vector axis (default: vv when the asset has a VV vector, else mv)",
    )
    si.add_argument("--kind", choices=["document", "image"])
    si.add_argument("--json", action="store_true", help="print the full response as JSON")
    _principal_args(si)
    si.set_defaults(func=cmd_similar)

    sv = sub.add_parser("serve", help="HTTP API (FastAPI + uvicorn): /v1/search, /docs, ...")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (each opens the snapshot and its models)",
    )
    sv.add_argument(
        "--dev",
        action="store_true",
        help="local trials: serve keyless requests as RAG_TENANT (loopback only)",
    )
    sv.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    sv.set_defaults(func=cmd_serve)

    ke = sub.add_parser("keys", help="API keys of the HTTP API: create, list, revoke")
    ke_sub = ke.add_subparsers(dest="keys_cmd", required=True)
    kc = ke_sub.add_parser("create", help="make a key and print it (once)")
    kc.add_argument("--tenant", required=True)
    kc.add_argument(
        "--groups", help="ACL groups, comma-separated (default: all, the tenant-wide group)"
    )
    kc.add_argument("--scopes", default="read", help="read[,write,admin] (default: read)")
    kc.add_argument("--name", help="what the key is for")
    kc.add_argument("--expires", help="30d, 12h, 90m or an ISO date/datetime (default: never)")
    kc.add_argument(
        "--rate",
        type=int,
        help="the key's own limit in requests/minute (0: none; default: RAG_RATE_PER_MIN)",
    )
    kc.add_argument(
        "--burst",
        type=int,
        help="the key's token bucket size (default: its rate or RAG_RATE_BURST)",
    )
    kl = ke_sub.add_parser("list", help="keys and their state (never the keys or hashes)")
    kl.add_argument("--json", action="store_true")
    kr = ke_sub.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("key_id")
    ke.set_defaults(func=cmd_keys)

    ql = sub.add_parser("querylog", help="the query log: purge old queries, show the audit log")
    ql_sub = ql.add_subparsers(dest="querylog_cmd", required=True)
    qp = ql_sub.add_parser("purge", help="delete queries and feedback older than --days")
    qp.add_argument("--days", type=int, default=None, help="default: RAG_QUERY_LOG_DAYS")
    ql_sub.add_parser("audit", help="the audit log (append-only), one JSON object per line")
    ql.set_defaults(func=cmd_querylog)

    po = sub.add_parser("policy", help="which profile serves each axis (promote / roll back)")
    po_sub = po.add_subparsers(dest="policy_cmd", required=True)
    po_sub.add_parser("show", help="current policy and its history")
    ps = po_sub.add_parser("set", help="serve AXIS from PROFILE in the next snapshot")
    ps.add_argument("axis", choices=["text", "mv", "ocr", "vv", "caption", "cross_encoder"])
    ps.add_argument(
        "profile", help="a profile of the models file (cross_encoder: `none` switches it off)"
    )
    ps.add_argument("--note", help="why (kept in the history)")
    po.set_defaults(func=cmd_policy)

    rk = sub.add_parser("ranker", help="the rerank stage's ranker: show, promote, roll back")
    rk_sub = rk.add_subparsers(dest="ranker_cmd", required=True)
    rk_sub.add_parser("show", help="the ranker served, its out-of-fold figures, its history")
    rp = rk_sub.add_parser("promote", help="serve a ranker file (or a registered version)")
    rp.add_argument("ranker", help="ranker.json (written by eval train-ranker) or a version")
    rr = rk_sub.add_parser("rollback", help="serve the ranker served before the current one")
    for q in (rp, rr):
        q.add_argument("--note", help="why (kept in the history)")
        q.add_argument(
            "--no-publish", action="store_true", help="only set the policy (publish later)"
        )
    rk.set_defaults(func=cmd_ranker)

    cf = sub.add_parser("config", help="the effective settings (every RAG_* variable)")
    cf.add_argument(
        "--markdown",
        action="store_true",
        help="the table of variables, defaults and meanings (as in the README)",
    )
    cf.set_defaults(func=cmd_config)

    mo = sub.add_parser("models", help="analyzer profiles (models.yaml)")
    mo_sub = mo.add_subparsers(dest="models_cmd", required=True)
    mo_sub.add_parser("list", help="profiles in the models file")
    mo_sub.add_parser("init", help="write the packaged models.yaml to RAG_MODELS_FILE to edit")
    mo_sub.add_parser("sync", help="register every profile as a Dagster partition")
    ma = mo_sub.add_parser(
        "add", help="add a model profile (MV, VV, captions or a cross-encoder) and register it"
    )
    ma.add_argument("name")
    ma.add_argument(
        "--analyzer",
        choices=["mv_embed", "vv_embed", "caption", "cross_encoder"],
        default="mv_embed",
    )
    ma.add_argument(
        "--model-dir",
        required=True,
        help="local model directory (sentence-transformers, CLIP/SigLIP, a VLM or a "
        "sentence-transformers CrossEncoder)",
    )
    ma.add_argument(
        "--backend",
        choices=["transformers", "vllm"],
        help="caption profiles: run the VLM with transformers (default) or vLLM",
    )
    ma.add_argument("--text-profile", default="text-v2")
    ma.add_argument(
        "--pin",
        action="store_true",
        help="pin the revision and weights checksum found now (model parity)",
    )
    mo.set_defaults(func=cmd_models)

    ta = sub.add_parser("tasks", help="task states per profile x shard partition")
    ta.add_argument("--all", action="store_true", help="also partitions with nothing pending")
    ta.set_defaults(func=cmd_tasks)

    st = sub.add_parser("status", help="catalog counts and current snapshot")
    st.set_defaults(func=cmd_status)

    dl = sub.add_parser("dead-letters", help="list failed files (or re-drive them)")
    dl.add_argument("--redrive", action="store_true")
    dl.add_argument("--error-class")
    dl.add_argument("--tenant", help="only this tenant's letters (default: every tenant)")
    dl.set_defaults(func=cmd_dead_letters)

    from evals.cli import add_eval_parser

    add_eval_parser(sub, materialize=_materialize_configured)
    return p


def cmd_querylog(args) -> int:
    from serving.querylog import QueryLog

    settings = _settings()
    store = _key_store()
    try:
        qlog = QueryLog(store.engine, retention_days=settings.query_log_days)
        if args.querylog_cmd == "purge":
            n = qlog.purge(args.days)
            days = settings.query_log_days if args.days is None else args.days
            print(
                f"purged {n['query_log']} queries and {n['feedback']} feedback rows older "
                f"than {days} days"
            )
            return 0
        for row in qlog.audit_rows():
            print(json.dumps(row, default=str))
        return 0
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    from rag_pipeline.jsonlog import configure_cli_logging
    from rag_pipeline.settings import Settings

    args = build_parser().parse_args(argv)
    try:
        fmt = Settings.from_env().log_format
    except Exception:  # invalid settings: the command itself reports them
        fmt = "json"
    configure_cli_logging(fmt)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:  # ProfileError, bad settings
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Serving refusals (an unavailable axis, a mismatched query model) are answers, not bugs.
        # Only commands that searched have imported serving (it is slow to import).
        errors = sys.modules.get("serving.errors")
        if errors is not None and isinstance(exc, errors.SearchError):
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())

"""`rag-pipeline eval ...`: run an evaluation, compare two runs (with gates), write a report.

    rag-pipeline eval run --dataset DIR [--gold FILE] [--split test] [--engine hybrid]
                          [--out FILE.json] [--limit-queries N] [--workdir DIR] [--no-index]
    rag-pipeline eval compare A.json B.json [--gates FILE] [--use-ci] [--out FILE.json]
    rag-pipeline eval report A.json [B.json ...] --out DIR
    rag-pipeline eval build-gold --out FILE.jsonl [--data-dir DIR] [-n 50] [--seed 0]
    rag-pipeline eval labels [--judgements FILE]... [--clicks FILE]... [--from-feedback]
                             --out FILE.jsonl
    rag-pipeline eval qa [--gold FILE] [--out report.json] [--data-dir DIR] [--mode M]
    rag-pipeline eval train-ranker --gold FILE.jsonl --out ranker.json [--version V]
                                   [--depth 100] [--folds 5] [--data-dir DIR]

``run`` indexes the dataset through the pipeline (Dagster) into its own data dir
``var/evals/<dataset name>/`` (an unchanged corpus is not re-analysed), then evaluates the
snapshot it published. ``--dataset`` is a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv: any split present), or, with ``--gold FILE`` (extended JSONL), the folder
of files the gold set's paths are relative to. ``compare`` exits 1 when the gates BLOCK.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from evals.runner import ENGINES

EVAL_ROOT = Path("var/evals")


Materialize = Callable[..., dict]


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")


def load_goldset(dataset: str, gold: str | None, split: str):
    from evals.goldsets import is_beir_dir, load_beir_gold, load_gold_jsonl

    ds = Path(dataset)
    if gold:
        if not ds.is_dir():
            raise FileNotFoundError(f"--dataset {ds} is not a folder")
        gs = load_gold_jsonl(gold, name=ds.resolve().name)
        gs.split = Path(gold).name
        return gs
    if not is_beir_dir(ds):
        raise ValueError(
            f"{ds} is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/); "
            "for a folder of files give its gold set with --gold FILE"
        )
    return load_beir_gold(ds, split)


def cmd_eval_run(args) -> int:
    from evals import runner

    gs = load_goldset(args.dataset, args.gold, args.split).limit(args.limit_queries)
    workdir = Path(args.workdir) if args.workdir else EVAL_ROOT / gs.name
    workdir = workdir.absolute()
    sources, mapper = runner.prepare_dataset(gs, workdir, Path(args.dataset).absolute())
    runner.configure_environment(workdir, sources)  # before the Dagster defs are imported
    summary = None
    if not args.no_index:
        print(
            f"indexing {gs.name} ({', '.join(map(str, sources))}) into {workdir / 'data'} "
            "through Dagster ...",
            file=sys.stderr,
        )
        if args.materialize is None:
            raise ValueError(
                "indexing needs the pipeline: run `rag-pipeline eval run`, "
                "or evaluate what is indexed with --no-index"
            )
        summary = args.materialize(log=lambda *a: print(*a, file=sys.stderr))
    searcher = runner.open_searcher(
        workdir / "data", pointer=args.pointer, fts_combine=args.fts_combine
    )
    try:
        res = runner.evaluate_searcher(
            searcher,
            gs,
            mapper,
            engine=args.engine,
            use_gold_types=args.use_gold_types,
            extra_provenance={
                "workdir": str(workdir),
                "label": args.label,
                "index_runs": (summary or {}).get("runs"),
            },
        )
    finally:
        searcher.close()
    out = (
        Path(args.out)
        if args.out
        else workdir
        / "results"
        / f"{gs.split}-{args.engine}-{res['provenance']['snapshot_id']}.json"
    )
    _write_json(out, res)
    m = res["metrics"]
    print(
        f"{gs.name} [{gs.split}] engine={args.engine} snapshot="
        f"{res['provenance']['snapshot_id']} queries={res['n_queries']}"
    )
    print("  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    print(f"results: {out}")
    return 0


def cmd_eval_compare(args) -> int:
    from evals.gates import apply_gates, load_gates
    from evals.report import comparison_table, load_result
    from evals.stats import compare_runs

    a, b = load_result(args.a), load_result(args.b)
    cmp = compare_runs(a, b, n=args.resamples, seed=args.seed)
    config = load_gates(args.gates)
    if args.use_ci:
        config.use_ci = True
    verdict = apply_gates(a["metrics"], b["metrics"], config, comparison=cmp)
    cmp["gates"] = verdict.model_dump()
    cmp["a"], cmp["b"] = str(args.a), str(args.b)
    print(
        f"A = {args.a}\nB = {args.b}\n{cmp['n_common_queries']} paired queries, "
        f"{cmp['n_resamples']} bootstrap resamples (seed {cmp['seed']})\n"
    )
    print(comparison_table(cmp))
    print(f"\nverdict: {verdict.verdict}")
    for c in verdict.checks:
        print(f"  [{'ok' if c.passed else 'BLOCK'}] {c.reason}")
    if args.out:
        _write_json(Path(args.out), cmp)
    return 0 if verdict.passed else 1


def cmd_eval_report(args) -> int:
    from evals.report import load_result, write_report

    results = [load_result(p) for p in args.results]
    path = write_report(results, args.out)
    print(f"report: {path}")
    return 0


def cmd_eval_build_gold(args) -> int:
    from evals.dataset_builder import build_from_snapshot
    from rag_pipeline.settings import Settings

    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    sid, queries = build_from_snapshot(
        data_dir,
        Path(args.out),
        n=args.n,
        seed=args.seed,
        strategies=tuple(args.strategy.split(",")),
        pointer=args.pointer,
    )
    print(f"{len(queries)} weak gold queries from snapshot {sid} -> {args.out}")
    return 0


def cmd_eval_labels(args) -> int:
    from evals.label_builder import LabelBuilder

    lb = LabelBuilder(min_clicks=args.min_clicks)
    for p in args.judgements or []:
        lb.add_judgements(p)
    for p in args.clicks or []:
        lb.add_clicks(p)
    if args.from_feedback:
        from rag_pipeline.settings import Settings
        from serving.keys import KeyStore
        from serving.querylog import QueryLog

        store = KeyStore.from_settings(Settings.from_env())
        try:
            lb.add_feedback(list(QueryLog(store.engine).feedback_rows(args.tenant)))
        finally:
            store.close()
    if not (args.judgements or args.clicks or args.from_feedback):
        raise ValueError("eval labels: give --judgements, --clicks and/or --from-feedback")
    lb.write(args.out, args.qrels)
    q = lb.qrels()
    print(f"{len(q)} queries, {sum(len(v) for v in q.values())} judged documents -> {args.out}")
    return 0


def cmd_eval_qa(args) -> int:
    """Golden QA through the /v1/ask path (``serving.ask.Asker``) on a published snapshot."""
    from evals.qa import QA_METRICS, evaluate_qa, load_qa
    from evals.runner import eval_principal, open_searcher
    from rag_pipeline.answers import generator_from_settings, threshold_from_settings
    from rag_pipeline.demo.corpus import load_golden_qa
    from rag_pipeline.settings import Settings
    from serving.ask import Asker

    settings = Settings.from_env()
    questions = load_qa(args.gold) if args.gold else load_golden_qa()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    threshold = args.threshold if args.threshold is not None else threshold_from_settings(settings)
    asker = Asker(generator_from_settings(settings), threshold)
    searcher = open_searcher(data_dir, pointer=args.pointer)
    try:
        res = evaluate_qa(
            searcher, questions, asker, eval_principal(searcher, args.tenant), mode=args.mode
        )
    finally:
        searcher.close()
    res["gold"] = args.gold or "packaged demo golden QA"
    if args.out:
        _write_json(Path(args.out), res)
    m = res["metrics"]
    print(
        f"golden QA: {res['n_questions']} questions ({res['n_unanswerable']} unanswerable), "
        f"snapshot {res['snapshot_id']}, threshold {res['threshold']}"
    )
    print("  " + "  ".join(f"{k}={m[k]:.4f}" for k in QA_METRICS))
    cal = res["calibration"]
    print(
        f"  calibration: threshold {cal['threshold']} answers/refuses {cal['correct']}/{cal['n']}"
        f" correctly (answerable min score {cal['answerable_min']}, unanswerable max "
        f"{cal['unanswerable_max']})"
    )
    for row in res["per_question"]:
        if row["refused"] == row["answerable"] or not row["phrases_ok"]:
            print(
                f"  miss {row['qa_id']}: refused={row['refused']} score="
                f"{row['evidence_score']} {row['answer'][:100]!r}"
            )
    if args.out:
        print(f"results: {args.out}")
    return 0


def cmd_eval_train_ranker(args) -> int:
    from evals import ranker_training, runner
    from evals.goldsets import is_beir_dir, load_beir_gold, load_gold_jsonl
    from rag_pipeline.settings import Settings

    settings = Settings.from_env()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    if is_beir_dir(Path(args.gold)):
        gs = load_beir_gold(Path(args.gold), args.split)
        mapping_root = Path(args.corpus) if args.corpus else data_dir.parent / "corpus"
        mapper = runner.DocMapper(
            beir_map={p.stem: p.stem for p in mapping_root.rglob("*.md")}
            if mapping_root.is_dir()
            else {}
        )
    else:
        gs = load_gold_jsonl(args.gold, name=Path(args.gold).stem)
        mapper = runner.DocMapper()
    searcher = runner.open_searcher(data_dir, pointer=args.pointer)
    try:
        who = runner.eval_principal(searcher)
        queries = [(q.query_id, q.query, dict(q.relevant)) for q in gs.queries]
        judged = ranker_training.collect(searcher, queries, mapper.row_keys, who, depth=args.depth)
        snapshot_id = searcher.manifest.snapshot_id
        # The cross-encoder whose scores ``ce_score`` learned from (the weight is for those).
        ce = searcher.manifest.cross_encoder
        cross_encoder = (
            {"profile": ce.profile, "model_key": ce.model.key, "top_n": ce.config.get("top_n")}
            if ce is not None and searcher.cross_encoder is not None
            else None
        )
        if ce is not None and cross_encoder is None:
            print(
                f"note: the snapshot's cross-encoder {ce.profile!r} is unavailable "
                f"({searcher.cross_encoder_unavailable}): trained without ce_score"
            )
    finally:
        searcher.close()
    version = args.version or f"ranker-{gs.name}-{snapshot_id}"
    model = ranker_training.train(
        judged,
        version=version,
        folds=args.folds,
        trained_on={
            "gold": str(args.gold),
            "gold_queries": len(gs.queries),
            "snapshot_id": snapshot_id,
            "candidates": args.depth,
            **({"cross_encoder": cross_encoder} if cross_encoder else {}),
        },
    )
    model.write(Path(args.out))
    cv = model.cv
    print(
        f"ranker {model.version}: {cv['queries']} queries, {cv['folds']}-fold out-of-fold "
        f"(rerank depth chosen per training split: {cv.get('depth_per_fold')}; served: "
        f"{model.depth}):"
    )
    for m, d in cv["diff"].items():
        print(
            f"  {m}: fused {cv['fused'][m]:.4f} -> reranked {cv['reranked'][m]:.4f} "
            f"(diff {d['diff']:+.4f}, 95% CI [{d['lo']:+.4f}, {d['hi']:+.4f}])"
        )
    print(f"written: {args.out} (promote it: rag-pipeline ranker promote {args.out})")
    return 0


def add_eval_parser(subparsers, materialize: Materialize | None = None) -> argparse.ArgumentParser:
    """The ``eval`` commands. ``materialize`` indexes the configured sources through the pipeline
    (``rag-pipeline`` passes its Dagster launcher); without it ``eval run`` needs ``--no-index``,
    so evals never import the Dagster definitions."""
    ev = subparsers.add_parser("eval", help="evaluate snapshots: run, compare (gates), report")
    sub = ev.add_subparsers(dest="eval_cmd", required=True)

    r = sub.add_parser("run", help="index a dataset through the pipeline and evaluate it")
    r.add_argument(
        "--dataset",
        required=True,
        help="BEIR folder, or (with --gold) the folder of files to index",
    )
    r.add_argument("--gold", help="extended JSONL gold set (paths relative to --dataset)")
    r.add_argument("--split", default="test", help="BEIR qrels split (default: test)")
    r.add_argument("--engine", choices=ENGINES, default="hybrid")
    r.add_argument("--out", help="result JSON (default: <workdir>/results/...)")
    r.add_argument("--limit-queries", type=int, default=None, metavar="N")
    r.add_argument(
        "--workdir",
        help="data dir root (default: var/evals/<dataset name>); "
        "e.g. var/bench/scifact to reuse the benchmark's index",
    )
    r.add_argument(
        "--no-index",
        action="store_true",
        help="evaluate what is already indexed, do not materialize",
    )
    r.add_argument("--pointer", default="CURRENT", help="snapshot pointer (CURRENT, PROMOTED)")
    r.add_argument("--fts-combine", choices=["max", "sum"], default="max")
    r.add_argument(
        "--use-gold-types",
        action="store_true",
        help="give serving the gold query types instead of its own classification",
    )
    r.add_argument("--label", help="a name for this run in reports")
    r.set_defaults(func=cmd_eval_run, materialize=materialize)

    c = sub.add_parser("compare", help="paired bootstrap CIs of B - A and the gate verdict")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--gates", help="gate config (YAML or JSON); default: the built-in gates")
    c.add_argument(
        "--use-ci",
        action="store_true",
        help="block quality drops only when the 95%% CI excludes zero",
    )
    c.add_argument("--resamples", type=int, default=10_000)
    c.add_argument("--seed", type=int, default=20240611)
    c.add_argument("--out", help="write the comparison as JSON")
    c.set_defaults(func=cmd_eval_compare)

    p = sub.add_parser("report", help="Markdown + PNG plots from result JSON files")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_eval_report)

    b = sub.add_parser("build-gold", help="weakly-labelled queries from a snapshot's evidence")
    b.add_argument("--out", required=True)
    b.add_argument("--data-dir", help="default: RAG_DATA_DIR / var/data")
    b.add_argument("-n", type=int, default=50)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--strategy", default="title,caption", help="comma-separated: title, caption, tags, ocr"
    )
    b.add_argument("--pointer", default="CURRENT")
    b.set_defaults(func=cmd_eval_build_gold)

    qa = sub.add_parser("qa", help="golden QA: cited answers and refusals (the /v1/ask path)")
    qa.add_argument("--gold", help="golden QA JSONL (default: the packaged demo golden QA)")
    qa.add_argument("--out", help="write the report as JSON")
    qa.add_argument("--data-dir", help="default: RAG_DATA_DIR / var/data")
    qa.add_argument("--pointer", default="CURRENT", help="snapshot pointer (CURRENT, PROMOTED)")
    qa.add_argument("--tenant", help="default: the snapshot's only tenant, else RAG_TENANT")
    qa.add_argument("--mode", choices=["auto", "extractive", "generative"], default="auto")
    qa.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="refusal threshold (default: RAG_ANSWER_MIN_SCORE, else calibrated)",
    )
    qa.set_defaults(func=cmd_eval_qa)

    lab = sub.add_parser("labels", help="graded qrels from judgements and click logs")
    lab.add_argument("--judgements", action="append", help="CSV/JSONL: query_id, doc, grade|thumbs")
    lab.add_argument("--clicks", action="append", help="JSONL click log: query, doc, position")
    lab.add_argument(
        "--from-feedback",
        action="store_true",
        help="judgements of POST /v1/feedback, from the serving database "
        "(RAG_SERVING_DB_URL; default: serving.db in the data dir)",
    )
    lab.add_argument("--tenant", help="--from-feedback: only this tenant's feedback")
    lab.add_argument("--min-clicks", type=int, default=2)
    lab.add_argument("--out", required=True, help="extended JSONL gold set")
    lab.add_argument("--qrels", help="also write a BEIR qrels TSV")
    lab.set_defaults(func=cmd_eval_labels)

    tr = sub.add_parser(
        "train-ranker", help="learn the rerank stage's weights from a gold set (5-fold CV)"
    )
    tr.add_argument("--gold", required=True, help="extended JSONL gold set, or a BEIR folder")
    tr.add_argument("--split", default="train", help="BEIR qrels split (default: train)")
    tr.add_argument("--corpus", help="BEIR: the exported corpus folder (default: beside data)")
    tr.add_argument("--out", required=True, help="the ranker file to write (JSON)")
    tr.add_argument("--version", help="ranker version (default: ranker-<gold>-<snapshot>)")
    tr.add_argument("--data-dir", help="default: RAG_DATA_DIR")
    tr.add_argument("--pointer", default="CURRENT", help="snapshot pointer (CURRENT, PROMOTED)")
    tr.add_argument(
        "--depth", type=int, default=100, help="fused candidates per query to learn from"
    )
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds over queries")
    tr.set_defaults(func=cmd_eval_train_ranker)
    return ev


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m evals.cli run ... --no-index``); ``rag-pipeline eval`` is the
    full one."""
    parser = argparse.ArgumentParser(prog="rag-pipeline")
    add_eval_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["eval", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

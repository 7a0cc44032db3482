"""Latency of answers (the ``POST /v1/ask`` path, ``serving.ask.Asker``) on an indexed snapshot,
per stage: search, reading the evidence, the extractive answer (sentence split, MiniLM embedding
of the sentences, MMR), in process and single-threaded.

    python benchmarks/ask_latency.py [--data-dir var/data] [--rounds 3] [--k 8]

Questions: the packaged demo golden QA (index the demo corpus first: ``rag-pipeline demo`` or
``generate-demo`` + ``materialize``). One warm-up round; the query-embedding cache is off so
every round encodes its questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import eprint, latency_stats, md_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: RAG_DATA_DIR / var/data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=8, help="hits used as evidence (default 8)")
    args = parser.parse_args(argv)

    from rag_pipeline.demo.corpus import load_golden_qa
    from rag_pipeline.settings import Settings
    from serving.ask import Asker
    from serving.cache import no_vector_cache
    from serving.models import AskRequest
    from serving.searcher import Searcher

    settings = Settings.from_env()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    searcher = Searcher.open(
        data_dir / "snapshots", data_dir / "lance", query_cache=no_vector_cache()
    )
    who = searcher.operator_principal(searcher.tenants[0])
    asker = Asker()
    questions = [q.question for q in load_golden_qa()]
    stages: dict[str, list[float]] = {}
    for r in range(args.rounds + 1):
        for q in questions:
            resp = asker.ask(searcher, AskRequest(question=q, k=args.k), who)
            if r == 0:
                continue  # warm-up
            for stage in ("total", "evidence", "extractive"):
                stages.setdefault(stage, []).append(resp.timings_ms.get(stage, 0.0))
            search = (
                resp.timings_ms["total"]
                - resp.timings_ms.get("evidence", 0.0)
                - (resp.timings_ms.get("extractive", 0.0))
            )
            stages.setdefault("search", []).append(search)
    eprint(f"{len(questions)} questions x {args.rounds} rounds, k={args.k}")
    rows = [[s, *(f"{v:.1f}" for v in latency_stats(ms).values())] for s, ms in stages.items()]
    print(md_table(["stage (ms)", *latency_stats(stages["total"]).keys()], rows))
    searcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Offline retrieval evaluation.

metrics (IR metrics, latency percentiles), goldsets (BEIR + extended JSONL gold sets), runner
(index a dataset through the pipeline, evaluate a snapshot per engine), stats (paired
bootstrap), gates (promotion gates), report (Markdown + PNG), dataset_builder (weak labels from
a snapshot), label_builder (qrels from judgements and clicks), fusion_sweep (offline fusion
tuning), cli (`rag-pipeline eval ...`). Nothing here imports Dagster; see docs/evals.md.
"""

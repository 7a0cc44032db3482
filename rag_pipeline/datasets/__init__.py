"""Public IR datasets read from local files (no downloads), for benchmarks and evals.

This package does not import Dagster.
"""

from rag_pipeline.datasets.beir import (
    BeirDataset,
    doc_id_for_uri,
    export_corpus_as_files,
    load_beir,
    markdown_for,
    safe_file_stems,
)

__all__ = [
    "BeirDataset",
    "doc_id_for_uri",
    "export_corpus_as_files",
    "load_beir",
    "markdown_for",
    "safe_file_stems",
]

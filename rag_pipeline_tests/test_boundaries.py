"""Data flows one way: the core imports no Dagster; serving imports no writer."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "rag_pipeline.contracts", "rag_pipeline.settings", "rag_pipeline.storage.catalog.catalog",
    "rag_pipeline.discovery.scanner", "rag_pipeline.planning.planner", "rag_pipeline.analysis.worker",
    "rag_pipeline.storage.persister", "rag_pipeline.snapshot.build", "rag_pipeline.storage.vector_store",
    "rag_pipeline.analysis.analyzers.doc_text", "rag_pipeline.analysis.analyzers.image_metadata",
    "rag_pipeline.retrieval.fusion", "rag_pipeline.demo.corpus",
]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_imports_no_dagster():
    loaded = _loaded_after_import(CORE)
    assert not {m for m in loaded if m == "dagster" or m.startswith("dagster.")}
    assert "rag_pipeline.definitions" not in loaded


def test_dagster_definitions_load_every_stage():
    from rag_pipeline.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"assets", "asset_versions", "analysis_runs", "inference_runs", "evidence",
                    "search_snapshot", "promoted_snapshot", "nightly_eval"}
    for job in ("discover_job", "cpu_job", "gpu_job", "publish_job", "nightly_eval_job"):
        assert defs.resolve_job_def(job) is not None

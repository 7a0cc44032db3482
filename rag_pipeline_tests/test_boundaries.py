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


def test_import_contracts_hold():
    """The layers and forbidden imports declared in pyproject.toml ([tool.importlinter])."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command;"
                          "lint_imports_command()"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles():
    """No module imports itself through others, not even from inside a function."""
    import grimp

    graph = grimp.build_graph("rag_pipeline", "serving", "evals")
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def strongly_connected(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                strongly_connected(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            strongly_connected(module)
    assert not cycles, cycles

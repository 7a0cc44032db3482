"""Data flows one way: the core imports no Dagster; serving imports no writer."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "rag_pipeline.contracts",
    "rag_pipeline.settings",
    "rag_pipeline.storage.catalog.catalog",
    "rag_pipeline.discovery.scanner",
    "rag_pipeline.planning.planner",
    "rag_pipeline.analysis.worker",
    "rag_pipeline.storage.persister",
    "rag_pipeline.snapshot.build",
    "rag_pipeline.storage.vector_store",
    "rag_pipeline.analysis.analyzers.doc_text",
    "rag_pipeline.analysis.analyzers.image_metadata",
    "rag_pipeline.retrieval.fusion",
    "rag_pipeline.demo.corpus",
]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_imports_no_dagster():
    loaded = _loaded_after_import(CORE)
    assert not {m for m in loaded if m == "dagster" or m.startswith("dagster.")}
    assert "rag_pipeline.definitions" not in loaded


def test_dagster_definitions_load_every_stage():
    from rag_pipeline.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "assets",
        "asset_versions",
        "analysis_runs",
        "inference_runs",
        "evidence",
        "search_snapshot",
        "promoted_snapshot",
        "nightly_eval",
    }
    for job in ("discover_job", "cpu_job", "gpu_job", "publish_job", "nightly_eval_job"):
        assert defs.resolve_job_def(job) is not None
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("search_snapshot", "smoke_eval_gates") in checks
    assert {s.name for s in defs.sensors} == {
        "profiles_sensor",
        "source_files_sensor",
        "discover_done_sensor",
        "analysis_done_sensor",
        "ingest_sensor",
    }
    assert {s.name for s in defs.schedules} == {"nightly_eval_schedule"}
    assert set(defs.resources) == {"pipeline"}


def test_every_definition_is_registered_once():
    """The defs loader registers whatever a module holds at its top level: a definition
    imported by name into a second module would be registered twice."""
    from rag_pipeline.definitions import defs

    for kind in ("assets", "asset_checks", "jobs", "sensors", "schedules"):
        objs = list(getattr(defs, kind) or [])
        assert len({id(o) for o in objs}) == len(objs), kind
    assert len(defs.jobs) == len({j.name for j in defs.jobs})


def _defs_modules():
    import importlib
    import pkgutil

    import rag_pipeline.defs

    for info in pkgutil.walk_packages(rag_pipeline.defs.__path__, "rag_pipeline.defs."):
        yield importlib.import_module(info.name)


def test_defs_folders_mirror_asset_groups():
    """defs/<group>/ holds exactly that group's assets, and every asset check sits beside its
    asset; the shared modules at the top of defs/ define nothing."""
    import dagster as dg

    from rag_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    seen: dict[str, set[str]] = {}
    for module in _defs_modules():
        parts = module.__name__.split(".")
        folder = parts[2] if len(parts) > 3 else None
        for obj in vars(module).values():
            if isinstance(obj, dg.AssetChecksDefinition):
                keys = [k.asset_key for k in obj.check_keys]
            elif isinstance(obj, dg.AssetsDefinition):
                keys = list(obj.keys)
            else:
                continue
            assert folder is not None, f"{module.__name__} defines {keys} outside a group folder"
            for key in keys:
                assert graph.get(key).group_name == folder, (module.__name__, key)
            seen.setdefault(folder, set()).update(k.to_user_string() for k in keys)
    assert seen == {
        "catalog": {"assets", "asset_versions"},
        "analysis": {"analysis_runs", "inference_runs", "evidence"},
        "search": {"search_snapshot", "promoted_snapshot"},
        "evals": {"nightly_eval"},
    }


def test_wiring_imports_point_one_way():
    """The defs never import the CLI launcher; evals never import the Dagster wiring."""
    loaded = _loaded_after_import(["rag_pipeline.definitions"])
    assert "rag_pipeline.launcher" not in loaded
    evals_loaded = _loaded_after_import(
        [
            "evals.runner",
            "evals.gates",
            "evals.report",
            "evals.goldsets",
            "evals.stats",
            "evals.cli",
        ]
    )
    assert not {
        m
        for m in evals_loaded
        if m.startswith(("rag_pipeline.defs", "rag_pipeline.definitions", "rag_pipeline.launcher"))
    }


def test_import_contracts_hold():
    """The layers and forbidden imports declared in pyproject.toml ([tool.importlinter])."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command;lint_imports_command()",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
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

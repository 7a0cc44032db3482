"""Evals in Dagster (real runs of the project's definitions on the demo corpus): the blocking
smoke-eval check on search_snapshot promotes a good snapshot, blocks a deliberately worse one (a
tiny random MV model) so it is NOT promoted, and the nightly schedule's job records metrics (one
demo index for all: the test files must stay fast)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from rag_pipeline.settings import Settings, packaged_file
from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline_tests.tiny_models import build_tiny_sentence_model

REPO = Path(__file__).resolve().parents[1]


def _materialize(defs, instance) -> dict:
    from rag_pipeline.launcher import materialize_all

    return materialize_all(defs, instance=instance, log=lambda *_: None)


def _check_evals(instance, name: str = "smoke_eval_gates"):
    key = dg.AssetCheckKey(dg.AssetKey("search_snapshot"), name)
    recs = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    return [
        r.event.asset_check_evaluation for r in recs if r.event and r.event.asset_check_evaluation
    ]


def _pointer(settings: Settings, name: str) -> str | None:
    p = settings.snapshots_dir / name
    return p.read_text().strip() if p.exists() else None


@pytest.mark.slow
@pytest.mark.usefixtures("smoke_gates_without_latency")
def test_blocking_check_promotes_good_blocks_worse_and_nightly_records(
    demo_env, tmp_path, monkeypatch
):
    settings, corpus = demo_env
    monkeypatch.setenv("RAG_SMOKE_GOLD", str(corpus.gold_path))
    tiny = build_tiny_sentence_model(tmp_path / "tiny-b")
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc["profiles"].append(
        {
            "name": "tiny-b",
            "analyzer": "mv_embed",
            "model": {"model_dir": str(tiny)},
            "config": {"text_profile": "text-v2"},
        }
    )
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("RAG_MODELS_FILE", str(models))
    settings = Settings.from_env()
    from rag_pipeline.definitions import defs

    with dg.DagsterInstance.get() as instance:
        # 1. First snapshot: nothing promoted yet -> the check passes, records the baseline,
        #    and promoted_snapshot publishes PROMOTED.
        first = _materialize(defs, instance)
        good = first["snapshot_id"]
        assert _pointer(settings, "CURRENT") == good
        assert _pointer(settings, "PROMOTED") == good
        ev = _check_evals(instance)[0]
        assert ev.passed
        assert "baseline" in ev.metadata["status"].value
        assert ev.metadata["ndcg@10"].value > 0.8
        assert (settings.data_dir / "evals" / f"{good}-smoke.json").is_file()

        # 2. A worse snapshot: serve MV vectors from a tiny random model.
        from rag_pipeline.analysis.profiles import load_profiles
        from rag_pipeline.snapshot.policy import set_policy

        with open_settings_catalog(settings) as cat:
            set_policy(load_profiles(settings), cat, "mv", "tiny-b", "worse on purpose")
        # The blocking check fails, so the publish run fails and skips promoted_snapshot;
        # materialize_all reports that (promoted: False) instead of raising.
        second = _materialize(defs, instance)
        worse = second["snapshot_id"]
        assert second["published"] and not second["promoted"]
        assert worse != good and _pointer(settings, "CURRENT") == worse
        assert _pointer(settings, "PROMOTED") == good, "the worse snapshot must not be promoted"
        ev = _check_evals(instance)[0]
        assert not ev.passed
        assert ev.metadata["verdict"].value == "BLOCK"
        assert "ndcg@10" in ev.metadata["reasons"].value
        assert ev.metadata["ndcg@10"].value < ev.metadata["promoted_ndcg@10"].value - 0.01
        run = instance.get_run_by_id(second["runs"][-1])
        assert run.job_name == "publish_job" and run.status == dg.DagsterRunStatus.FAILURE
        # The check's step failed; promoted_snapshot was planned but never started.
        steps = {s.step_key: s.status.value for s in instance.get_run_step_stats(run.run_id)}
        assert steps == {
            "evidence": "SUCCESS",
            "search_snapshot": "SUCCESS",
            "search_snapshot_smoke_eval_gates": "FAILURE",
        }, steps
        promo_events = {
            e.dagster_event.event_type_value
            for e in instance.all_logs(run.run_id)
            if e.dagster_event and e.step_key == "promoted_snapshot"
        }
        assert promo_events == {"ASSET_MATERIALIZATION_PLANNED"}, promo_events

        # 3. Roll back the policy: an identical-to-promoted candidate passes and is promoted.
        with open_settings_catalog(settings) as cat:
            set_policy(load_profiles(settings), cat, "mv", "minilm-l6-fit", "rollback")
        third = _materialize(defs, instance)
        ev = _check_evals(instance)[0]
        assert ev.passed, {k: v.value for k, v in ev.metadata.items() if k != "report"}
        assert third["promoted"] and _pointer(settings, "PROMOTED") == third["snapshot_id"]

        # 4. Serving (Searcher.open with pointer PROMOTED) reads the promoted snapshot.
        from serving import Searcher

        s = Searcher.open(settings.snapshots_dir, settings.lance_dir, pointer="PROMOTED")
        assert s.manifest.snapshot_id == third["snapshot_id"]
        s.close()

        # 5. One run of the nightly schedule's job records the metrics as floats.
        sched = defs.resolve_schedule_def("nightly_eval_schedule")
        monkeypatch.setenv("RAG_NIGHTLY_ENGINES", "hybrid,bm25")
        # The golden QA half of the nightly eval is test_ask.py's (on the shared demo index).
        monkeypatch.setenv("RAG_NIGHTLY_QA", "off")
        res = defs.resolve_job_def(sched.job_name).execute_in_process(instance=instance)
        assert res.success
        meta = res.asset_materializations_for_node("nightly_eval")[0].metadata
        for key in (
            "ndcg@10",
            "recall@50",
            "recall@100",
            "mrr@10",
            "precision@5",
            "latency_p95_ms",
            "error_rate",
            "cpu_s_per_1k_queries",
            "bm25_ndcg@10",
        ):
            assert isinstance(meta[key], dg.FloatMetadataValue), key
        assert meta["ndcg@10"].value > 0.8 and meta["error_rate"].value == 0.0
        assert meta["snapshot_id"].value == third["snapshot_id"]
        assert "data:image/png;base64," in meta["report"].value
        assert not any(k.startswith("qa_") for k in meta)


def test_nightly_cron_and_smoke_set_from_env(monkeypatch):
    import importlib

    import rag_pipeline.defs.evals.schedules as mod
    from rag_pipeline.defs.evaluation import DEMO_GOLD, nightly_gold_path, smoke_gold_path
    from rag_pipeline.settings import Settings

    monkeypatch.delenv("RAG_SMOKE_GOLD", raising=False)
    assert smoke_gold_path(Settings()) == DEMO_GOLD
    assert nightly_gold_path(Settings(nightly_gold="/gold/full.jsonl")).name == "full.jsonl"
    monkeypatch.setenv("RAG_SMOKE_GOLD", "off")
    assert smoke_gold_path(Settings()) is None
    assert nightly_gold_path(Settings()) is None
    monkeypatch.setenv("RAG_NIGHTLY_CRON", "30 3 * * 1-5")
    importlib.reload(mod)  # module-level schedule reads the env at import
    assert mod.nightly_eval_schedule.cron_schedule == "30 3 * * 1-5"
    monkeypatch.delenv("RAG_NIGHTLY_CRON")
    importlib.reload(mod)

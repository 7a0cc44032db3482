"""The optional cross-encoder of the rerank stage: a tiny random ``BertForSequenceClassification``
built from a config and loaded through the real ``sentence_transformers.CrossEncoder`` path;
its profile (query-time: no partitions), the policy and the manifest, serving (top N, budget,
unavailable, parity) and training with ``ce_score``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from evals.ranker_training import JudgedQuery, collect, fit
from rag_pipeline.retrieval.cross_encoder import (
    CrossEncoderConfig,
    CrossEncoderScorer,
    PairScorer,
    cross_encoder_spec,
    load_scorer,
    pair_text,
)
from rag_pipeline.retrieval.features import FEATURES, PENALTIES, AxisEvidence
from rag_pipeline.retrieval.ranker import RankerModel, packaged_ranker
from rag_pipeline.retrieval.rerank import Candidate, explain, rerank
from rag_pipeline.snapshot.schema import CrossEncoderInfo, read_manifest
from rag_pipeline_tests.test_serving_snapshot import WHO, build_snapshot, write_manifest
from rag_pipeline_tests.tiny_models import build_tiny_cross_encoder
from serving import Searcher

TOP_N = 3
QUERY = "small marsupial on an island"


@pytest.fixture(scope="module")
def ce_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny cross-encoders: the one the snapshot names, and another checkpoint."""
    root = tmp_path_factory.mktemp("ce")
    return build_tiny_cross_encoder(root / "ce-a", seed=0), build_tiny_cross_encoder(
        root / "ce-b", seed=1
    )


def _ranker(**weights: float) -> RankerModel:
    """A ranker over every feature (``ce_score`` included); zero weights but ``weights``."""
    return RankerModel(
        version="ce-test",
        features=list(FEATURES),
        penalties=list(PENALTIES),
        weights=dict.fromkeys(FEATURES, 0.0) | weights,
        penalty_weights=dict.fromkeys(PENALTIES, 0.0),
    )


class Counting:
    """A ``PairScorer`` that records what it was asked to score."""

    def __init__(self, inner: PairScorer, delay_s: float = 0.0):
        self.inner, self.delay_s = inner, delay_s
        self.top_n, self.batch_size = inner.top_n, inner.batch_size
        self.texts: list[str] = []

    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]:
        self.texts += texts
        time.sleep(self.delay_s * len(texts))
        return self.inner.score(query, texts)

    def estimate_s(self, n_pairs: int) -> float:
        return self.delay_s * n_pairs


class Constant:
    """A fake scorer: the length of each text (no model)."""

    def __init__(self, top_n: int = 10, batch_size: int = 2):
        self.top_n, self.batch_size = top_n, batch_size

    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]:
        return [float(len(t)) for t in texts]

    def estimate_s(self, n_pairs: int) -> float:
        return 0.0


# -- the model --------------------------------------------------------------------------------


def test_tiny_cross_encoder_loads_through_the_real_path_deterministic_and_batch_invariant(ce_dirs):
    from sentence_transformers import CrossEncoder

    a, b = ce_dirs
    texts = [
        "Quokka field notes\nA small marsupial found on Rottnest Island.",
        "Budget review\nOperating expenses rose eight percent.",
        "Marsupials\nKangaroos and wallabies carry their young in a pouch. " * 30,  # cut
        "",
        "Bread\nFlour, water, salt and yeast.",
    ]
    one = CrossEncoderScorer.load(a, CrossEncoderConfig(batch_size=1, max_length=64))
    many = CrossEncoderScorer.load(a, CrossEncoderConfig(batch_size=16, max_length=64))
    assert one is not many and isinstance(one._model, CrossEncoder)  # the real class
    assert isinstance(one, PairScorer)  # the stage's protocol
    assert one.device == "cpu" or one.device == "cuda"
    s1, s2 = one.score(QUERY, texts), many.score(QUERY, texts)
    assert len(s1) == len(texts) and all(isinstance(x, float) for x in s1)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-5)  # batch-invariant
    assert many.score(QUERY, texts) == s2  # deterministic
    assert len(set(np.round(s1, 6))) > 1  # the texts score differently
    assert one.estimate_s(10) > 0  # measured at warm-up and per batch
    # Another checkpoint is another model: other weights, other scores.
    other = CrossEncoderScorer.load(b, CrossEncoderConfig(batch_size=16, max_length=64))
    assert other.spec.weights_checksum != many.spec.weights_checksum
    assert not np.allclose(other.score(QUERY, texts), s2)


def test_pair_text_is_title_and_body_or_an_images_caption_and_ocr():
    assert pair_text({"title": "T", "body": "B", "caption": "C"}) == "T\nB"
    assert pair_text({"title": "T", "caption": "C", "ocr": "O"}) == "T\nC O"
    assert pair_text({"body": "B"}) == "B" and pair_text({}) == ""


def test_missing_broken_or_other_weights_are_unavailable_with_a_reason(ce_dirs, tmp_path):
    a, b = ce_dirs
    spec = cross_encoder_spec(a)
    assert spec.backend == "sentence-transformers" and spec.revision == spec.weights_checksum[:12]
    cfg = CrossEncoderConfig(max_length=64)
    scorer, reason = load_scorer(a, cfg, expected=spec)
    assert scorer is not None and reason is None
    scorer, reason = load_scorer(tmp_path / "nowhere", cfg, expected=spec)
    assert scorer is None and reason and "does not exist" in reason
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 1}))
    scorer, reason = load_scorer(broken, cfg)
    assert scorer is None and reason and "no weight files" in reason
    two = tmp_path / "two-labels"
    two.mkdir()
    (two / "config.json").write_text(json.dumps({"id2label": {"0": "no", "1": "yes"}}))
    assert "labels" in str(load_scorer(two, cfg)[1])
    scorer, reason = load_scorer(b, cfg, expected=spec)  # parity: another checkpoint
    assert scorer is None and reason and reason.startswith("model_mismatch")


# -- the stage (pure) -------------------------------------------------------------------------


def _cands(n: int) -> list[Candidate]:
    return [
        Candidate(
            row={"title": f"doc {i}", "body": "x" * (i + 1)},
            axes={"fts": AxisEvidence(i, 1.0 / i)},
            fused_rank=i,
            fused_score=1.0 / (60 + i),
        )
        for i in range(1, n + 1)
    ]


def test_stage_scores_top_n_and_unscored_candidates_count_as_neutral():
    ranker = _ranker(ce_score=1.0).model_copy(update={"mean": {"ce_score": 2.0}})
    scorer = Constant(top_n=4, batch_size=3)
    out = rerank("q", _cands(8), ranker, budget_ms=60_000, cross_encoder=scorer)
    assert out.applied and out.cross_encoder is not None
    assert out.cross_encoder.scored == 4 and out.cross_encoder.applied
    assert not out.cross_encoder.timed_out
    assert [i for i in range(8) if "ce_score" in out.features[i]] == [0, 1, 2, 3]
    assert explain(out, ranker, 7)["ce_score"] == 0.0  # not scored: neutral (the mean)
    assert explain(out, ranker, 3)["ce_score"] > 0  # len("doc 4\nxxxx") = 10 > 2
    assert out.order[:4] == [3, 2, 1, 0]  # the longer text scores higher
    # A ranker that does not weigh ce_score never calls it.
    plain = rerank("q", _cands(8), packaged_ranker(), cross_encoder=scorer, budget_ms=60_000)
    assert plain.cross_encoder is None and all("ce_score" not in f for f in plain.features.values())
    # No cross-encoder for a ranker that weighs it: the stage applies, the summary says why.
    none = rerank("q", _cands(8), ranker, cross_encoder_unavailable="gone", budget_ms=60_000)
    assert none.applied and none.cross_encoder is not None
    assert none.cross_encoder.reason == "gone" and none.cross_encoder.scored == 0


def test_cross_encoder_stops_at_the_budget_and_the_stage_still_applies():
    slow = Counting(Constant(top_n=10, batch_size=2), delay_s=0.03)  # 60 ms a batch
    out = rerank("q", _cands(12), _ranker(ce_score=1.0), budget_ms=200, cross_encoder=slow)
    ce = out.cross_encoder
    assert ce is not None and ce.timed_out and 0 < ce.scored < 10
    assert out.applied and not out.timed_out and len(slow.texts) == ce.scored
    gone = rerank("q", _cands(12), _ranker(ce_score=1.0), budget_ms=0.0, cross_encoder=slow)
    assert gone.timed_out and not gone.applied  # the features did not fit: fused order
    assert gone.cross_encoder is not None and gone.cross_encoder.timed_out
    assert gone.cross_encoder.scored == 0


# -- profile, policy, manifest ----------------------------------------------------------------


def _models_file(tmp_path: Path, model_dir: Path, in_policy: bool = False) -> Path:
    from rag_pipeline.settings import packaged_file

    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc["profiles"].append(
        {
            "name": "ce-tiny",
            "analyzer": "cross_encoder",
            "model": {"backend": "sentence-transformers", "model_dir": str(model_dir)},
            "config": {"top_n": TOP_N, "batch_size": 2, "max_length": 64},
        }
    )
    if in_policy:
        doc["policy"]["cross_encoder"] = "ce-tiny"
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_profile_is_query_time_plans_nothing_and_the_policy_puts_it_in_the_manifest(
    pipeline_env, ce_dirs, tmp_path, monkeypatch, capsys
):
    from rag_pipeline.analysis.profiles import ProfileError, load_profiles
    from rag_pipeline.cli import main
    from rag_pipeline.planning.planner import plan
    from rag_pipeline.settings import Settings
    from rag_pipeline.snapshot.build import build_snapshot as publish
    from rag_pipeline.snapshot.policy import effective_policy, set_policy
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    a, _ = ce_dirs
    monkeypatch.setenv("RAG_MODELS_FILE", str(_models_file(tmp_path, a)))
    settings = Settings.from_env()
    profiles = load_profiles(settings)
    prof = profiles["ce-tiny"]
    assert "ce-tiny" in profiles.query_time and "ce-tiny" not in profiles.names
    assert prof.unavailable is None and prof.axis == "cross_encoder"
    assert (
        prof.tasks["cross_encoder"].model.weights_checksum == cross_encoder_spec(a).weights_checksum
    )
    with open_settings_catalog(settings) as cat:
        report = plan(settings, cat, profiles)
        assert not any(k.startswith("ce-tiny") for k in report.tasks_per_partition)
        assert not (settings.plans_dir / "profile=ce-tiny").exists()
        with pytest.raises(ProfileError, match="serves the 'mv' axis"):
            set_policy(profiles, cat, "cross_encoder", "minilm-l6-fit")
        with pytest.raises(ProfileError, match="cannot be switched off"):
            set_policy(profiles, cat, "mv", "none")
        first = publish(settings, cat).manifest
        assert first.cross_encoder is None and "cross_encoder" not in first.policy

        set_policy(profiles, cat, "cross_encoder", "ce-tiny", "try the cross-encoder")
        on = publish(settings, cat)
        assert on.published and on.manifest.snapshot_id != first.snapshot_id
        ce = on.manifest.cross_encoder
        assert ce is not None and ce.profile == "ce-tiny" and ce.available
        assert ce.model == prof.tasks["cross_encoder"].model and ce.model_dir == str(a)
        assert ce.config["top_n"] == TOP_N and on.manifest.policy["cross_encoder"] == "ce-tiny"
        # Rolled back by switching the slot off: the next snapshot has none.
        set_policy(profiles, cat, "cross_encoder", "none", "rollback")
        assert "cross_encoder" not in effective_policy(profiles, cat)
        # The first snapshot's content again: a snapshot id is its second + fingerprint.
        time.sleep(max(0.0, 1.05 - (time.time() % 1.0)))
        off = publish(settings, cat)
        assert off.published and off.manifest.cross_encoder is None
    assert main(["models", "list"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if "ce-tiny" in ln]
    assert listed and "query-time" in listed[0] and "cross_encoder" in listed[0]


def test_models_file_policy_may_name_a_cross_encoder(pipeline_env, ce_dirs, tmp_path, monkeypatch):
    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.settings import Settings

    monkeypatch.setenv("RAG_MODELS_FILE", str(_models_file(tmp_path, tmp_path / "gone", True)))
    profiles = load_profiles(Settings.from_env())
    assert profiles.policy["cross_encoder"] == "ce-tiny"
    assert "does not exist" in str(profiles["ce-tiny"].unavailable)  # reported, not fatal


# -- serving ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, mv_model_dir) -> tuple[Path, Path]:
    return build_snapshot(tmp_path_factory.mktemp("snap"), mv_model_dir)


def _with_cross_encoder(
    snapshot: tuple[Path, Path], snapshot_id: str, model_dir: Path, spec_dir: Path
) -> None:
    """The test snapshot again, with a ranker weighing ce_score and a cross-encoder whose
    weights are ``spec_dir``'s, read from ``model_dir``."""
    snapshots_dir, _ = snapshot
    m = read_manifest(snapshots_dir, "snap-0001")
    ranker = _ranker(fused_rr=1.0, ce_score=0.5)
    info = CrossEncoderInfo(
        profile="ce-tiny",
        available=True,
        model=cross_encoder_spec(spec_dir),
        model_dir=str(model_dir),
        config=CrossEncoderConfig(top_n=TOP_N, batch_size=2, max_length=64).model_dump(),
    )
    write_manifest(
        snapshots_dir,
        m.model_copy(
            update={
                "snapshot_id": snapshot_id,
                "ranker": ranker.model_dump(mode="json"),
                "cross_encoder": info,
            }
        ),
    )


def test_search_scores_exactly_top_n_and_explains_ce_score(snapshot, ce_dirs):
    a, _ = ce_dirs
    _with_cross_encoder(snapshot, "snap-ce", a, a)
    s = Searcher.open(*snapshot, snapshot_id="snap-ce", rerank_budget_ms=60_000)
    try:
        assert isinstance(s.cross_encoder, CrossEncoderScorer)  # loaded (warm) at open
        assert s.health()["cross_encoder"]["available"] is True
        spy = s.cross_encoder = Counting(s.cross_encoder)
        resp = s.search(QUERY, WHO, k=5)
        assert resp.hits and resp.rerank is not None and resp.rerank.applied
        assert resp.rerank.reranked > TOP_N
        ce = resp.rerank.cross_encoder
        assert ce is not None and ce.applied and ce.scored == TOP_N and not ce.timed_out
        assert len(spy.texts) == TOP_N  # exactly the top N pairs
        whys = [h.explanation.rerank for h in resp.hits]
        assert all(w is not None and "ce_score" in w.contributions for w in whys)
        scored = [w for w in whys if w is not None and "ce_score" in w.features]
        assert scored and all(w.fused_rank <= TOP_N for w in scored)
        assert all(
            sum(w.contributions.values()) == pytest.approx(w.score, abs=1e-4)
            for w in whys
            if w is not None
        )
        # A budget of ~0 ms: the cross-encoder (and the stage) timed out, the search answers.
        s.rerank_budget_ms = 1e-6
        timed = s.search(QUERY, WHO, k=5)
        assert timed.hits and timed.rerank is not None and timed.rerank.timed_out
        assert timed.rerank.cross_encoder is not None and timed.rerank.cross_encoder.timed_out
        assert timed.rerank.cross_encoder.scored == 0
    finally:
        s.close()


def test_missing_dir_or_other_weights_leave_it_unavailable_and_search_answers(
    snapshot, ce_dirs, tmp_path
):
    a, b = ce_dirs
    _with_cross_encoder(snapshot, "snap-ce-missing", tmp_path / "gone", a)
    _with_cross_encoder(snapshot, "snap-ce-other", b, a)  # parity: another checkpoint
    for sid, why in (("snap-ce-missing", "does not exist"), ("snap-ce-other", "model_mismatch")):
        s = Searcher.open(*snapshot, snapshot_id=sid, rerank_budget_ms=60_000)
        try:
            assert s.cross_encoder is None and why in str(s.cross_encoder_unavailable)
            health = s.health()["cross_encoder"]
            assert health["available"] is False and why in health["reason"]
            resp = s.search(QUERY, WHO, k=5)
            assert resp.hits and resp.rerank is not None and resp.rerank.applied
            ce = resp.rerank.cross_encoder
            assert ce is not None and not ce.applied and why in str(ce.reason)
            assert all(
                h.explanation.rerank is not None
                and h.explanation.rerank.contributions["ce_score"] == 0.0
                for h in resp.hits
            )
        finally:
            s.close()
    # RAG_QUERY_CE_MODEL_DIR's copy of the same weights serves the snapshot naming another dir.
    s = Searcher.open(*snapshot, snapshot_id="snap-ce-missing", ce_model_dir=str(a))
    try:
        assert s.cross_encoder is not None
    finally:
        s.close()


def test_packaged_ranker_serves_unchanged_beside_a_cross_encoder(snapshot, ce_dirs):
    a, _ = ce_dirs
    assert "ce_score" not in packaged_ranker().features  # trained before it: still valid
    _with_cross_encoder(snapshot, "snap-ce-packaged", a, a)
    s = Searcher.open(
        *snapshot, snapshot_id="snap-ce-packaged", ranker=packaged_ranker(), rerank_budget_ms=60_000
    )
    try:
        spy = s.cross_encoder = Counting(s.cross_encoder)
        resp = s.search(QUERY, WHO, k=5)
        assert resp.rerank is not None and resp.rerank.applied
        assert resp.rerank.cross_encoder is None and not spy.texts  # not weighed: not run
    finally:
        s.close()


# -- training ---------------------------------------------------------------------------------


def test_training_computes_ce_score_for_the_top_n_and_learns_its_weight(snapshot, ce_dirs):
    a, _ = ce_dirs
    _with_cross_encoder(snapshot, "snap-ce-train", a, a)
    s = Searcher.open(*snapshot, snapshot_id="snap-ce-train")
    try:
        judged = collect(s, [("q1", QUERY, {})], lambda row: [row["unit_id"]], WHO, depth=10)
    finally:
        s.close()
    feats = judged[0].features
    assert len(feats) > TOP_N
    assert [i for i, f in enumerate(feats) if "ce_score" in f] == list(range(TOP_N))

    # Synthetic judged queries: the relevant candidate is the one the cross-encoder likes.
    rng = random.Random(5)
    queries = []
    for q in range(30):
        good = rng.randrange(0, 5)
        rows = []
        for i in range(12):
            f = {n: 0.0 for n in FEATURES if n != "ce_score"} | dict.fromkeys(PENALTIES, 0.0)
            f["fused_rr"] = 1.0 / (i + 1)
            if i < 5:  # the top 5 scored, the rest not
                f["ce_score"] = 3.0 if i == good else rng.uniform(-1.0, 1.0)
            rows.append(f)
        queries.append(
            JudgedQuery(f"q{q}", "x", [[f"d{q}-{i}"] for i in range(12)], rows, {f"d{q}-{good}": 1})
        )
    model = fit(queries, version="with-ce")
    assert "ce_score" in model.features and model.weights["ce_score"] > 0
    scored = [f["ce_score"] for q in queries for f in q.features if "ce_score" in f]
    assert model.mean["ce_score"] == pytest.approx(float(np.mean(scored)))  # unscored: neutral
    for q in queries:
        for f in q.features:
            f.pop("ce_score", None)
    assert "ce_score" not in fit(queries, version="without-ce").features

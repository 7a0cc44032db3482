"""Images end to end: OCR, VV vectors and VLM captions/tags flow through the partitions into the
snapshot, and serving answers text -> image, find-similar and tag queries, with a health gate.

The VV model is a tiny random CLIP built from a config (real loading and encoding code); the VLM
is an OpenAI-compatible endpoint on 127.0.0.1 standing in for a vLLM server.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from PIL import Image

from rag_pipeline.settings import Settings, packaged_file
from rag_pipeline_tests.conftest import isolated_dirs, run_all
from rag_pipeline_tests.fake_vlm_endpoint import SERVED_MODEL, fake_vlm_endpoint
from rag_pipeline_tests.tiny_models import build_tiny_clip_model
from serving.principal import Principal

WHO = Principal(tenant="default")  # the test corpus is one tenant, every unit tenant-wide

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _models_file(path: Path, vv_dir: Path, base_url: str, vv_in_policy: bool = True) -> Path:
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    doc["profiles"] += [
        {
            "name": "vv-tiny",
            "analyzer": "vv_embed",
            "model": {"backend": "transformers", "model_dir": str(vv_dir)},
            "config": {"batch_size": 4},
        },
        {
            "name": "captions-endpoint",
            "analyzer": "caption",
            "model": {"backend": "openai", "model_id": SERVED_MODEL, "revision": "test-1"},
            "config": {"base_url": base_url, "batch_size": 4, "retry_backoff_s": 0.0},
        },
    ]
    doc["policy"] |= {"caption": "captions-endpoint"}
    if vv_in_policy:
        doc["policy"]["vv"] = "vv-tiny"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip_model(tmp_path_factory.mktemp("models") / "tiny-clip", kind="clip")


class ImageIndex(NamedTuple):
    settings: Settings
    endpoint: object  # the fake VLM endpoint; counts the requests it answered
    summary: dict  # what the one materialization of the whole graph returned
    env: dict[str, str]


@pytest.fixture(scope="module")
def image_index(tmp_path_factory, tiny_clip):
    """The demo corpus plus a near-duplicate photo, indexed once for the module with VV and
    captions (the tests below only read it)."""
    from rag_pipeline.demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("image_index")
    env = isolated_dirs(root)
    src = Path(env["RAG_SOURCES"])
    generate_demo_corpus(src, root / "gold.jsonl")
    # A near-duplicate (resized, re-encoded: other bytes, another asset) of one photo: the
    # image -> image query must find it first even with random weights.
    with Image.open(src / "images" / "harbor_market_sign.png") as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(
            src / "images" / "harbor_market_copy.jpg", quality=92
        )
    with fake_vlm_endpoint() as ep:
        env["RAG_MODELS_FILE"] = str(_models_file(root / "models.yaml", tiny_clip, ep.base_url))
        # Module scoped: the environment is set for the build only, then restored.
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            summary = run_all()
            settings = Settings.from_env()
        yield ImageIndex(settings, ep, summary, env)


@pytest.fixture
def image_env(image_index, monkeypatch) -> ImageIndex:
    for key, value in image_index.env.items():
        monkeypatch.setenv(key, value)
    return image_index


def _searcher(settings):
    from serving import Searcher

    return Searcher.from_settings(settings)


def test_images_get_ocr_vv_captions_and_tags_in_the_snapshot(image_env):
    from rag_pipeline.snapshot.schema import read_current_manifest
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings, ep, summary, _ = image_env
    assert summary["published"]
    with open_settings_catalog(settings, read_only=True) as cat:
        by_type = {
            (r["task_type"], r["status"]): r["n"]
            for r in cat.rows("SELECT task_type, status, count(*) AS n FROM results GROUP BY ALL")
        }
        n_images = cat.scalar(
            "SELECT count(DISTINCT asset_id) FROM asset_versions WHERE "
            "is_current AND media_type LIKE 'image/%'"
        )
        ocr_text = " ".join(
            r["text"] for r in cat.rows("SELECT text FROM evidence_text WHERE kind = 'ocr'")
        )
        tags = cat.rows("SELECT tag_type, value FROM content_tags WHERE task_type = 'caption'")
        runs = {
            r["analyzer"]: r
            for r in cat.rows(
                "SELECT analyzer, backend, model_id, revision, weights_checksum, partition_key "
                "FROM analysis_runs WHERE status = 'persisted'"
            )
        }
    assert by_type[("vv_embed", "ok")] == n_images == by_type[("caption", "ok")]
    assert by_type[("ocr", "ok")] == n_images
    assert ("vv_embed", "failed") not in by_type and ("caption", "failed") not in by_type
    # OCR reads the demo posters' rendered text.
    for words in ("HARBOR MARKET", "TRAIL CLOSED", "BIKE REPAIR"):
        assert words in ocr_text
    assert {t["tag_type"] for t in tags} == {"color", "style"}
    assert runs["caption"]["backend"] == "openai" and runs["caption"]["model_id"] == SERVED_MODEL
    assert runs["vv_embed"]["backend"] == "transformers"
    assert runs["vv_embed"]["partition_key"].startswith("vv-tiny|")
    assert ep.requests == 2 * n_images  # classify, then caption, once per image

    manifest = read_current_manifest(settings.snapshots_dir)
    assert manifest.axes["vv"].available and manifest.axes["vv"].dim == 24
    assert manifest.policy["vv"] == "vv-tiny"
    assert manifest.stats["n_units_with_vv"] == n_images
    searcher = _searcher(settings)
    images = searcher.table.search().where("kind = 'image'").limit(None).to_arrow().to_pylist()
    assert len(images) == n_images
    for row in images:
        assert row["has_vv"] and row["thumbnail"]
        assert (settings.data_dir / row["thumbnail"]).is_file()
        assert "A picture in mostly" in row["caption"]
        assert any(t in row["content_tags"] for t in ("red", "green", "blue", "grey"))
        runs = json.loads(row["runs"])
        assert {"image_meta", "ocr", "vv_embed", "caption"} <= set(runs)
    # Unchanged input: nothing planned, nothing republished.
    again = run_all()
    assert again["partitions"] == [] and not again["published"]
    assert ep.requests == 2 * n_images


def test_text_to_image_similar_and_tag_queries(image_env):
    from serving import SearchFilters, SearchRequest, SimilarRequest

    settings = image_env.settings
    searcher = _searcher(settings)
    assert searcher.health()["axes"]["vv"]["available"]

    # Text -> image through the text tower: only images carry VV vectors.
    resp = searcher.search(SearchRequest(query="a lighthouse at dusk", axes=["vv"], k=5), WHO)
    assert resp.hits and all(h.kind == "image" for h in resp.hits)
    assert all(h.axes["vv"].rank for h in resp.hits)
    assert resp.axes_used == ["vv"]

    # Image -> image: the resized copy is the original's nearest neighbour.
    original = next(
        h
        for h in searcher.search(
            SearchRequest(
                query="harbor market signboard", k=20, filters=SearchFilters(kind="image")
            ),
            WHO,
        ).hits
        if h.path.endswith("harbor_market_sign.png")
    )
    sim = searcher.similar(SimilarRequest(asset_id=original.asset_id, k=3), WHO)
    assert sim.hits[0].path.endswith("harbor_market_copy.jpg")
    assert original.asset_id not in {h.asset_id for h in sim.hits}
    with pytest.raises(KeyError, match="no unit"):
        searcher.similar(SimilarRequest(asset_id="0" * 64), WHO)

    # Tags: a colour named in the query is matched against content_tags first.
    rows = searcher.table.search().where("kind = 'image'").limit(None).to_arrow().to_pylist()
    colours = {
        r["asset_id"]: next(t for t in r["content_tags"] if t in ("red", "green", "blue", "grey"))
        for r in rows
    }
    colour, members = max(
        ((c, [a for a, v in colours.items() if v == c]) for c in sorted(set(colours.values()))),
        key=lambda cm: len(cm[1]),
    )
    query = f"{colour} pictures"
    boosted = searcher.search(SearchRequest(query=query, k=50), WHO)
    assert "tags" in boosted.axes_used
    by_tags = [h for h in boosted.hits if "tags" in h.axes]
    assert {h.asset_id for h in by_tags} == set(members)
    assert all(h.explanation.matched_tags == [colour] for h in by_tags)
    # Naming the axes turns the boost off: the tagged images rank higher with it than without.
    # Compared in the fused order: the boost is fusion's; the rerank stage after it reorders
    # both lists by the same features.
    plain = searcher.search(
        SearchRequest(query=query, k=50, axes=["fts", "mv", "vv"], rerank=False), WHO
    )
    assert "tags" not in plain.axes_used
    boosted = searcher.search(SearchRequest(query=query, k=50, rerank=False), WHO)

    def mean_rank(resp) -> float:
        pos = {h.asset_id: i for i, h in enumerate(resp.hits)}
        return sum(pos.get(a, len(resp.hits)) for a in members) / len(members)

    best = (len(members) - 1) / 2
    assert mean_rank(boosted) < mean_rank(plain) or mean_rank(plain) == best
    only = searcher.search(
        SearchRequest(query="picture", k=50, filters=SearchFilters(tags=[colour])), WHO
    )
    assert {h.asset_id for h in only.hits} == set(members)

    # The same over HTTP, plus the stored thumbnails.
    from rag_pipeline_tests.http_support import api_client, auth, make_key

    key, other = make_key(settings, "default"), make_key(settings, "other")
    with api_client(settings) as client:
        health = client.get("/health", headers=auth(key)).json()
        assert health["axes"]["vv"]["available"]
        body = client.get(f"/v1/similar?asset_id={original.asset_id}&k=1", headers=auth(key)).json()
        assert body["hits"][0]["path"].endswith("harbor_market_copy.jpg")
        body = client.get(f"/v1/search?q=picture&k=50&tags={colour}", headers=auth(key)).json()
        assert {h["asset_id"] for h in body["hits"]} == set(members)
        thumb = client.get(f"/v1/thumbnails/{original.asset_id}", headers=auth(key))
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
        assert thumb.headers["Cache-Control"].startswith("private")
        with Image.open(io.BytesIO(thumb.content)) as im:
            assert max(im.size) <= settings.thumbnail_side
        for bad in (f"/v1/thumbnails/{'0' * 64}", f"/v1/similar?asset_id={'0' * 64}"):
            resp = client.get(bad, headers=auth(key))
            assert resp.status_code == 404 and resp.json()["code"] == "not_found"
        # another tenant's key is not served this tenant's asset
        resp = client.get(f"/v1/thumbnails/{original.asset_id}", headers=auth(other))
        assert resp.status_code == 404


def test_vv_health_gate_and_model_parity(image_env, tmp_path, monkeypatch, tiny_clip):
    from serving import AxisUnavailable, ModelMismatch, Searcher, SearchRequest

    settings = image_env.settings
    # The query-time image model must be the snapshot's: another seed is other weights.
    other = build_tiny_clip_model(tmp_path / "other-clip", kind="clip", seed=1)
    with pytest.raises(ModelMismatch, match="vv"):
        Searcher.from_settings(settings, vv_model_dir=str(other))

    # The model directory disappears: VV is reported unavailable everywhere, text search goes on,
    # and a request that demands VV fails clearly instead of answering text-only.
    moved = tmp_path / "moved-clip"
    shutil.copytree(tiny_clip, moved)
    monkeypatch.setenv("RAG_QUERY_VV_MODEL_DIR", str(tmp_path / "nowhere"))
    searcher = Searcher.from_settings(type(settings)())  # the settings read the variable
    health = searcher.health()
    assert health["axes"]["vv"]["available"] is False
    assert "nowhere" in health["axes"]["vv"]["reason"]
    resp = searcher.search(SearchRequest(query="lighthouse", k=3), WHO)
    assert resp.hits and "vv" not in resp.axes_used
    assert "vv" in resp.axes_unavailable
    with pytest.raises(AxisUnavailable, match="vv"):
        searcher.search(SearchRequest(query="lighthouse", axes=["vv"]), WHO)
    with pytest.raises(AxisUnavailable, match="vv"):
        searcher.search(
            SearchRequest(query="lighthouse", query_type="visual", axes=["vv", "fts"]), WHO
        )


def test_missing_vv_model_plans_nothing_and_reports_the_axis(demo_env, tmp_path, monkeypatch):
    from rag_pipeline.snapshot.schema import read_current_manifest

    settings, _ = demo_env
    with fake_vlm_endpoint() as ep:
        models = _models_file(tmp_path / "models.yaml", tmp_path / "no-such-model", ep.base_url)
        monkeypatch.setenv("RAG_MODELS_FILE", str(models))
        summary = run_all()
    assert summary["published"]
    assert not any(pk.startswith("vv-tiny|") for pk in summary["partitions"])
    manifest = read_current_manifest(settings.snapshots_dir)
    assert manifest.axes["vv"].available is False
    assert "no-such-model" in manifest.axes["vv"].reason
    assert manifest.axes["mv"].available and manifest.n_images > 0

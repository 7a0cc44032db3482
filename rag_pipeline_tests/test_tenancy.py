"""Tenants and ACL groups from the pipeline itself: a sources file of three tenants with
overlapping groups (the same bytes in two tenants, a per-folder override, one file copied under
two ACLs) materialized through Dagster into one snapshot, then searched as many principals.

The isolation property: no response (search with any axes, similar, thumbnail, unit) ever
contains a unit outside the principal's tenant and groups.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lancedb.index import FTS, BTree, LabelList
from PIL import Image

from rag_pipeline.discovery.sources import (
    SourcesFileError,
    load_sources,
    read_sources_file,
)
from rag_pipeline.settings import Settings, packaged_file
from serving.principal import Principal

WORDS = [
    "glacier",
    "lantern",
    "harbor",
    "quokka",
    "turbine",
    "budget",
    "orchard",
    "falcon",
    "mosaic",
    "copper",
    "velvet",
    "meadow",
    "compass",
    "saffron",
    "granite",
    "beacon",
    "willow",
    "thunder",
    "ember",
    "canyon",
    "pepper",
    "nebula",
    "sourdough",
    "ledger",
]
SHARED_TEXT = (
    "# Shared travel policy\n\nEvery traveller books the glacier lantern express "
    "and files the copper ledger receipt within ten days.\n"
)
TENANTS = ("acme", "globex", "initech")
GROUPS = ("all", "staff", "hr", "exec", "eng", "eng-leads", "nobody")


def _doc(rng: random.Random, title: str) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(40))
    return f"# {title}\n\n{body}.\n"


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, format="PNG")


def write_corpus(root: Path) -> dict:
    """Three tenants' folders; returns the sources file's content."""
    rng = random.Random(7)
    files = {
        "acme/handbook": [
            "intro.md",
            "travel/policy.md",
            "hr/salaries.md",
            "hr/exec/board.md",
            "hr/reviews.txt",
        ],
        "acme/public": ["news.md", "faq.txt"],
        "globex/docs": ["design.md", "secret/roadmap.md", "secret/budget.md", "eng/notes.md"],
        "initech/files": ["tps.md", "memo.txt", "reports/q3.md"],
    }
    for folder, names in files.items():
        for name in names:
            p = root / folder / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(_doc(rng, f"{folder.split('/')[0]} {Path(name).stem}"))
    # The same bytes in two tenants, and twice in one tenant under two ACLs.
    for rel in (
        "acme/handbook/shared.md",
        "globex/docs/secret/shared.md",
        "acme/public/shared-copy.md",
    ):
        (root / rel).write_text(SHARED_TEXT)
    _png(root / "acme/handbook/hr/badge.png", (200, 30, 30))
    _png(root / "globex/docs/logo.png", (200, 30, 30))  # same bytes as acme's badge
    _png(root / "initech/files/cover.png", (20, 30, 220))
    return {
        "sources": [
            {
                "name": "acme-handbook",
                "path": str(root / "acme/handbook"),
                "tenant": "acme",
                "groups": ["staff"],
                "overrides": [
                    {"folder": "hr", "groups": ["hr"]},
                    {"folder": "hr/exec", "groups": ["exec"]},
                ],
            },
            {"name": "acme-public", "path": str(root / "acme/public"), "tenant": "acme"},
            {
                "name": "globex-docs",
                "path": str(root / "globex/docs"),
                "tenant": "globex",
                "groups": ["staff", "eng"],
                "overrides": [{"folder": "secret", "groups": ["eng-leads"]}],
            },
            {
                "name": "initech",
                "path": str(root / "initech/files"),
                "tenant": "initech",
                "groups": ["all", "staff"],
            },
        ]
    }


# --- the sources file -----------------------------------------------------------------------


def test_sources_file_validation(tmp_path):
    (tmp_path / "a").mkdir()
    good = {
        "sources": [
            {
                "name": "a",
                "path": str(tmp_path / "a"),
                "tenant": "t1",
                "overrides": [{"folder": "x/y", "groups": ["g"]}, {"folder": "x", "groups": ["h"]}],
            }
        ]
    }
    f = tmp_path / "sources.yaml"
    f.write_text(yaml.safe_dump(good))
    src = read_sources_file(f).sources[0]
    assert src.groups == ["all"]
    assert src.groups_for("x/y/z/file.md") == ["g"]  # the deepest override wins
    assert src.groups_for("x/file.md") == ["h"]
    assert src.groups_for("xy/file.md") == ["all"]  # path segments, not string prefixes
    assert src.groups_for("file.md") == ["all"]

    def bad(doc: dict, match: str) -> None:
        f.write_text(yaml.safe_dump(doc))
        with pytest.raises(SourcesFileError, match=match):
            read_sources_file(f)

    one = good["sources"][0]
    bad({"sources": [one | {"colour": "red"}]}, "colour")
    bad({"sources": [one, one | {"path": str(tmp_path / "b")}]}, "unique")
    bad({"sources": [one, one | {"name": "b", "path": str(tmp_path / "a" / "sub")}]}, "overlap")
    bad({"sources": [one | {"tenant": "no tenant!"}]}, "tenant")
    bad({"sources": [one | {"groups": ["a,b"]}]}, "group")
    bad({"sources": [one | {"overrides": [{"folder": "../up", "groups": ["g"]}]}]}, "folder")
    bad({"sources": []}, "sources")
    f.write_text("sources: [")
    with pytest.raises(SourcesFileError, match="YAML"):
        read_sources_file(f)

    # RAG_SOURCES (+ RAG_TENANT) is the shorthand: one tenant, groups [all], named by folder.
    short = load_sources(Settings(sources=[tmp_path / "a"], tenant_id="solo", sources_file=None))
    assert [(s.name, s.tenant, s.groups) for s in short.sources] == [("a", "solo", ["all"])]


# --- the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenancy_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenancy")
    sources = write_corpus(root / "corpus")
    sources_file = root / "sources.yaml"
    sources_file.write_text(yaml.safe_dump(sources))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(packaged_file("dagster.yaml").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_DATA_DIR", str(root / "data"))
        mp.setenv("RAG_SOURCES_FILE", str(sources_file))
        mp.setenv("DAGSTER_HOME", str(home))
        from rag_pipeline_tests.conftest import run_all

        t0 = time.perf_counter()
        run_all()
        print(f"\nmaterialized 3 tenants in {time.perf_counter() - t0:.1f}s")
        yield Settings.from_env(), sources_file, root / "corpus"


@pytest.fixture(scope="module")
def tenancy_searcher(tenancy_env):
    from serving import Searcher

    settings, _, _ = tenancy_env
    s = Searcher.from_settings(settings)
    yield s
    s.close()


@pytest.mark.slow
def test_three_tenants_one_snapshot(tenancy_env, tenancy_searcher):
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog

    settings, _, corpus = tenancy_env
    shared = hashlib.sha256(SHARED_TEXT.encode()).hexdigest()
    with open_settings_catalog(settings) as cat:
        assets = {
            r["tenant_id"]: r["n"]
            for r in cat.rows("SELECT tenant_id, count(*) AS n FROM assets GROUP BY ALL")
        }
        # acme: 5 + 2 + shared (once, at two paths) + badge; globex: 4 + shared + logo
        assert assets == {"acme": 9, "globex": 6, "initech": 4}
        # The same bytes in two tenants: two assets, two text results, two runs' evidence.
        assert {
            r["tenant_id"]
            for r in cat.rows("SELECT tenant_id FROM assets WHERE asset_id = ?", [shared])
        } == {"acme", "globex"}
        text = cat.rows(
            "SELECT tenant_id, dedupe_key FROM results WHERE asset_id = ? AND "
            "task_type = 'doc_text' AND status = 'ok'",
            [shared],
        )
        assert sorted(r["tenant_id"] for r in text) == ["acme", "globex"]
        assert len({r["dedupe_key"] for r in text}) == 2
        ev = cat.rows("SELECT DISTINCT tenant_id FROM evidence_text WHERE asset_id = ?", [shared])
        assert {r["tenant_id"] for r in ev} == {"acme", "globex"}
        groups = {
            r["rel_path"]: list(r["acl_groups"])
            for r in cat.rows(
                "SELECT rel_path, acl_groups FROM asset_versions WHERE is_current AND "
                "source_name = 'acme-handbook'"
            )
        }
        assert groups["intro.md"] == ["staff"] and groups["hr/salaries.md"] == ["hr"]
        assert groups["hr/exec/board.md"] == ["exec"]
        per_tenant = {r["tenant_id"]: r for r in cat.tenant_counts()}
        assert set(per_tenant) == set(TENANTS)

    s = tenancy_searcher
    assert s.manifest.tenants == list(TENANTS)
    tbl = s.dataset.to_table(
        columns=["tenant_id", "acl_groups", "source", "path", "unit_id", "asset_id"]
    ).to_pylist()
    shared_rows = [r for r in tbl if r["asset_id"] == shared]
    # acme's copy under staff, acme's public copy, globex's secret copy: three units
    assert sorted(
        (r["tenant_id"], tuple(r["acl_groups"]), r["source"], r["path"]) for r in shared_rows
    ) == [
        ("acme", ("all",), "acme-public", "shared-copy.md"),
        ("acme", ("staff",), "acme-handbook", "shared.md"),
        ("globex", ("eng-leads",), "globex-docs", "secret/shared.md"),
    ]
    assert len({(r["tenant_id"], r["unit_id"]) for r in tbl}) == len(tbl)
    assert not any(str(corpus) in (r["source"] + r["path"]) for r in tbl)
    indices = {i.name: i.index_type for i in s.dataset.describe_indices()}
    assert indices.get("tenant_id_idx") == "BTree"
    assert indices.get("acl_groups_idx") == "LabelList"

    # The operator CLI names its tenant; a reader of acme's staff group sees staff units only.
    staff = Principal(tenant="acme", groups={"staff"})
    hits = s.search("copper ledger receipt", staff, k=10).hits
    assert hits and all(h.source == "acme-handbook" and not h.path.startswith("hr/") for h in hits)
    assert all(str(corpus) not in h.model_dump_json() for h in hits)
    assert s.search("copper ledger receipt", Principal(tenant="acme", groups=[]), k=10).hits == []


# --- the isolation property -----------------------------------------------------------------


def _oracle(searcher) -> dict:
    rows = searcher.dataset.to_table(
        columns=["tenant_id", "acl_groups", "unit_id", "version_id", "asset_id", "thumbnail"]
    ).to_pylist()
    return {
        "by_version": {(r["version_id"], r["unit_id"]): r for r in rows},
        "asset_ids": sorted({r["asset_id"] for r in rows}) + ["0" * 64],
        "unit_ids": sorted({r["unit_id"] for r in rows}) + ["nope", "' OR '1'='1"],
        "rows": rows,
    }


def _readable(row: dict, p: Principal) -> bool:
    return row["tenant_id"] == p.tenant and bool(set(row["acl_groups"] or ()) & p.groups)


principals = st.builds(
    lambda t, g: Principal(tenant=t, groups=frozenset(g)),
    st.sampled_from([*TENANTS, "umbrella", "Acme"]),
    st.sets(st.sampled_from(GROUPS), max_size=4),
)
queries = st.one_of(
    st.lists(
        st.sampled_from(WORDS + ["shared", "policy", "travel", "acme", "hr"]),
        min_size=1,
        max_size=4,
    ).map(" ".join),
    st.text(min_size=1, max_size=30).filter(lambda q: q.strip()),
    st.text(alphabet="äöüßñ漢字🙂 '%_\\\"", min_size=1, max_size=12).filter(lambda q: q.strip()),
)
filters = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "kind": st.sampled_from(["document", "image"]),
            "folder_prefix": st.sampled_from(["hr", "hr/exec", "secret", "eng", "reports", ""]),
            "source": st.sampled_from(["acme-handbook", "acme-public", "globex-docs", "initech"]),
        },
    ),
)
routes = st.sampled_from(
    ["search", "search-fts", "search-mv", "search-fts-mv", "similar", "thumbnail", "unit"]
)


@pytest.mark.slow
def test_no_response_leaks_outside_the_principal(tenancy_searcher):
    from serving import AxisUnavailable, SearchRequest, SimilarRequest

    s = tenancy_searcher
    oracle = _oracle(s)
    counts = {"cases": 0, "hits": 0, "leaks": 0}
    axes_of = {
        "search": None,
        "search-fts": ["fts"],
        "search-mv": ["mv"],
        "search-fts-mv": ["fts", "mv"],
    }

    def check_hit(hit, p: Principal) -> None:
        row = oracle["by_version"].get((hit.version_id, hit.unit_id))
        counts["hits"] += 1
        if row is None or not _readable(row, p):
            counts["leaks"] += 1
            raise AssertionError(f"leak: {p} got {hit.unit_id} ({row})")

    @settings(
        max_examples=10_000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )
    @given(p=principals, q=queries, f=filters, route=routes, pick=st.integers(0, 10_000))
    def case(p, q, f, route, pick):
        counts["cases"] += 1
        if route.startswith("search"):
            req = SearchRequest(query=q, k=5, filters=f, axes=axes_of[route])
            for hit in s.search(req, p).hits:
                check_hit(hit, p)
        elif route == "similar":
            aid = oracle["asset_ids"][pick % len(oracle["asset_ids"])]
            visible = any(r["asset_id"] == aid and _readable(r, p) for r in oracle["rows"])
            try:
                resp = s.similar(SimilarRequest(asset_id=aid, k=5, axis="mv", filters=f), p)
            except KeyError:  # not the principal's (or not under these filters)
                return
            except AxisUnavailable:  # the principal's image without a text vector
                assert visible, f"similar looked at an asset {p} may not see"
                return
            assert visible, f"similar answered for an asset {p} may not see"
            for hit in resp.hits:
                check_hit(hit, p)
        elif route == "thumbnail":
            aid = oracle["asset_ids"][pick % len(oracle["asset_ids"])]
            if s.thumbnail_file(aid, p) is not None:
                ok = any(
                    r["asset_id"] == aid and r["thumbnail"] and _readable(r, p)
                    for r in oracle["rows"]
                )
                if not ok:
                    counts["leaks"] += 1
                assert ok, f"thumbnail of {aid} served to {p}"
        else:
            uid = oracle["unit_ids"][pick % len(oracle["unit_ids"])]
            hit = s.unit(uid, p)
            if hit is not None:
                check_hit(hit, p)

    # The property is about filtering, not encoding: a query's MV vector is computed once.
    encode = s.encoder.encode_query
    s.encoder.encode_query = functools.lru_cache(maxsize=None)(encode)
    t0 = time.perf_counter()
    try:
        case()
    finally:
        s.encoder.encode_query = encode
    wall = time.perf_counter() - t0
    report = (
        f"isolation: {counts['cases']} cases, {counts['hits']} hits checked, "
        f"{counts['leaks']} leaks, {wall:.1f}s ({1000 * wall / counts['cases']:.2f} ms/case)"
    )
    print("\n" + report)
    if os.environ.get("TENANCY_REPORT_FILE"):
        Path(os.environ["TENANCY_REPORT_FILE"]).write_text(report + "\n")
    assert counts["cases"] >= 10_000 and counts["leaks"] == 0
    assert counts["hits"] > 1000  # the property is not vacuous


# --- ACL changes without re-analysis --------------------------------------------------------


@pytest.mark.slow
def test_acl_change_needs_no_model_run(tenancy_env, tenancy_searcher):
    """Runs last: it edits the sources file of the module's pipeline."""
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog
    from rag_pipeline_tests.conftest import run_all
    from serving import Searcher

    settings, sources_file, _ = tenancy_env
    before_id = tenancy_searcher.manifest.snapshot_id
    with open_settings_catalog(settings) as cat:
        runs_before = cat.scalar("SELECT count(*) FROM analysis_runs")
    doc = yaml.safe_load(sources_file.read_text())
    doc["sources"][0]["overrides"][0]["groups"] = ["hr", "payroll"]  # acme-handbook/hr
    sources_file.write_text(yaml.safe_dump(doc))
    run_all()
    with open_settings_catalog(settings) as cat:
        assert cat.scalar("SELECT count(*) FROM analysis_runs") == runs_before
    s = Searcher.from_settings(settings)
    try:
        assert s.manifest.snapshot_id != before_id
        rows = s.dataset.to_table(
            columns=["path", "acl_groups"], filter="source = 'acme-handbook'"
        ).to_pylist()
        groups = {r["path"]: r["acl_groups"] for r in rows}
        assert groups["hr/salaries.md"] == ["hr", "payroll"]
        assert groups["hr/exec/board.md"] == ["exec"]  # the deeper override still wins
        assert groups["intro.md"] == ["staff"]
        payroll = Principal(tenant="acme", groups={"payroll"})
        hit = s.unit(
            next(
                r["unit_id"]
                for r in s.dataset.to_table(
                    columns=["unit_id", "path"], filter="path = 'hr/salaries.md'"
                ).to_pylist()
            ),
            payroll,
        )
        assert hit is not None and hit.path == "hr/salaries.md"
    finally:
        s.close()


# --- prefilter, not post-filter -------------------------------------------------------------


def test_filters_apply_inside_the_index_query(tmp_path):
    """A principal's tenant holds 4 units among 400 that match better: with k = 3 and 3
    candidates per axis, every axis still returns 3 of its units (a post-filter would find
    none in the top 3)."""
    import lancedb
    import numpy as np
    from lance import query as lance_query

    from rag_pipeline.snapshot.schema import AxisInfo, SnapshotManifest, snapshot_arrow_schema
    from serving import Searcher
    from serving.axes import fts_candidates, vector_candidates

    dim = 8
    rng = np.random.default_rng(0)
    q = np.ones(dim, dtype=np.float32) / np.sqrt(dim)
    rows = []
    for i in range(404):
        mine = i >= 400
        vec = (
            rng.normal(size=dim).astype(np.float32)
            if mine
            else q + 0.01 * rng.normal(size=dim).astype(np.float32)
        )
        rows.append(
            {
                "unit_id": f"u{i}",
                "tenant_id": "small" if mine else "big",
                "acl_groups": ["staff"] if mine else (["hr"] if i % 2 else ["all"]),
                "asset_id": f"{i:064x}",
                "version_id": f"v{i}",
                "uri": f"/x/{i}.md",
                "uris": [f"/x/{i}.md"],
                "source": "s",
                "path": f"{i}.md",
                "locations": [],
                "folder": "",
                "kind": "document",
                "media_type": "text/markdown",
                "chunk_index": 0,
                "locator": "{}",
                "title": "",
                "caption": "",
                "tags": "",
                "ocr": "",
                "metadata": "",
                "body": "quokka note" if mine else "quokka quokka quokka quokka",
                "mtime": None,
                "taken_at": None,
                "size": 1,
                "has_mv": True,
                "vector_mv": (vec / np.linalg.norm(vec)).tolist(),
                "content_tags": ["quokka"],
                "thumbnail": "",
                "evidence": "[]",
                "runs": "{}",
            }
        )
    db = lancedb.connect(str(tmp_path / "lance"))
    tbl = db.create_table("snap", pa.Table.from_pylist(rows, schema=snapshot_arrow_schema(dim)))
    tbl.create_index("body", config=FTS(with_position=False))
    tbl.create_index("tenant_id", config=BTree())
    tbl.create_index("acl_groups", config=LabelList())
    manifest = SnapshotManifest(
        snapshot_id="s",
        table_name="snap",
        created_at="2024-01-01T00:00:00Z",
        tenants=["big", "small"],
        n_units=len(rows),
        n_documents=len(rows),
        n_images=0,
        axes={
            "fts": AxisInfo(available=True),
            "mv": AxisInfo(available=False),
            "vv": AxisInfo(available=False),
        },
        field_weights={"body": 1.0},
    )
    s = Searcher(manifest, tbl, None)
    small = Principal(tenant="small", groups={"staff"})
    where = s.where(small)
    # every unit of "small" is staff's: the group clause, which every row would pass, is left out
    assert where == "(tenant_id = 'small')"
    ds = s.dataset
    bm25 = fts_candidates(ds, lance_query.MatchQuery("quokka", "body"), where, 3, text="quokka")
    near = vector_candidates(ds, "vector_mv", None, q, where, 3)
    for found in (bm25, near):
        assert len(found.row_ids) == 3
    # post-filtering the unfiltered top 3 would have kept nothing
    assert not set(
        fts_candidates(ds, lance_query.MatchQuery("quokka", "body"), None, 3, text="quokka").row_ids
    ) & set(bm25.row_ids)
    resp = s.search("quokka", small, k=3, candidates=3, axes=["fts"])
    assert [h.unit_id for h in resp.hits] and len(resp.hits) == 3
    assert all(int(h.unit_id[1:]) >= 400 for h in resp.hits)
    tags, _ = s._tags.search(ds, ["quokka"], where, 3)
    assert len(tags) == 3
    # groups prefilter too: big tenant's hr readers get 3 hr units out of 200
    hr = Principal(tenant="big", groups={"hr"})
    assert s.where(hr) == "(tenant_id = 'big') AND (array_has_any(acl_groups, ['hr']))"
    hits = s.search("quokka", hr, k=3, candidates=3, axes=["fts"]).hits
    assert len(hits) == 3 and all(int(h.unit_id[1:]) % 2 for h in hits)
    # the scalar indexes answer the prefilter
    plan = ds.scanner(filter=s.where(hr), columns=["unit_id"]).explain_plan()
    assert "tenant_id_idx" in plan and "acl_groups_idx" in plan
    s.close()


def test_principal_has_no_default_that_sees_everything():
    with pytest.raises(ValueError):
        Principal()  # type: ignore[call-arg]  # no default tenant
    # a key without explicit groups reads its tenant's tenant-wide units only
    assert Principal(tenant="acme").groups == frozenset({"all"})
    assert Principal(tenant="a", groups="x, y").groups == frozenset({"x", "y"})

"""Bad input is dead-lettered with its error class; everything else is indexed; reruns add
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pipeline.storage.catalog.catalog import open_settings_catalog
from rag_pipeline_tests.bad_inputs import (
    FIFO_ERROR,
    UNREADABLE_ERROR,
    write_bad_inputs,
    write_fifo,
    write_unreadable,
)
from rag_pipeline_tests.conftest import run_all
from serving.principal import Principal

WHO = Principal(tenant="default")  # the test corpus is one tenant, every unit tenant-wide

pytestmark = pytest.mark.slow

GOOD = {
    "good/otters.md": "# River otters\n\nRiver otters juggle pebbles and hunt crayfish at dusk.\n",
    "good/kilns.txt": "Anagama kilns fire stoneware for days with wood ash glazes.\n",
}


def _write_good(root: Path) -> None:
    for rel, text in GOOD.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _letters(settings) -> dict[str, str]:
    with open_settings_catalog(settings) as cat:
        return {Path(r["uri"]).name: r["error_class"] for r in cat.dead_letters(settings.tenant_id)}


def test_every_bad_input_is_dead_lettered_and_the_rest_indexed(pipeline_env):
    settings = pipeline_env
    src = settings.sources[0]
    expected = write_bad_inputs(src)
    fifo = write_fifo(src)
    expected[fifo.name] = FIFO_ERROR
    _write_good(src)

    summary = run_all()  # completes despite the bad files
    assert summary["published"]

    letters = _letters(settings)
    for name, error_class in expected.items():
        assert letters.get(Path(name).name) == error_class, (name, letters)
    assert len(letters) == len(expected), letters

    from serving import Searcher

    searcher = Searcher.from_settings(settings)
    for query, name in (("otters juggle pebbles", "otters.md"), ("anagama wood kiln", "kilns.txt")):
        hits = searcher.search(query, WHO, k=3).hits
        assert hits and Path(hits[0].path).name == name
    indexed = set(searcher.table.to_arrow().column("uri").to_pylist())
    assert {Path(u).name for u in indexed} == {"otters.md", "kilns.txt"}

    with open_settings_catalog(settings) as cat:
        rows_before = cat.counts(settings.tenant_id)
        messages = {Path(r["uri"]).name: r["message"] for r in cat.dead_letters()}
    assert "100000" in messages["bomb.png"]  # the error says why
    run_all()
    with open_settings_catalog(settings) as cat:
        assert cat.counts(settings.tenant_id) == rows_before, "a rerun adds no letters or rows"
        attempts = {r["attempts"] for r in cat.dead_letters()}
    assert attempts == {1}


def test_redrive_retries_a_fixed_file(pipeline_env):
    settings = pipeline_env
    src = settings.sources[0]
    _write_good(src)
    broken = src / "notes.txt"
    broken.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 10)
    run_all()
    assert _letters(settings) == {"notes.txt": "UndecodableText"}
    broken.write_text("Now it is readable text about heron nesting colonies.\n")
    run_all()
    # New bytes: a new asset, analysed; the old letter no longer applies.
    assert _letters(settings) == {}
    from serving import Searcher

    hits = Searcher.from_settings(settings).search("heron nesting colonies", WHO, k=1).hits
    assert Path(hits[0].path).name == "notes.txt"


@pytest.mark.skipif(
    shutil.which("setpriv") is None and os.geteuid() == 0,
    reason="root needs setpriv to drop CAP_DAC_OVERRIDE",
)
def test_unreadable_file_is_dead_lettered(pipeline_env):
    settings = pipeline_env
    src = settings.sources[0]
    _write_good(src)
    secret = write_unreadable(src)
    cmd = [sys.executable, "-m", "rag_pipeline.cli", "materialize", "--in-process"]
    if os.geteuid() == 0:  # root reads anything unless it gives up the override capability
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
    proc = subprocess.run(cmd, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    letters = _letters(settings)
    assert letters == {secret.name: UNREADABLE_ERROR}
    with open_settings_catalog(settings) as cat:
        assert cat.counts(settings.tenant_id)["current_versions"] == len(GOOD)


def test_redrive_retries_and_counts_attempts(pipeline_env):
    settings = pipeline_env
    src = settings.sources[0]
    _write_good(src)
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    run_all()
    assert _letters(settings) == {"broken.pdf": "CorruptDocument"}
    env = os.environ.copy()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag_pipeline.cli",
            "dead-letters",
            "--redrive",
            "--error-class",
            "CorruptDocument",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "2 failed results cleared" in out.stdout, out.stdout
    assert _letters(settings) == {}
    summary = run_all()
    assert summary["shards"], "the re-driven tasks were planned again"
    with open_settings_catalog(settings) as cat:
        letters = cat.dead_letters(settings.tenant_id)
    assert [(Path(r["uri"]).name, r["error_class"], r["attempts"]) for r in letters] == [
        ("broken.pdf", "CorruptDocument", 2)
    ]


def test_dead_letter_count_filters(tmp_path):
    from rag_pipeline.storage.catalog.catalog import open_catalog

    with open_catalog(tmp_path / "catalog.duckdb", tmp_path / "catalog.lock") as cat:
        for tenant, uri, cls in (
            ("a", "x.md", "ContractError"),
            ("a", "y.md", "EmptyFile"),
            ("b", "z.md", "ContractError"),
        ):
            cat.record_dead_letter(
                tenant_id=tenant,
                uri=uri,
                content_hash="h",
                stage="persist",
                error_class=cls,
                message="m",
            )
        assert cat.dead_letter_count() == 3
        assert cat.dead_letter_count(error_class="ContractError") == 2
        assert cat.dead_letter_count(error_class="ContractError", tenant_id="a") == 1
        cat.redrive("b")  # resolves tenant b's letters
        assert cat.dead_letter_count(error_class="ContractError") == 1
        assert cat.dead_letter_count(error_class="ContractError", unresolved_only=False) == 2

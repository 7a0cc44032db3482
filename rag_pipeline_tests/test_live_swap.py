"""A running server follows promotions: live swap, drain, leases and retention (issue #10).

The fast tests serve the hand-built snapshot of ``test_serving_snapshot`` (extra snapshots are
manifests naming its table). The swap-under-load test publishes through the real code path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from rag_pipeline.settings import FieldWeights, Settings
from rag_pipeline.snapshot.build import _retain
from rag_pipeline.snapshot.leases import PID_SPACE, Lease, leases_dir, live_leases
from rag_pipeline.snapshot.schema import SNAPSHOT_TABLE, read_manifest, write_atomic
from rag_pipeline_tests.test_serving_snapshot import build_snapshot, write_manifest
from serving.live import LiveSearcher, SnapshotUnavailable
from serving.principal import Principal

WHO = Principal(tenant="default")

POLL = 0.05


@pytest.fixture(scope="module")
def template(tmp_path_factory, mv_model_dir) -> Path:
    root = tmp_path_factory.mktemp("template")
    build_snapshot(root, mv_model_dir)
    return root


def _publish_copy(template: Path, data_dir: Path) -> None:
    """The template's snapshot into ``data_dir``: table, manifest, then the CURRENT pointer."""
    shutil.copytree(template / "lance", data_dir / "lance")
    (data_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    shutil.copy(template / "snapshots" / "snap-0001.json", data_dir / "snapshots")
    write_atomic(data_dir / "snapshots" / "CURRENT", "snap-0001")


@pytest.fixture
def served(tmp_path, template) -> Settings:
    """A data dir with the hand-built snapshot ``snap-0001`` as CURRENT."""
    _publish_copy(template, tmp_path)
    return Settings(data_dir=tmp_path, lease_ttl_s=30)


def _add_snapshot(settings: Settings, snapshot_id: str, promote: bool = True, **update) -> None:
    """Another snapshot of the same table (or of whatever ``update`` says)."""
    m = read_manifest(settings.snapshots_dir, "snap-0001")
    write_manifest(
        settings.snapshots_dir, m.model_copy(update={"snapshot_id": snapshot_id, **update})
    )
    if promote:
        write_atomic(settings.snapshots_dir / "PROMOTED", snapshot_id)


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def _lease_files(settings: Settings, snapshot_id: str) -> list[Path]:
    return sorted(leases_dir(settings.snapshots_dir, snapshot_id).glob("*.lease"))


def test_follows_promotion_and_drains_the_old_searcher(served):
    live = LiveSearcher(served, poll_s=POLL)
    live.start()
    try:
        st = live.status()
        assert st["open"] and st["snapshot_id"] == "snap-0001" and st["pointer"] == "CURRENT"
        assert st["following"] and st["lease"]["snapshot_id"] == "snap-0001"
        assert len(_lease_files(served, "snap-0001")) == 1
        lease = json.loads(_lease_files(served, "snap-0001")[0].read_text())
        assert lease["pid"] == os.getpid() and lease["host"] == socket.gethostname()

        with live.acquire() as old:  # an in-flight request on snap-0001 across the swap
            _add_snapshot(served, "snap-0002")
            _wait(lambda: live.status()["snapshot_id"] == "snap-0002")
            st = live.status()
            assert st["pointer"] == "PROMOTED" and st["swaps"] == 1
            assert st["draining"] == [
                {"snapshot_id": "snap-0001", "in_flight": 1, "retired_at": st["opened_at"]}
            ]
            # the old searcher still answers, and its snapshot is still leased
            assert old.search("quokka", WHO, k=1).snapshot_id == "snap-0001"
            assert len(_lease_files(served, "snap-0001")) == 1
            with live.acquire() as new:
                assert new.search("quokka", WHO, k=1).snapshot_id == "snap-0002"
        # the last request out closed the old one and released its lease
        st = live.status()
        assert st["draining"] == [] and st["in_flight"] == 0
        assert _lease_files(served, "snap-0001") == []
        assert len(_lease_files(served, "snap-0002")) == 1
        assert old._pool._shutdown
    finally:
        live.close()
    assert _lease_files(served, "snap-0002") == []
    assert not live.status()["following"]
    with pytest.raises(SnapshotUnavailable), live.acquire():
        pass


def test_broken_snapshot_keeps_the_old_one_serving(served, caplog):
    caplog.set_level(logging.INFO, logger="serving.live")
    live = LiveSearcher(served, poll_s=POLL)
    live.start()
    try:
        # a manifest naming a missing table
        _add_snapshot(served, "snap-0003", table_name="snapshot_gone")
        _wait(lambda: live.status()["failed_snapshot_id"] == "snap-0003")
        time.sleep(10 * POLL)  # several more polls: logged once, not retried every poll
        st = live.status()
        assert st["snapshot_id"] == "snap-0001" and st["open"]
        assert "snapshot_gone" in st["error"] and st["error_at"] and st["last_check"]
        with live.acquire() as s:
            assert s.search("quokka", WHO, k=1).snapshot_id == "snap-0001"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "snap-0003" in errors[0].getMessage()
        assert "still serving snap-0001" in errors[0].getMessage()
        assert _lease_files(served, "snap-0003") == []  # released when the open failed

        # a model mismatch: the snapshot's MV vectors came from other weights
        m = read_manifest(served.snapshots_dir, "snap-0001")
        mv = m.axes["mv"].model_copy(
            update={"model": m.axes["mv"].model.model_copy(update={"weights_checksum": "0" * 64})}
        )
        _add_snapshot(served, "snap-0004", axes={**m.axes, "mv": mv})
        _wait(lambda: live.status()["failed_snapshot_id"] == "snap-0004")
        st = live.status()
        assert st["error"].startswith("ModelMismatch") and st["snapshot_id"] == "snap-0001"
        assert str(served.data_dir) not in json.dumps(st)
        assert str(Settings().mv_model_dir) not in json.dumps(st)  # no absolute paths

        # a good one clears the error
        _add_snapshot(served, "snap-0005")
        _wait(lambda: live.status()["snapshot_id"] == "snap-0005")
        st = live.status()
        assert st["error"] is None and st["failed_snapshot_id"] is None

        # a failed id, repaired and promoted again, is tried at once (not after RETRY_FAILED_S)
        _add_snapshot(served, "snap-0006", table_name="snapshot_gone")
        _wait(lambda: live.status()["failed_snapshot_id"] == "snap-0006")
        _add_snapshot(served, "snap-0006")
        _wait(lambda: live.status()["snapshot_id"] == "snap-0006", timeout=10)
    finally:
        live.close()


def test_server_starts_before_any_snapshot(tmp_path, template):
    settings = Settings(data_dir=tmp_path)
    live = LiveSearcher(settings, poll_s=POLL)
    live.start()
    try:
        st = live.status()
        assert not st["open"] and st["error"] == "no snapshot has been published yet"
        with pytest.raises(SnapshotUnavailable, match="no snapshot"), live.acquire():
            pass
        _publish_copy(template, tmp_path)
        _wait(lambda: live.status()["open"])
        with live.acquire() as s:
            assert s.manifest.snapshot_id == "snap-0001"
        assert live.status()["error"] is None
    finally:
        live.close()


def test_polling_reads_the_pointer_only_when_it_changes(served, monkeypatch):
    live = LiveSearcher(served, poll_s=POLL)
    reads = []
    real = Path.read_text

    def counting(self, *a, **kw):
        if self.name in ("CURRENT", "PROMOTED"):
            reads.append(self.name)
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", counting)
    live.start()
    try:
        time.sleep(20 * POLL)
        assert reads == ["CURRENT"]
    finally:
        live.close()


# --- leases and retention ----------------------------------------------------------------------


def _sid(i: int) -> str:
    return f"20240101T0000{i:02d}-{i:08x}"


@pytest.fixture
def retained(tmp_path) -> Settings:
    """Six published snapshots (manifests and tables), the newest CURRENT; keep 2."""
    settings = Settings(data_dir=tmp_path, snapshots_kept=2, lease_ttl_s=5)
    db = lancedb.connect(str(settings.lance_dir))
    for i in range(6):
        write_atomic(settings.snapshots_dir / f"{_sid(i)}.json", "{}")
        db.create_table(f"snapshot_{_sid(i).replace('-', '_')}", pa.table({"a": [i]}))
    write_atomic(settings.snapshots_dir / "CURRENT", _sid(5))
    return settings


def _tables(settings: Settings) -> set[str]:
    """Snapshots still readable: tagged versions of the snapshot table, and (schema < 4) tables
    of their own."""
    db = lancedb.connect(str(settings.lance_dir))
    names = db.list_tables().tables
    tags = set(db.open_table(SNAPSHOT_TABLE).tags.list()) if SNAPSHOT_TABLE in names else set()
    return tags | {
        n.removeprefix("snapshot_").replace("_", "-") for n in names if n.startswith("snapshot_")
    }


def _fake_lease(
    settings: Settings,
    snapshot_id: str,
    *,
    host: str = "other-host",
    pid: int = 4242,
    pid_space: str = "elsewhere",
    age_s: float = 0.0,
) -> Path:
    path = leases_dir(settings.snapshots_dir, snapshot_id) / f"{host}-{pid}-x.lease"
    beat = time.time() - age_s
    write_atomic(
        path,
        json.dumps(
            {
                "snapshot_id": snapshot_id,
                "holder": path.stem,
                "host": host,
                "pid": pid,
                "pid_space": pid_space,
                "started": beat,
                "heartbeat": beat,
            }
        ),
    )
    os.utime(path, (beat, beat))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_retention_never_drops_a_leased_snapshot(retained):
    mine = Lease.acquire(retained.snapshots_dir, _sid(0))  # the oldest, beyond snapshots_kept
    theirs = _fake_lease(retained, _sid(1), age_s=1)  # another machine, fresh heartbeat
    db = lancedb.connect(str(retained.lance_dir))
    assert sorted(_retain(retained, db)) == [_sid(2), _sid(3)]
    assert _tables(retained) == {_sid(0), _sid(1), _sid(4), _sid(5)}
    assert theirs.exists() and mine.path.exists()
    # the reader lets go: the next retention drops its snapshot
    mine.release()
    assert not leases_dir(retained.snapshots_dir, _sid(0)).exists()
    assert _retain(retained, db) == [_sid(0)]
    assert not (retained.snapshots_dir / f"{_sid(0)}.json").exists()


def test_dead_and_expired_leases_expire(retained):
    db = lancedb.connect(str(retained.lance_dir))
    host = socket.gethostname()
    dead = _fake_lease(retained, _sid(0), host=host, pid=_dead_pid(), pid_space=PID_SPACE)
    # same host name but another PID namespace (another container): only the TTL can tell
    other_ns = _fake_lease(retained, _sid(1), host=host, pid=_dead_pid(), pid_space="other-ns")
    expired = _fake_lease(retained, _sid(2), age_s=60)  # another host, no heartbeat for 60 s
    alive_here = _fake_lease(retained, _sid(3), host=host, pid=os.getpid(), pid_space=PID_SPACE)
    leased = live_leases(retained.snapshots_dir, retained.lease_ttl_s, reap=False)
    assert set(leased) == {_sid(1), _sid(3)}
    assert sorted(_retain(retained, db)) == [_sid(0), _sid(2)]
    assert not dead.exists() and not expired.exists()  # reaped
    assert other_ns.exists() and alive_here.exists()
    assert _tables(retained) == {_sid(1), _sid(3), _sid(4), _sid(5)}
    # a lease of a process that died long ago on another machine goes by the TTL
    # (and so does a hung process on this one: alive, but no heartbeat)
    for path in (other_ns, alive_here):
        beat = time.time() - 60
        path.write_text(json.dumps(json.loads(path.read_text()) | {"heartbeat": beat}))
        os.utime(path, (beat, beat))
    assert sorted(_retain(retained, db)) == [_sid(1), _sid(3)]
    assert not leases_dir(retained.snapshots_dir).exists() or not any(
        leases_dir(retained.snapshots_dir).iterdir()
    )


def test_live_searcher_heartbeats_its_lease(served):
    settings = served.model_copy(update={"lease_ttl_s": 0.6})
    live = LiveSearcher(settings, poll_s=5.0)  # heartbeats come every ttl/3 all the same
    live.start()
    try:
        first = live.status()["lease"]["heartbeat"]
        time.sleep(1.0)
        assert live.status()["lease"]["heartbeat"] > first
        assert set(live_leases(settings.snapshots_dir, 0.6, reap=False)) == {"snap-0001"}
    finally:
        live.close()


# --- swap under load ---------------------------------------------------------------------------


@pytest.mark.slow
def test_swap_under_load(pipeline_env):
    """A client queries steadily while 10 snapshots (more than snapshots_kept) are published and
    promoted: no failed request, each promotion served within poll + open time, and no table a
    reader held is dropped. The first snapshot comes from a full Dagster run; the next ten from
    ``build_snapshot`` (what ``search_snapshot`` runs: new table, manifest, CURRENT, retention)
    with changed field weights (a new fingerprint, so a new snapshot, without re-analysing), each
    followed by the PROMOTED write of ``promoted_snapshot``."""
    from rag_pipeline.snapshot.build import build_snapshot as publish
    from rag_pipeline.storage.catalog.catalog import open_settings_catalog
    from rag_pipeline_tests.conftest import run_all

    settings = pipeline_env
    src = settings.sources[0]
    for i, (title, body) in enumerate(
        [
            ("Quokka notes", "The quokka is a small marsupial of Rottnest Island."),
            ("Sourdough", "Feed the starter with flour and water every day."),
            ("Lighthouse", "The red lighthouse at dusk guides the boats home."),
        ]
    ):
        (src / f"note{i}.md").write_text(f"# {title}\n\n{body}\n")
    run_all()
    first = (settings.snapshots_dir / "PROMOTED").read_text().strip()
    poll = 0.2
    live = LiveSearcher(settings, poll_s=poll)
    live.start()
    assert live.status()["snapshot_id"] == first

    stop = threading.Event()
    log: list[tuple[float, str | None, str | None]] = []  # (time, snapshot id, error)

    def client() -> None:
        while not stop.is_set():
            try:
                with live.acquire() as s:
                    resp = s.search("quokka island", WHO, k=3)
                    assert resp.hits and resp.hits[0].title == "Quokka notes"
                log.append((time.monotonic(), resp.snapshot_id, None))
            except Exception as exc:
                log.append((time.monotonic(), None, f"{type(exc).__name__}: {exc}"))

    held: dict = {}
    release_hold = threading.Event()

    def holder() -> None:  # one long request: holds the first snapshot through every publish
        with live.acquire() as s:
            held["id"] = s.manifest.snapshot_id
            release_hold.wait(600)
            held["rows"] = s.dataset.to_table().num_rows
            held["search"] = s.search("quokka", WHO, k=1).snapshot_id

    threads = [threading.Thread(target=client), threading.Thread(target=holder)]
    for t in threads:
        t.start()
    promoted: list[tuple[float, str, float]] = []  # (promoted at, id, open seconds)
    try:
        _wait(lambda: "id" in held and len(log) > 5)
        for i in range(10):
            s_i = settings.model_copy(update={"field_weights": FieldWeights(body=1 + (i + 1) / 64)})
            with open_settings_catalog(s_i) as cat:
                res = publish(s_i, cat)
            assert res.published
            sid = res.manifest.snapshot_id
            write_atomic(settings.snapshots_dir / "PROMOTED", sid)  # promoted_snapshot's write
            t_promoted = time.monotonic()
            _wait(lambda sid=sid: any(r[1] == sid for r in log[-50:]))
            promoted.append((t_promoted, sid, live.status()["open_seconds"]))
            assert held["id"] == first and first in _tables(settings)  # leased: kept
        release_hold.set()
        threads[1].join(60)
        time.sleep(0.5)
    finally:
        release_hold.set()
        stop.set()
        for t in threads:
            t.join(60)
        status = live.status()
        live.close()

    failures = [r for r in log if r[2] is not None]
    assert failures == [], failures[:5]
    assert held["search"] == first and held["rows"] > 0  # read its table after 10 publishes
    staleness = []
    for t_promoted, sid, open_s in promoted:
        t_served = min(r[0] for r in log if r[1] == sid)
        staleness.append(t_served - t_promoted)
        assert t_served - t_promoted <= poll + open_s + 2.0, (sid, t_served - t_promoted)
    # every request ran on the snapshot promoted last before it, or one still draining
    assert status["snapshot_id"] == promoted[-1][1] and status["error"] is None
    assert status["draining"] == []
    # retention ran (more snapshots than snapshots_kept) and dropped only unleased ones;
    # the first, held throughout, goes at the first publish after its reader let go
    kept = _tables(settings)
    assert len(kept) <= settings.snapshots_kept + 2 and promoted[-1][1] in kept
    with open_settings_catalog(settings) as cat:
        s_last = settings.model_copy(update={"field_weights": FieldWeights(body=2.0)})
        publish(s_last, cat)
    assert first not in _tables(settings)
    print(
        f"\nswap under load: {len(log)} requests, {len(failures)} failed, "
        f"max staleness {max(staleness):.3f} s (poll {poll} s), "
        f"open+warm max {max(p[2] for p in promoted):.3f} s"
    )

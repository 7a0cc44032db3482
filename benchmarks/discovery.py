"""Discovery of a large tree: the first scan (hash everything), a rescan of the unchanged tree,
and a rescan after a few files changed, next to ``find | xargs stat`` and ``sha256sum`` on the
same files.

Generates N small text files (1,000 per folder) under ``--root`` (kept between runs: generating
100k files takes a minute on a loaded box), a fresh catalog under ``<root>.data``, then prints:

  walk            walk_source alone (list folders, stat files, tell sidecars apart)
  scan (first)    scan(): walk + hash every file + insert assets/versions
  scan (same)     scan() of the unchanged tree: walk + skip by size/mtime/inode, no hashing
  scan (0.1%)     scan() after touching 0.1% of the files (rewritten with new content)
  sensor diff     detect_changes() (the source sensor's stat diff, no catalog) of the same tree
  find|stat       find ROOT -type f | xargs stat   (the floor for a stat walk)
  sha256sum       find ROOT -type f | xargs sha256sum   (the floor for hashing everything)

Usage: python benchmarks/discovery.py [--files 100000] [--root var/bench/discovery_tree]
       [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rag_pipeline.discovery.scanner import detect_changes, scan, walk_source  # noqa: E402
from rag_pipeline.settings import Settings  # noqa: E402
from rag_pipeline.storage.catalog.catalog import open_settings_catalog  # noqa: E402

PER_FOLDER = 1000


def make_tree(root: Path, n: int) -> None:
    marker = root / f".generated_{n}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        folder = root / f"d{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{i:07d}.txt").write_text(
            f"Document {i} of the discovery benchmark: otters, kilns and lighthouses.\n"
        )
    marker.touch()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--root", type=Path, default=Path("var/bench/discovery_tree"))
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    root = args.root.absolute()
    gen_s, _ = timed(lambda: make_tree(root, args.files))
    data = root.with_name(root.name + ".data")
    shutil.rmtree(data, ignore_errors=True)
    settings = Settings.from_env(
        data_dir=data, sources=[root], sources_file=None, discovery_threads=args.threads
    )
    rows: list[tuple[str, float, str]] = []

    walk_s, (found, _) = timed(lambda: walk_source(root, args.threads))
    rows.append(("walk", walk_s, f"{len(found)} files"))
    with open_settings_catalog(settings) as cat:
        first_s, rep = timed(lambda: scan(settings, cat))
    rows.append(("scan (first)", first_s, f"{rep.new_versions} new versions"))
    with open_settings_catalog(settings) as cat:
        same_s, rep = timed(lambda: scan(settings, cat))
    rows.append(("scan (same)", same_s, f"{rep.unchanged} unchanged, {rep.new_versions} new"))
    step = 1000  # 0.1%
    for o in found[::step]:
        Path(o.uri).write_text(f"changed {o.uri}\n")
    diff_s, changes = timed(lambda: detect_changes(settings))
    with open_settings_catalog(settings) as cat:
        inc_s, rep = timed(lambda: scan(settings, cat))
    rows.append(("scan (0.1%)", inc_s, f"{rep.new_versions} new versions"))
    rows.append(("sensor diff", diff_s, f"{len(changes.changed)} changed"))
    q = str(root).replace("'", "'\\''")
    rows.append(("find|stat", shell(f"find '{q}' -type f -print0 | xargs -0 stat > /dev/null"), ""))
    rows.append(
        ("sha256sum", shell(f"find '{q}' -type f -print0 | xargs -0 sha256sum > /dev/null"), "")
    )

    load = os.getloadavg()
    print(
        f"files={args.files} threads={args.threads} cpus={os.cpu_count()} "
        f"python={platform.python_version()} load={load[0]:.1f}/{load[1]:.1f} "
        f"(tree generated in {gen_s:.0f} s)"
    )
    print("| step | seconds | per 100k files | notes |")
    print("|---|---:|---:|---|")
    for name, secs, note in rows:
        print(f"| {name} | {secs:.2f} | {secs * 100_000 / args.files:.2f} | {note} |")


if __name__ == "__main__":
    main()

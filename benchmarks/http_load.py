"""HTTP API under load: SciFact queries over HTTP next to ``Searcher.search`` in process.

    python benchmarks/http_load.py [--no-update] [--seconds 20] [--concurrency 1,8,32] [--k 10]

Uses (or builds) the index under ``var/bench/scifact`` (see ``common.py``), starts
``rag-pipeline serve`` on a free port of 127.0.0.1 (one worker, default limits, an API key in
a throw-away key store) and, for each concurrency, runs the train queries for a fixed time
through

* ``in-process``: that many threads calling ``Searcher.search`` on one searcher (the same
  principal as the key's),
* ``HTTP``: that many clients, each with its own keep-alive connection, sending
  ``GET /v1/search?q=...&k=10`` with the key (the body is read, not parsed).

The two alternate in rounds (``--rounds``) so that background load spreads over both. Each
client cycles through the queries from its own offset and stops when the time is up. Output:
requests/s, p50/p95/p99 latency (ms) and errors per mode and concurrency, then the targets
(HTTP p50 overhead at concurrency 1 <= 2 ms; 0 errors; HTTP throughput at 8 clients >= 0.8x the
in-process throughput). Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import eprint, latency_stats, md_table

HOST = "127.0.0.1"  # the only address this benchmark talks to


def run_clients(n: int, seconds: float, call, queries: list[str]) -> tuple[list[float], int]:
    """``n`` threads calling ``call(client_state, query)`` for ``seconds``; (latencies ms,
    errors)."""
    latencies: list[list[float]] = [[] for _ in range(n)]
    errors = [0] * n
    start = threading.Barrier(n + 1)
    deadline_box: list[float] = []

    def client(i: int) -> None:
        state: dict = {}
        q = (i * 97) % len(queries)
        start.wait()
        deadline = deadline_box[0]
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                ok = call(state, queries[q])
            except Exception:  # an error is a figure here
                ok = False
                state.clear()
            if ok:
                latencies[i].append((time.perf_counter() - t0) * 1000.0)
            else:
                errors[i] += 1
            q = (q + 1) % len(queries)
        conn = state.get("conn")
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline_box.append(time.perf_counter() + seconds)
    start.wait()
    for t in threads:
        t.join(seconds + 60)
    return [x for lat in latencies for x in lat], sum(errors)


def http_call(port: int, key: str, k: int):
    headers = {"Authorization": f"Bearer {key}", "Connection": "keep-alive"}

    def call(state: dict, query: str) -> bool:
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection(HOST, port, timeout=60)
        conn.request(
            "GET", f"/v1/search?{urllib.parse.urlencode({'q': query, 'k': k})}", headers=headers
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or not body.startswith(b"{"):
            if resp.will_close:
                conn.close()
                state.clear()
            return False
        return True

    return call


def start_server(index, key_db: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    from serving.server import free_port

    port = free_port(HOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(index.settings.data_dir),
        RAG_SERVING_DB_URL=key_db,
        PYTHONPATH=str(common.REPO),
        TOKENIZERS_PARALLELISM="false",
        LANCEDB_LOG="error",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    log = open(log_path, "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rag_pipeline.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=common.REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {log_path}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health/ready")
            ready = conn.getresponse().status == 200
            conn.close()
            if ready:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the server was not ready after 300 s; see {log_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_dataset_args(parser)
    common.add_index_args(parser)
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="measured seconds per mode and concurrency (default 20)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternations of the two modes per concurrency (default 2)",
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20, help="warm-up queries per mode")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1 or max(levels) > 256 or args.seconds <= 0:
        raise SystemExit("--concurrency: 1..256 each; --seconds > 0")

    ds = common.load_dataset(args.dataset, args.split, args.limit)
    index = common.ensure_index(
        ds,
        common.bench_name(args.dataset, args.limit),
        rebuild=args.rebuild,
        update=not args.no_update,
    )
    queries = list(ds.queries.values())
    from serving.keys import KeyStore
    from serving.principal import Principal
    from serving.searcher import Searcher

    tmp = Path(tempfile.mkdtemp(prefix="http_load_"))
    key_db = f"sqlite:///{tmp / 'keys.db'}"
    store = KeyStore(key_db)
    key, info = store.create(index.settings.tenant_id, scopes=["read"], name="http_load")
    store.close()
    principal = Principal(tenant=info.tenant, groups=frozenset(info.groups))

    eprint("starting rag-pipeline serve ...")
    proc, port = start_server(index, key_db, tmp / "server.log")
    searcher = Searcher.from_settings(index.settings)
    k = args.k

    def inproc(state: dict, query: str) -> bool:
        searcher.search(query, principal, k=k)
        return True

    call_http = http_call(port, key, k)
    modes = {"in-process": inproc, "HTTP": call_http}
    try:
        eprint(f"warm-up: {args.warmup} queries per mode")
        for q in queries[: args.warmup]:
            for fn in modes.values():
                fn({}, q)
        results: dict[tuple[str, int], tuple[list[float], int, float]] = {}
        load_before = os.getloadavg()[0]
        for c in levels:
            for r in range(args.rounds):
                order = list(modes) if r % 2 == 0 else list(reversed(modes))
                for name in order:
                    secs = args.seconds / args.rounds
                    eprint(f"  {name}, {c} concurrent, round {r + 1}: {secs:.1f} s")
                    lat, err = run_clients(c, secs, modes[name], queries)
                    prev = results.get((name, c), ([], 0, 0.0))
                    results[(name, c)] = (prev[0] + lat, prev[1] + err, prev[2] + secs)
        load_after = os.getloadavg()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        searcher.close()

    print(
        f"## HTTP API under load: {args.dataset} {args.split} queries ({len(queries)} "
        f"queries, k={k}, snapshot {searcher.manifest.snapshot_id}, "
        f"{searcher.manifest.n_units} units)\n"
    )
    print(
        f"Machine: {common.machine_info()}. {args.seconds:g} s per mode and concurrency in "
        f"{args.rounds} alternating rounds; server: one uvicorn worker, default limits; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after.\n"
    )
    rows = []
    stats = {}
    for c in levels:
        for name in modes:
            lat, err, secs = results[(name, c)]
            s = latency_stats(lat)
            stats[(name, c)] = (s, len(lat) / secs, err)
            rows.append(
                [
                    c,
                    name,
                    len(lat),
                    f"{len(lat) / secs:.1f}",
                    f"{s['p50']:.1f}",
                    f"{s['p95']:.1f}",
                    f"{s['p99']:.1f}",
                    err,
                ]
            )
    print(
        md_table(
            ["clients", "mode", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
            rows,
            align="llrrrrrr",
        )
    )
    print()
    errors = sum(v[2] for v in stats.values())
    if 1 in levels:
        over = stats[("HTTP", 1)][0]["p50"] - stats[("in-process", 1)][0]["p50"]
        print(
            f"- HTTP overhead at p50, 1 client: {over:+.2f} ms "
            f"({'meets' if over <= 2.0 else 'misses'} the <= 2 ms target)"
        )
    if 8 in levels:
        ratio = stats[("HTTP", 8)][1] / max(stats[("in-process", 8)][1], 1e-9)
        print(
            f"- throughput at 8 clients, HTTP / in-process: {ratio:.2f} "
            f"({'meets' if ratio >= 0.8 else 'misses'} the >= 0.8 target)"
        )
    print(f"- errors: {errors} ({'meets' if errors == 0 else 'misses'} the 0 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

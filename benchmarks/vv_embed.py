"""VV (image) embedding throughput on CPU: real-size CLIP / SigLIP architectures, random weights.

    python benchmarks/vv_embed.py [--archs siglip-base-patch16-224,clip-vit-base-patch32]
                                  [--batch-sizes 8,32] [--limit N] [--queries 50]

No vision weights are at hand (and nothing is downloaded), so each architecture is built from
its config with random weights (``rag_pipeline.testing.random_models.build_architecture``)
once, under ``var/bench/models/<arch>`` (git-ignored). Speed and memory depend on the
architecture, not on the weights' values.

Each (architecture, batch size) runs in its own subprocess, so that peak RSS is that run's
alone. The subprocess decodes coco_mini's JPEGs (``$RAG_SHARED_DATA/coco_mini``) with the
pipeline's decoder (``image_decode.decode_image``, JPEG draft mode, long side at most twice
the model's input), loads the model with ``ImageEncoder.load`` (CPU, float32, torch threads =
cores), encodes one warm-up batch, then times ``encode_images`` (preprocessing + forward) over
all images. The first run of each architecture also times ``encode_query`` over captions
(the text tower, one query at a time, after 3 warm-up queries).

Printed side by side: images/s and images/min (decode + encode), the ratio to the seed's
published VV rate (113 images/min on an M5 Mac), peak RSS, text-query latency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import REPO, eprint, latency_stats, md_table  # noqa: E402

SEED_IMAGES_PER_MIN = 113.0  # the seed's published VV rate, M5 Mac
MODELS_DIR = REPO / "var" / "bench" / "models"
DEFAULT_ARCHS = "siglip-base-patch16-224,clip-vit-base-patch32"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def model_dir(arch: str) -> Path:
    """The random-weight model for ``arch``, built once (atomically) under var/bench/models."""
    from rag_pipeline.testing.random_models import build_architecture

    target = MODELS_DIR / f"{arch}-random-seed0"
    if (target / ".complete").exists():
        return target
    tmp = MODELS_DIR / f".{target.name}.building-{os.getpid()}"
    eprint(f"building {arch} with random weights in {target} (once) ...")
    t0 = time.perf_counter()
    build_architecture(tmp, arch, seed=0)
    (tmp / ".complete").write_text("")
    if target.exists():  # a half-built leftover from an interrupted run
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    eprint(f"  built in {time.perf_counter() - t0:.1f}s")
    return target


def coco_images(limit: int | None) -> list[Path]:
    root = common.shared_data_dir() / "coco_mini" / "images"
    if not root.is_dir():
        raise SystemExit(f"{root} not found (set RAG_SHARED_DATA)")
    paths = sorted(root.rglob("*.jpg"))
    return paths[:limit] if limit else paths


def coco_queries(n: int) -> list[str]:
    path = common.shared_data_dir() / "coco_mini" / "captions.jsonl"
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line)["captions"][1])
        if len(out) >= n:
            break
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------------------------
# One measurement (subprocess)


def measure(arch: str, batch_size: int, limit: int | None, n_queries: int) -> dict:
    import torch

    from rag_pipeline.analysis.analyzers.image_decode import decode_image
    from rag_pipeline.analysis.analyzers.image_embedding import ImageEncoder
    from rag_pipeline.testing.random_models import ARCHITECTURES

    torch.set_num_threads(cores())
    d = model_dir(arch)
    side = 2 * int(ARCHITECTURES[arch]["image_size"])
    paths = coco_images(limit)
    blobs = [p.read_bytes() for p in paths]
    t0 = time.perf_counter()
    images = [decode_image(b, max_pixels=64_000_000, target_side=side).image for b in blobs]
    decode_s = time.perf_counter() - t0
    rss_images = peak_rss_mib()

    t0 = time.perf_counter()
    enc = ImageEncoder.load(d, device="cpu", dtype="float32")
    load_s = time.perf_counter() - t0
    enc.encode_images(images[:batch_size], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    vecs = enc.encode_images(images, batch_size=batch_size)
    encode_s = time.perf_counter() - t0
    assert vecs.shape == (len(images), enc.dim)

    text_ms: list[float] = []
    if n_queries:
        queries = coco_queries(n_queries + 3)
        for q in queries[:3]:
            enc.encode_query(q)
        for q in queries[3:]:
            t = time.perf_counter()
            enc.encode_query(q)
            text_ms.append((time.perf_counter() - t) * 1000)
    params = sum(p.numel() for p in enc._model.parameters())
    return {
        "arch": arch,
        "batch_size": batch_size,
        "n": len(images),
        "decode_s": decode_s,
        "load_s": load_s,
        "encode_s": encode_s,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_decode_mib": rss_images,
        "params_m": params / 1e6,
        "dim": enc.dim,
        "torch_threads": torch.get_num_threads(),
        "text_ms": text_ms,
        "decode_side": side,
    }


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archs",
        default=DEFAULT_ARCHS,
        help=f"comma-separated architectures (default {DEFAULT_ARCHS})",
    )
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated (default 8,32)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="only the first N images (default: all 239)",
    )
    parser.add_argument(
        "--queries", type=int, default=50, help="text queries timed per architecture (default 50)"
    )
    parser.add_argument("--child", nargs=2, metavar=("ARCH", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        arch, bs = args.child[0], int(args.child[1])
        print(json.dumps(measure(arch, bs, args.limit, args.queries)))
        return 0

    from rag_pipeline.testing.random_models import ARCHITECTURES

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise SystemExit(f"unknown architecture(s) {unknown}; known: {list(ARCHITECTURES)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for arch in archs:  # build before timing anything
        model_dir(arch)

    results: list[dict] = []
    for arch in archs:
        for i, bs in enumerate(batch_sizes):
            eprint(f"[{arch}] batch {bs} ...")
            cmd = [
                sys.executable,
                __file__,
                "--child",
                arch,
                str(bs),
                "--queries",
                str(args.queries if i == 0 else 0),
            ]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"[{arch}] batch {bs} failed:\n{proc.stderr[-4000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            eprint(
                f"  {r['n']} images: decode {r['decode_s']:.1f}s, "
                f"encode {r['encode_s']:.1f}s, load {r['load_s']:.1f}s"
            )

    rows = []
    for r in results:
        total = r["decode_s"] + r["encode_s"]
        per_min = 60 * r["n"] / total
        text = latency_stats(r["text_ms"]) if r["text_ms"] else None
        rows.append(
            [
                r["arch"],
                f"{r['params_m']:.0f}M",
                r["dim"],
                r["batch_size"],
                r["n"],
                f"{r['n'] / r['decode_s']:.0f}",
                f"{r['n'] / r['encode_s']:.2f}",
                f"{r['n'] / total:.2f}",
                f"{per_min:.0f}",
                f"{per_min / SEED_IMAGES_PER_MIN:.2f}x",
                f"{r['peak_rss_mib']:.0f}",
                f"{text['p50']:.0f} / {text['p95']:.0f} / {min(r['text_ms']):.0f}" if text else "-",
            ]
        )
    print(
        f"VV embedding on CPU, random weights, float32 "
        f"(torch threads {results[0]['torch_threads']}; decode: long side <= 2x input)"
    )
    print(f"Machine: {common.machine_info()}; load average at end {os.getloadavg()[0]:.2f}")
    print()
    print(
        md_table(
            [
                "architecture",
                "params",
                "dim",
                "batch",
                "images",
                "decode img/s",
                "encode img/s",
                "img/s",
                "img/min",
                f"vs seed {SEED_IMAGES_PER_MIN:.0f}/min (M5 Mac)",
                "peak RSS MiB",
                "text query ms p50 / p95 / min",
            ],
            rows,
        )
    )
    print()
    print(
        "img/s and img/min: decode + preprocess + forward, end to end over the images; "
        "encode img/s: preprocess + forward only. Seed figure: 113 images/min on an M5 Mac."
    )
    print(
        "Text queries: encode_query, one at a time (SigLIP pads to its 64 positions; CLIP to "
        "the query, here byte-level tokens, longer than real BPE). On a shared machine the "
        "min is the least disturbed figure."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

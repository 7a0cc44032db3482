"""Image analyzer throughput and memory on coco_mini: decode paths, thumbnails, OCR.

    python benchmarks/image_analyzers.py [--limit N] [--repeat R] [--camera-scale S]
                                         [--stages plain,draft,plain_camera,draft_camera,ocr]

Stages run over coco_mini's 239 COCO JPEGs, read once into memory so disk I/O is not timed:
decode each one, then hand the decoded images, a batch at a time, to the stage's callable.
COCO images are about 640x480, too small for libjpeg's DCT scaling to apply at 384 px (it
needs at least twice the target), so the decode rows are also run on "camera-size" copies:
each image upscaled ``--camera-scale`` times (default 4: about 2560x1920, 5 megapixels) and
re-encoded as JPEG (quality 90) in memory, never written anywhere. Rows:

* ``plain``: Pillow's full-resolution decode, EXIF orientation, RGB, resize to 384 px, then a
  256 px JPEG thumbnail: what a straightforward implementation does.
* ``draft``: ``image_decode.decode_image(target_side=384)`` (libjpeg DCT-domain downscale),
  then the same thumbnail. The resize after decoding is the same function in both rows, so
  the draft/plain ratio is the draft alone.
* ``ocr``: ``decode_image`` at OCR's input side, then ``ocr.ocr_image`` per image (tesseract
  subprocess, one thread). Also counts the images that yield any OCR line.

Each row runs in a forked child process (no allocator state carried over from another row)
and is repeated ``--repeat`` times; the best run's images/s is shown (the machine is shared, so
the best run is the least disturbed one). Memory is the peak resident set over the child's
starting RSS (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), so Pillow's
C pixel buffers count; tesseract runs in its own process and is not included. Where
``clear_refs`` is unavailable, tracemalloc's peak is shown instead (Python allocations only)
and the table says so.

To add a stage (a VV embedding model, say), append a ``Stage`` in ``build_stages``: a name, which
decoder and target side it wants, and a callable over a list of ``DecodedImage``s returning
how many outputs it made, e.g.::

    Stage("vv_embed siglip", decoder="draft", side=448, batch_size=32,
          run=lambda batch: len(encoder.encode_images([d.image for d in batch])))
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import multiprocessing as mp
import os
import re
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eprint, machine_info, md_table, shared_data_dir  # noqa: E402

from rag_pipeline.analysis.analyzers.image_decode import (  # noqa: E402
    DecodedImage,
    decode_image,
    fit_within,
    thumbnail_bytes,
    to_rgb,
)

MAX_PIXELS = 100_000_000
DECODE_SIDE = 384
THUMB_SIDE = 256


# --------------------------------------------------------------------------------------------
# Decoders: bytes -> DecodedImage


def plain_decode(data: bytes, side: int | None) -> DecodedImage:
    """Full-resolution decode, then the same orientation/RGB/resize steps as decode_image."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(im) if orientation != 1 else im
        rgb = to_rgb(upright)
        if side is not None:
            rgb = fit_within(rgb, side)
        if rgb is im:
            rgb = im.copy()
        fmt = im.format or "unknown"
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(image=rgb, width=width, height=height, format=fmt, orientation=orientation)


def draft_decode(data: bytes, side: int | None) -> DecodedImage:
    return decode_image(data, max_pixels=MAX_PIXELS, target_side=side)


DECODERS: dict[str, Callable[[bytes, int | None], DecodedImage]] = {
    "plain": plain_decode,
    "draft": draft_decode,
}


# --------------------------------------------------------------------------------------------
# Stages: a callable over a batch of decoded images


@dataclass(frozen=True)
class Stage:
    name: str
    key: str  # what --stages selects it by
    images: str  # which image set: "coco" or "camera"
    decoder: str  # a DECODERS key
    side: int | None  # decode target (long side)
    run: Callable[[list[DecodedImage]], int]  # returns how many outputs it made
    batch_size: int = 1
    output: str = "outputs"  # what run's count means, for the table


def thumbnails(batch: list[DecodedImage]) -> int:
    return sum(1 for d in batch if thumbnail_bytes(d, max_side=THUMB_SIDE))


def build_stages(args: argparse.Namespace) -> list[Stage]:
    from rag_pipeline.analysis.analyzers.ocr import OcrConfig, ocr_image

    ocr_cfg = OcrConfig()

    def ocr(batch: list[DecodedImage]) -> int:
        return sum(1 for d in batch if ocr_image(d, ocr_cfg))

    cam = f"camera-size x{args.camera_scale}"
    return [
        Stage(
            f"plain decode -> {DECODE_SIDE} + thumbnail {THUMB_SIDE}",
            "plain",
            "coco",
            "plain",
            DECODE_SIDE,
            thumbnails,
            output="thumbnails",
        ),
        Stage(
            f"draft decode -> {DECODE_SIDE} + thumbnail {THUMB_SIDE}",
            "draft",
            "coco",
            "draft",
            DECODE_SIDE,
            thumbnails,
            output="thumbnails",
        ),
        Stage(
            f"plain decode -> {DECODE_SIDE} + thumbnail {THUMB_SIDE} ({cam})",
            "plain_camera",
            "camera",
            "plain",
            DECODE_SIDE,
            thumbnails,
            output="thumbnails",
        ),
        Stage(
            f"draft decode -> {DECODE_SIDE} + thumbnail {THUMB_SIDE} ({cam})",
            "draft_camera",
            "camera",
            "draft",
            DECODE_SIDE,
            thumbnails,
            output="thumbnails",
        ),
        Stage(
            f"OCR: draft decode -> {ocr_cfg.max_side} + tesseract (psm {ocr_cfg.psm}, "
            f"upscale to {ocr_cfg.upscale_to})",
            "ocr",
            "coco",
            "draft",
            ocr_cfg.max_side,
            ocr,
            output="images with text",
        ),
        # VV embedding, e.g.:
        # Stage("vv_embed siglip", "vv", "coco", "draft", 448, encode, batch_size=32),
    ]


# --------------------------------------------------------------------------------------------
# Measuring one row in a child process


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    # Memory the parent freed (decoding the camera-size copies, say) stays resident in glibc's
    # heap, inherited by the fork: reusing it would not raise the RSS. Give it back first.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _measure(stage: Stage, images: list[bytes], conn) -> None:
    """Child: decode + run the stage over every image; send seconds, peak memory, counts."""
    decode = DECODERS[stage.decoder]
    rss_mode = _reset_peak_rss()
    base = _status_kib("VmRSS") if rss_mode else 0
    if not rss_mode:
        tracemalloc.start()
    t_decode = t_stage = 0.0
    outputs = 0
    batch: list[DecodedImage] = []

    def flush() -> None:
        nonlocal t_stage, outputs
        t0 = time.perf_counter()
        outputs += stage.run(batch)
        t_stage += time.perf_counter() - t0
        for d in batch:
            d.image.close()
        batch.clear()

    for data in images:
        t0 = time.perf_counter()
        batch.append(decode(data, stage.side))
        t_decode += time.perf_counter() - t0
        if len(batch) >= stage.batch_size:
            flush()
    if batch:
        flush()
    if rss_mode:
        peak_kib = (_status_kib("VmHWM") or 0) - (base or 0)
    else:
        peak_kib = tracemalloc.get_traced_memory()[1] // 1024
    conn.send(
        {
            "decode_s": t_decode,
            "stage_s": t_stage,
            "outputs": outputs,
            "peak_mib": peak_kib / 1024,
            "memory": "rss" if rss_mode else "tracemalloc",
        }
    )
    conn.close()


def measure(stage: Stage, images: list[bytes]) -> dict:
    ctx = mp.get_context("fork")  # the images are shared with the child, not pickled
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(stage, images, child))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None or proc.exitcode != 0:
        raise SystemExit(
            f"stage {stage.name!r} failed in its child process (exit code {proc.exitcode})"
        )
    return result


# --------------------------------------------------------------------------------------------


def camera_size(images: list[bytes], scale: int) -> list[bytes]:
    out = []
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            big = im.convert("RGB").resize(
                (im.width * scale, im.height * scale), Image.Resampling.BICUBIC
            )
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def load_images(limit: int | None) -> list[bytes]:
    root = shared_data_dir() / "coco_mini"
    captions = root / "captions.jsonl"
    if not captions.is_file():
        raise SystemExit(f"{root} not found (set RAG_SHARED_DATA)")
    rels = [json.loads(line)["image"] for line in captions.read_text().splitlines() if line.strip()]
    rels = rels[:limit] if limit else rels
    return [(root / rel).read_bytes() for rel in rels]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per decode row; the best is shown (OCR rows run once)",
    )
    ap.add_argument(
        "--camera-scale",
        type=int,
        default=4,
        help="upscale factor of the camera-size copies (default 4)",
    )
    ap.add_argument("--stages", default=None, help="comma-separated stage keys (default: all)")
    args = ap.parse_args(argv)

    stages = build_stages(args)
    if args.stages:
        wanted = set(args.stages.split(","))
        unknown = wanted - {s.key for s in stages}
        if unknown:
            raise SystemExit(f"unknown stages {sorted(unknown)}; known: {[s.key for s in stages]}")
        stages = [s for s in stages if s.key in wanted]
    coco = load_images(args.limit)
    sets = {"coco": coco}
    eprint(
        f"{len(coco)} images ({sum(map(len, coco)) / 2**20:.1f} MiB of JPEG) from "
        f"{shared_data_dir() / 'coco_mini'}"
    )
    if any(s.images == "camera" for s in stages):
        sets["camera"] = camera_size(coco, args.camera_scale)
        with Image.open(io.BytesIO(sets["camera"][0])) as im:
            eprint(
                f"camera-size copies: x{args.camera_scale} (first: {im.width}x{im.height}),"
                f" {sum(map(len, sets['camera'])) / 2**20:.1f} MiB of JPEG"
            )

    # Rows repeated round-robin, so a burst of load on the shared machine hits all of them.
    best: dict[str, dict] = {}
    for rep in range(max(1, args.repeat)):
        for stage in stages:
            if rep > 0 and stage.key == "ocr":
                continue  # a minute or more per pass, and tesseract dominates it
            r = measure(stage, sets[stage.images])
            total = r["decode_s"] + r["stage_s"]
            eprint(
                f"  [{rep + 1}] {stage.name}: {len(coco) / total:.1f} images/s, "
                f"peak +{r['peak_mib']:.0f} MiB"
            )
            prev = best.get(stage.key)
            if prev is None or total < prev["decode_s"] + prev["stage_s"]:
                # Memory: the largest peak seen over the runs (it does not depend on load).
                r["peak_mib"] = max(r["peak_mib"], prev["peak_mib"] if prev else 0.0)
                best[stage.key] = r
            else:
                prev["peak_mib"] = max(prev["peak_mib"], r["peak_mib"])

    n = len(coco)
    rows = []
    for stage in stages:
        r = best[stage.key]
        total = r["decode_s"] + r["stage_s"]
        rows.append(
            [
                stage.name,
                n,
                f"{n / total:.1f}",
                f"{1000 * r['decode_s'] / n:.1f}",
                f"{1000 * r['stage_s'] / n:.1f}",
                f"{r['peak_mib']:.0f}",
                f"{r['outputs']} {stage.output}",
            ]
        )
    memory = (
        "peak RSS over the row's start, MiB (VmHWM; excludes tesseract's own process)"
        if all(best[s.key]["memory"] == "rss" for s in stages)
        else "tracemalloc peak, MiB (Python allocations only)"
    )
    print(
        f"# Image analyzers on coco_mini ({n} COCO JPEGs, in memory; camera-size: "
        f"x{args.camera_scale})\n"
    )
    print(
        f"Machine: {machine_info()}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (shared machine)\n"
    )
    print(
        md_table(
            ["stage", "images", "images/s", "decode ms/img", "stage ms/img", "peak mem", "outputs"],
            rows,
            align="lrrrrrl",
        )
    )
    print(
        f"\npeak mem: {memory}. images/s: best of {max(1, args.repeat)} runs "
        f"(OCR: 1 run), decode + stage together."
    )
    print()
    for plain, draft, label in (
        ("plain", "draft", "COCO as is"),
        ("plain_camera", "draft_camera", f"camera-size x{args.camera_scale}"),
    ):
        if plain in best and draft in best:
            p, d = best[plain], best[draft]
            speed = (p["decode_s"] + p["stage_s"]) / (d["decode_s"] + d["stage_s"])
            decode_only = p["decode_s"] / d["decode_s"]
            mem = d["peak_mib"] / p["peak_mib"] if p["peak_mib"] else float("nan")
            print(
                f"draft/plain, {label}: {speed:.2f}x images/s (decode alone "
                f"{decode_only:.2f}x), {mem:.2f}x peak memory"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

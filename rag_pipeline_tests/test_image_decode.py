"""Checked image decoding and stored thumbnails, on real images built with Pillow."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from rag_pipeline import errors
from rag_pipeline.analysis.analyzers import image_decode
from rag_pipeline.analysis.analyzers.image_decode import (
    DecodedImage,
    decode_image,
    draft_box,
    thumbnail_bytes,
    thumbnail_path,
    write_thumbnail,
)

BIG = 10**9
RED, BLUE, WHITE = (230, 20, 20), (20, 20, 230), (255, 255, 255)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    # Random pixels compress badly: a long entropy-coded stream to truncate.
    pixels = random.Random(seed).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), pixels)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def marked(width: int, height: int) -> Image.Image:
    """White, with a red block in the stored top-left corner and a blue one top-right."""
    im = Image.new("RGB", (width, height), WHITE)
    im.paste(RED, (0, 0, width // 4, height // 4))
    im.paste(BLUE, (width - width // 4, 0, width, height // 4))
    return im


def jpeg_with_orientation(im: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=92, exif=exif)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite IHDR's width/height (CRC fixed), so only the declared size is a lie."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))


@pytest.fixture
def loaded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The pixel size each decode_image call actually decoded (after draft)."""
    sizes: list[tuple[int, int]] = []
    real = image_decode.load_image

    def spy(im: Image.Image, declared: tuple[int, int] | None = None) -> None:
        real(im, declared)
        sizes.append(im.size)

    monkeypatch.setattr(image_decode, "load_image", spy)
    return sizes


# --------------------------------------------------------------------------------------------
# Size, draft and orientation


def test_jpeg_draft_decodes_at_reduced_scale_then_fits_target(loaded_sizes) -> None:
    data = encode(noise_image(2000, 1500), "JPEG", quality=85)
    d = decode_image(data, max_pixels=BIG, target_side=240)
    assert isinstance(d, DecodedImage)
    assert (d.width, d.height, d.format, d.orientation) == (2000, 1500, "JPEG", 1)
    assert d.image.mode == "RGB" and d.image.size == (240, 180)
    # libjpeg decoded at 1/8 scale (250x188), not the full 2000x1500.
    assert loaded_sizes == [(250, 188)]
    assert d.scale == pytest.approx(240 / 2000)


@pytest.mark.parametrize(
    ("size", "target"),
    [
        ((1000, 750), 384),
        ((1999, 1000), 384),
        ((4000, 300), 384),
        ((300, 4000), 384),
        ((640, 480), 384),
        ((800, 600), 100),
    ],
)
def test_draft_never_decodes_below_target(loaded_sizes, size, target) -> None:
    data = encode(Image.new("RGB", size, (90, 120, 150)), "JPEG")
    d = decode_image(data, max_pixels=BIG, target_side=target)
    ((lw, lh),) = loaded_sizes
    assert max(lw, lh) >= target  # quality is never lost to the draft
    assert lw <= size[0] and lh <= size[1]
    assert max(d.image.size) == target


def test_draft_box_keeps_aspect_and_long_side() -> None:
    assert draft_box(4000, 3000, 384) == (384, 288)
    assert draft_box(3000, 4000, 384) == (288, 384)
    assert draft_box(300, 200, 384) == (300, 200)  # already small: no reduction asked


def test_no_target_keeps_full_size_and_small_images_are_not_upscaled(loaded_sizes) -> None:
    data = encode(noise_image(320, 200), "JPEG")
    assert decode_image(data, max_pixels=BIG, target_side=None).image.size == (320, 200)
    assert decode_image(data, max_pixels=BIG, target_side=1000).image.size == (320, 200)
    assert loaded_sizes == [(320, 200), (320, 200)]


def test_png_is_resized_to_target() -> None:
    d = decode_image(encode(marked(900, 300), "PNG"), max_pixels=BIG, target_side=300)
    assert (d.width, d.height, d.format) == (900, 300, "PNG")
    assert d.image.size == (300, 100)


@pytest.mark.parametrize("target", [None, 300])
def test_exif_orientation_6_rotates_clockwise(target) -> None:
    # Stored 1200x800 landscape; orientation 6 = "rotate 90 CW to display": a portrait.
    d = decode_image(
        jpeg_with_orientation(marked(1200, 800), 6), max_pixels=BIG, target_side=target
    )
    assert d.orientation == 6
    assert (d.width, d.height) == (800, 1200)  # original size, upright
    w, h = d.image.size
    assert h > w and (target is None or h == target)
    # Stored top-left (red) is now top-right; stored top-right (blue) bottom-right.
    assert near(d.image.getpixel((w - 5, 5)), RED)
    assert near(d.image.getpixel((w - 5, h - 5)), BLUE)
    assert near(d.image.getpixel((5, 5)), WHITE)


def test_exif_orientation_8_rotates_counter_clockwise() -> None:
    d = decode_image(jpeg_with_orientation(marked(1200, 800), 8), max_pixels=BIG, target_side=300)
    assert d.orientation == 8 and (d.width, d.height) == (800, 1200)
    w, h = d.image.size
    assert (w, h) == (200, 300)
    # Stored top-left (red) is now bottom-left; stored top-right (blue) top-left.
    assert near(d.image.getpixel((5, h - 5)), RED)
    assert near(d.image.getpixel((5, 5)), BLUE)


def test_orientation_1_and_missing_exif_leave_pixels_as_stored() -> None:
    for data in (jpeg_with_orientation(marked(400, 200), 1), encode(marked(400, 200), "JPEG")):
        d = decode_image(data, max_pixels=BIG, target_side=None)
        assert d.orientation == 1 and d.image.size == (400, 200)
        assert near(d.image.getpixel((5, 5)), RED) and near(d.image.getpixel((395, 5)), BLUE)


# --------------------------------------------------------------------------------------------
# Bad input


def test_bomb_is_rejected_before_any_pixel_is_decoded(monkeypatch) -> None:
    def must_not_decode(im: Image.Image, declared: tuple[int, int] | None = None) -> None:
        raise AssertionError("pixels decoded for an image over the limit")

    monkeypatch.setattr(image_decode, "load_image", must_not_decode)
    small = encode(Image.new("RGB", (4, 4), RED), "PNG")
    with pytest.raises(errors.DecompressionBomb, match="3000x3000"):
        decode_image(patch_png_size(small, 3000, 3000), max_pixels=1_000_000, target_side=256)
    # Over Pillow's own limit even when ours is huge: still refused, still not decoded.
    with pytest.raises(errors.DecompressionBomb):
        decode_image(patch_png_size(small, 100_000, 100_000), max_pixels=10**12, target_side=256)
    big_jpeg = encode(Image.new("RGB", (2000, 1000), RED), "JPEG")
    with pytest.raises(errors.DecompressionBomb, match="2000x1000"):
        decode_image(big_jpeg, max_pixels=1_999_999, target_side=256)


def test_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (40, 25), RED), "PNG")
    assert decode_image(data, max_pixels=1000, target_side=None).image.size == (40, 25)


@pytest.mark.parametrize("target", [None, 128])
def test_truncated_and_corrupt_images_raise_corrupt_image(target) -> None:
    jpeg = encode(noise_image(512, 384), "JPEG", quality=90)
    with pytest.raises(errors.CorruptImage, match="512x384.*truncated"):
        decode_image(jpeg[: len(jpeg) // 2], max_pixels=BIG, target_side=target)
    png = encode(noise_image(64, 64), "PNG")
    with pytest.raises(errors.CorruptImage):
        decode_image(png[:-100], max_pixels=BIG, target_side=target)
    with pytest.raises(errors.CorruptImage, match="not a readable image"):
        decode_image(b"plain text, not an image", max_pixels=BIG, target_side=target)
    with pytest.raises(errors.CorruptImage):
        decode_image(b"\xff\xd8\xff\xe0garbage", max_pixels=BIG, target_side=target)
    with pytest.raises(errors.EmptyFile):
        decode_image(b"", max_pixels=BIG, target_side=target)


def test_truncation_fails_even_if_pillow_was_told_to_load_truncated(monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    jpeg = encode(noise_image(320, 240), "JPEG")
    with pytest.raises(errors.CorruptImage):
        decode_image(jpeg[:5000], max_pixels=BIG, target_side=64)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_formats_outside_the_safe_list_are_not_opened() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(errors.CorruptImage, match="not a readable image"):
        decode_image(eps, max_pixels=BIG, target_side=None)


# --------------------------------------------------------------------------------------------
# Pixel modes -> RGB


def _rgba_text_like() -> Image.Image:
    # Black strokes on a fully transparent background whose stored colour is also black:
    # dropping alpha would give an all-black picture.
    im = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    im.paste((0, 0, 0, 255), (5, 5, 15, 15))
    return im


def _palette_with_transparency() -> Image.Image:
    im = Image.new("P", (40, 20), 0)
    im.putpalette([0, 0, 0, 230, 20, 20] + [0] * (254 * 3))
    im.paste(1, (5, 5, 15, 15))
    im.info["transparency"] = 0
    return im


def _sixteen_bit_gray() -> Image.Image:
    arr = np.full((20, 40), 32768, dtype=np.uint16)
    arr[5:15, 5:15] = 65535
    return Image.fromarray(arr)


@pytest.mark.parametrize(
    ("name", "build", "fmt", "inside", "outside"),
    [
        ("cmyk_jpeg", lambda: Image.new("RGB", (40, 20), RED).convert("CMYK"), "JPEG", RED, RED),
        ("rgba_png", _rgba_text_like, "PNG", (0, 0, 0), WHITE),
        ("palette_transparent_png", _palette_with_transparency, "PNG", RED, WHITE),
        ("palette_gif", _palette_with_transparency, "GIF", RED, WHITE),
        ("la_png", lambda: _rgba_text_like().convert("LA"), "PNG", (0, 0, 0), WHITE),
        ("sixteen_bit_png", _sixteen_bit_gray, "PNG", WHITE, (128, 128, 128)),
        ("sixteen_bit_tiff", _sixteen_bit_gray, "TIFF", WHITE, (128, 128, 128)),
        (
            "bilevel_png",
            lambda: Image.new("RGB", (40, 20), WHITE).convert("1"),
            "PNG",
            WHITE,
            WHITE,
        ),
        ("rgba_webp", _rgba_text_like, "WEBP", (0, 0, 0), WHITE),
    ],
)
def test_every_mode_becomes_rgb(name, build, fmt, inside, outside) -> None:
    src = build()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(src, fmt, **kw)
    d = decode_image(data, max_pixels=BIG, target_side=None)
    assert d.image.mode == "RGB", name
    assert d.image.size == (40, 20)
    assert near(d.image.getpixel((10, 10)), inside, tol=12), (name, d.image.getpixel((10, 10)))
    assert near(d.image.getpixel((35, 17)), outside, tol=12), (name, d.image.getpixel((35, 17)))


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0..65535 in 256 steps
    d = decode_image(encode(Image.fromarray(arr), "PNG"), max_pixels=BIG, target_side=None)
    gray = np.asarray(d.image)[..., 0]
    assert gray.min() == 0 and gray.max() == 255
    assert int(np.median(gray)) in (127, 128)  # clipping would make nearly all pixels 255


# --------------------------------------------------------------------------------------------
# Thumbnails

ASSET = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"


def test_thumbnail_is_a_small_jpeg_without_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    data = encode(marked(1600, 900), "JPEG", exif=exif)
    d = decode_image(data, max_pixels=BIG, target_side=256)
    thumb = thumbnail_bytes(d, max_side=128)
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG" and im.size == (128, 72)
        assert not im.getexif() and b"SecretCam" not in thumb
        assert near(im.convert("RGB").getpixel((3, 3)), RED)


def test_thumbnail_is_content_addressed(tmp_path) -> None:
    path = write_thumbnail(tmp_path, ASSET, b"jpeg bytes")
    assert path == thumbnail_path(tmp_path, ASSET) == tmp_path / "ab" / f"{ASSET}.jpg"
    assert path.read_bytes() == b"jpeg bytes"
    with pytest.raises(ValueError, match="hex"):
        thumbnail_path(tmp_path, "../../etc/passwd")
    with pytest.raises(ValueError):
        write_thumbnail(tmp_path, ASSET.upper(), b"x")


def test_thumbnail_write_is_idempotent(tmp_path) -> None:
    path = write_thumbnail(tmp_path, ASSET, b"first")
    os.utime(path, (1_000_000, 1_000_000))
    inode = path.stat().st_ino
    assert write_thumbnail(tmp_path, ASSET, b"second") == path
    assert path.read_bytes() == b"first"  # not rewritten
    assert path.stat().st_ino == inode and path.stat().st_mtime == 1_000_000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_thumbnail_write_is_atomic(tmp_path, monkeypatch) -> None:
    def fail_replace(src, dst):
        # The temporary file is complete and in the target's folder when the rename happens.
        assert Path(src).parent == Path(dst).parent
        assert Path(src).read_bytes() == b"whole jpeg"
        raise OSError("disk went away")

    monkeypatch.setattr(image_decode.os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk went away"):
        write_thumbnail(tmp_path, ASSET, b"whole jpeg")
    target = thumbnail_path(tmp_path, ASSET)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind
    monkeypatch.undo()
    assert write_thumbnail(tmp_path, ASSET, b"whole jpeg").read_bytes() == b"whole jpeg"

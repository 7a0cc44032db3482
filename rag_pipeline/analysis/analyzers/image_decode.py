"""Checked, fast image decoding for the image analyzers, and the thumbnails serving shows.

One place opens untrusted image bytes (``open_image`` + ``load_image``; ``decode_image`` for
pixels), so every analyzer gets the same safety rules:

* Only a fixed list of raster formats is opened: Pillow would otherwise hand EPS files to
  Ghostscript.
* The declared pixel count is checked before any pixel is decoded, against ``max_pixels``
  and against Pillow's own ``MAX_IMAGE_PIXELS`` (whose warning is turned into an error), so
  the effective limit is the smaller of the two.
* A truncated file fails (``LOAD_TRUNCATED_IMAGES`` is forced off for the call) instead of
  yielding half a picture.

Speed: analyzers want a few hundred pixels a side, not the camera's 12 megapixels. For JPEG,
``draft`` makes libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling), which skips most of
the inverse-DCT and colour work; the whole entropy-coded stream is still read, so truncation
and corruption are still detected.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from rag_pipeline.errors import CorruptImage, DecompressionBomb, EmptyFile

# Formats we open. (Multi-picture JPEGs from many cameras open through "JPEG" and then
# report themselves as "MPO".)
SAFE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
JPEG_FORMATS = ("JPEG", "MPO")

THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 85

_ORIENTATION = 0x0112
# Orientations 5-8 are rotated by 90 degrees: width and height swap.
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# Background for transparent pixels: dropping alpha would leave whatever colour the
# transparent pixels happen to store (often black, which hides black text).
_BACKGROUND = (255, 255, 255)
_ASSET_ID = re.compile(r"^[0-9a-f]{16,128}$")


@dataclass
class DecodedImage:
    """RGB pixels, upright (EXIF orientation applied), at most ``target_side`` a side.

    ``width``/``height`` are the original's (full resolution, after orientation), for
    reporting and for mapping coordinates found on ``image`` back to the original.
    """

    image: Image.Image
    width: int
    height: int
    format: str
    orientation: int  # EXIF orientation as found (1 = upright or none)

    @property
    def scale(self) -> float:
        """``image`` pixels per original pixel."""
        return self.image.width / self.width


@contextlib.contextmanager
def strict_pillow() -> Iterator[None]:
    """Truncated images must fail, and the decompression-bomb warning must be an error.

    Both are Pillow process globals; they are set for the call and restored afterwards.
    (``warnings.catch_warnings`` is not thread-safe: run one analysis per thread of a
    process pool, or none concurrently, as the workers do.)
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def open_image(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    """Open (headers only) and check the declared size; no pixel is decoded yet.

    Call inside ``strict_pillow()``. Returns the image and its declared width and height.
    """
    if not data:
        raise EmptyFile("image file is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(f"declared image size is over Pillow's limit: {exc}") from exc
    except MemoryError:
        raise  # not a property of the file: let the worker retry or fail loudly
    except UnidentifiedImageError as exc:
        raise CorruptImage(
            f"not a readable image in any supported format ({', '.join(SAFE_FORMATS)})"
        ) from exc
    except Exception as exc:  # plugins raise SyntaxError, ValueError, struct.error, OSError
        raise CorruptImage(f"bad image header: {type(exc).__name__}: {exc}") from exc

    width, height = im.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"{im.format} image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise DecompressionBomb(
            f"{im.format} image declares {width}x{height} = "
            f"{width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    return im, width, height


def load_image(im: Image.Image, declared: tuple[int, int] | None = None) -> None:
    """Decode the pixels of an ``open_image`` result (after any ``draft``), mapping errors.

    ``declared``: the size ``open_image`` returned, for the error message (a draft has
    already shrunk ``im.size``).
    """
    width, height = declared or im.size
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(str(exc)) from exc
    except MemoryError:
        raise
    except Exception as exc:  # OSError "image file is truncated", "broken data stream" ...
        raise CorruptImage(
            f"cannot decode {im.format} {width}x{height}: {type(exc).__name__}: {exc}"
        ) from exc


def draft_box(width: int, height: int, target_side: int) -> tuple[int, int]:
    """The size to ask ``draft`` for so that the decoded long side stays >= target_side.

    ``draft`` picks the largest DCT scale that keeps *both* sides at or above the request;
    asking for the aspect-correct box (not target x target) lets a landscape photo shrink as
    far as its long side allows.
    """
    long_side = max(width, height)
    if long_side <= target_side:
        return width, height
    return (
        max(1, math.ceil(width * target_side / long_side)),
        max(1, math.ceil(height * target_side / long_side)),
    )


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # broken EXIF is not a broken image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """I;16 / I / F -> L. Pillow's own convert clips at 255, turning most pixels white."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        arr = arr.astype(np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        if im.mode == "F":
            lo = float(arr.min()) if arr.size else 0.0
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        elif hi > 255:  # 32-bit integer pixels: 16-bit data (PNG, TIFF) or wider
            arr = arr / (256.0 if hi <= 65535 else hi / 255.0)
        arr8 = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr8, mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited on white, 16-bit scaled, CMYK converted."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _sixteen_bit_to_l(im).convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, _BACKGROUND)
        background.paste(im, mask=im.getchannel("A"))
        return background
    try:
        return im.convert("RGB")
    except ValueError as exc:  # LAB, HSV ...: Pillow has no direct conversion
        raise CorruptImage(f"unsupported pixel mode {im.mode}: {exc}") from exc


def fit_within(im: Image.Image, side: int) -> Image.Image:
    """Downscale so the long side is at most ``side`` (never upscales)."""
    if max(im.size) <= side:
        return im
    scale = side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # reducing_gap: a cheap box reduction first, then Lanczos over the last factor of 3;
    # indistinguishable from full Lanczos at these sizes, several times faster.
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def decode_image(data: bytes, *, max_pixels: int, target_side: int | None) -> DecodedImage:
    """Decode to upright RGB, the long side at most ``target_side`` (None: full size).

    JPEGs are decoded at reduced scale (never below ``target_side``) by libjpeg itself.
    Raises EmptyFile, CorruptImage or DecompressionBomb.
    """
    if target_side is not None and target_side < 1:
        raise ValueError(f"target_side must be positive, got {target_side}")
    with strict_pillow():
        im, width, height = open_image(data, max_pixels)
        try:
            fmt = "JPEG" if im.format == "MPO" else (im.format or "unknown")
            if target_side is not None and im.format in JPEG_FORMATS:
                im.draft("RGB", draft_box(width, height, target_side))
            load_image(im, (width, height))
            orientation = _orientation(im)
            pixels: Image.Image = im
            if orientation != 1:
                pixels = ImageOps.exif_transpose(im)
            rgb = to_rgb(pixels)
            if target_side is not None:
                rgb = fit_within(rgb, target_side)
            if rgb is im:  # detach from the file object, which is closed below
                rgb = im.copy()
        except (CorruptImage, DecompressionBomb, EmptyFile, MemoryError):
            raise
        except Exception as exc:  # a transpose or convert on pixels the decoder accepted
            raise CorruptImage(
                f"cannot convert {im.format} {im.mode} image: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            im.close()
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return DecodedImage(image=rgb, width=width, height=height, format=fmt, orientation=orientation)


# --------------------------------------------------------------------------------------------
# Thumbnails


def thumbnail_bytes(decoded: DecodedImage, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of at most ``max_side`` a side, without metadata (EXIF/GPS never leak)."""
    im = fit_within(decoded.image, max_side)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=THUMBNAIL_QUALITY)
    return buf.getvalue()


def thumbnail_path(thumbs_dir: Path, asset_id: str) -> Path:
    """``thumbs_dir/<asset_id[:2]>/<asset_id>.jpg``: one file per content hash."""
    if not _ASSET_ID.fullmatch(asset_id):
        # The id becomes a path: anything but lowercase hex could escape thumbs_dir.
        raise ValueError(f"asset_id must be a lowercase hex digest, got {asset_id!r}")
    return Path(thumbs_dir) / asset_id[:2] / f"{asset_id}.jpg"


def write_thumbnail(thumbs_dir: Path, asset_id: str, data: bytes) -> Path:
    """Store a thumbnail under its asset id; a file already there is kept as it is.

    Content-addressed, so an existing file already holds these bytes (or the same picture
    from an earlier run); skipping it keeps mtimes and readers undisturbed. The write is
    atomic (temporary file in the same folder, then ``os.replace``): readers never see half
    a JPEG, and concurrent writers of the same id both end with a whole file.
    """
    target = thumbnail_path(thumbs_dir, asset_id)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{asset_id[:12]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target

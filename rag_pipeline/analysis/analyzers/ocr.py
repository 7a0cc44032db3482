"""ocr analyzer: text visible in an image (signs, posters, screenshots) -> ``ocr`` evidence.

The engine is the ``tesseract`` command-line program (Debian: ``tesseract-ocr`` and
``tesseract-ocr-eng``), run as a subprocess: no Python binding to build, and a crash or a
hang on a hostile image costs one subprocess, not the worker. The image goes in on stdin as
a grayscale PNG; word boxes and confidences come back as TSV, grouped here into lines, one
``EvidenceText(kind="ocr")`` per line.

Most photos hold no text, and tesseract, asked to find some, reads texture as letters ("ee",
"|", "ata", "Why"). Those must not reach the index, so words below ``min_word_confidence``
are dropped and a line survives only if it is confident as a whole (a lone word more so) and
still looks like language: enough alphanumeric characters, mostly letters or digits, and at
least one token of two or more letters or digits. On coco_mini (239 COCO photos) 15 images
keep any line, all of them photos of signs, scoreboards, buses or posters.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.analysis.analyzers.image_decode import DecodedImage, decode_image
from rag_pipeline.contracts import EvidenceText, ModelSpec
from rag_pipeline.errors import OcrFailed, OcrUnavailable

TESSERACT = "tesseract"
INSTALL_HINT = (
    "install the Debian packages tesseract-ocr and tesseract-ocr-eng "
    "(apt-get install -y tesseract-ocr tesseract-ocr-eng)"
)

_WORD_LEVEL = 5
_LANG = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
_TESSDATA_LINE = re.compile(r'"([^"]+)"')


class OcrConfig(BaseModel):
    """How to run tesseract and what to keep of its output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # tesseract language(s), "eng" or "eng+deu"; each needs its traineddata installed.
    lang: str = Field(default="eng", pattern=_LANG.pattern)
    # Page segmentation mode: 11 (sparse text, any order) finds the scattered words of signs
    # and posters that 3 (one page of columns) can skip.
    psm: int = Field(default=11, ge=0, le=13)
    # Words below this tesseract confidence (0-100) are dropped: texture reads as words
    # of confidence 0-50, printed text as 80-96.
    min_word_confidence: float = Field(default=60.0, ge=0.0, le=100.0)
    # A line's mean word confidence must reach this, and a one-word line the higher bar:
    # on COCO photos the noise that passes the word filter is short lone words ("ata",
    # "Why", "Yee") at 60-88, real sign text is 80-97.
    min_line_confidence: float = Field(default=80.0, ge=0.0, le=100.0)
    min_single_word_confidence: float = Field(default=90.0, ge=0.0, le=100.0)
    # A one-word line of letters needs this many of them: clutter (lines, foliage, edges)
    # reads as short capitals ("INS", "NAR", "NSS") at up to 90+. Numbers ("180") are exempt.
    min_single_word_letters: int = Field(default=4, ge=1)
    # A line needs this many letters/digits in all.
    min_line_chars: int = Field(default=3, ge=1)
    # ... and this share of its non-space characters must be letters or digits.
    min_alnum_share: float = Field(default=0.6, ge=0.0, le=1.0)
    # Long side of the decoded image handed to the analyzer (JPEG draft decode).
    max_side: int = Field(default=2048, ge=64)
    # Images whose long side is shorter are upscaled to it first: tesseract reads best at an
    # x-height of 20-30 px, and text in a 640 px photo is usually smaller than that.
    upscale_to: int = Field(default=1280, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)


@dataclass(frozen=True)
class TesseractInfo:
    """What identifies the OCR model: the program's version and its language data."""

    path: str
    version: str  # "5.3.0"
    languages: tuple[str, ...]  # installed traineddata, e.g. ("eng", "osd")
    tessdata_dir: str | None

    def weights_checksum(self, lang: str) -> str:
        """sha256 over the traineddata files of ``lang`` ("eng+deu": both, in order)."""
        if not self.tessdata_dir:
            return "none"
        h = hashlib.sha256()
        for part in lang.split("+"):
            h.update(_file_sha256(Path(self.tessdata_dir) / f"{part}.traineddata").encode())
        return h.hexdigest()

    def model_spec(self, lang: str = "eng") -> ModelSpec:
        return ModelSpec(
            backend="builtin",
            model_id="tesseract",
            revision=self.version,
            weights_checksum=self.weights_checksum(lang),
        )


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tesseract_path() -> str:
    path = shutil.which(TESSERACT)
    if path is None:
        raise OcrUnavailable(f"the tesseract program is not on PATH: {INSTALL_HINT}")
    return path


def _env() -> dict[str, str]:
    # One thread per tesseract: workers already run several analyses side by side, and
    # tesseract's OpenMP threads only contend with them (it is faster single-threaded then).
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


@functools.lru_cache(maxsize=4)
def _probe(path: str) -> TesseractInfo:
    try:
        ver = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, env=_env()
        )
        langs = subprocess.run(
            [path, "--list-langs"], capture_output=True, text=True, timeout=30, env=_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailable(f"cannot run {path}: {exc}; {INSTALL_HINT}") from exc
    # tesseract 4 printed the version on stderr, 5 on stdout.
    first = (ver.stdout or ver.stderr).strip().splitlines()
    m = re.match(r"tesseract\s+v?(\S+)", first[0]) if first else None
    if ver.returncode != 0 or m is None:
        raise OcrUnavailable(
            f"{path} --version failed ({ver.returncode}): "
            f"{(ver.stderr or ver.stdout).strip()[:300]}; {INSTALL_HINT}"
        )
    lines = (langs.stdout + langs.stderr).strip().splitlines()
    tessdata = None
    if lines and lines[0].startswith("List of available languages"):
        found = _TESSDATA_LINE.search(lines[0])
        tessdata = found.group(1) if found else None
        lines = lines[1:]
    return TesseractInfo(
        path=path,
        version=m.group(1),
        languages=tuple(sorted(s.strip() for s in lines if s.strip())),
        tessdata_dir=tessdata,
    )


def tesseract_spec() -> TesseractInfo:
    """The installed tesseract's version and languages; raises OcrUnavailable without it."""
    return _probe(_tesseract_path())


def ocr_model_spec(config: OcrConfig) -> tuple[ModelSpec, str | None]:
    """(ModelSpec for the tasks, None) or, when OCR cannot run here, (a placeholder spec,
    the reason). The placeholder's revision is "unavailable", so once tesseract is installed
    the real version gives new tasks."""
    try:
        info = tesseract_spec()
        _check_languages(info, config.lang)
        return info.model_spec(config.lang), None
    except OcrUnavailable as exc:
        return ModelSpec(backend="builtin", model_id="tesseract", revision="unavailable"), str(exc)


def _check_languages(info: TesseractInfo, lang: str) -> None:
    missing = [p for p in lang.split("+") if p not in info.languages]
    if missing:
        raise OcrUnavailable(
            f"tesseract has no language data for {', '.join(missing)} (installed: "
            f"{', '.join(info.languages) or 'none'}): install tesseract-ocr-"
            f"{missing[0].lower()}"
        )


# --------------------------------------------------------------------------------------------
# Running tesseract


def prepare(image: Image.Image, config: OcrConfig) -> Image.Image:
    """Grayscale, upscaled to ``upscale_to`` (at most 4x) or down to ``max_side``."""
    gray = image.convert("L")
    long_side = max(gray.size)
    if config.upscale_to and long_side < config.upscale_to:
        factor = min(4.0, config.upscale_to / long_side)
        size = (round(gray.width * factor), round(gray.height * factor))
        gray = gray.resize(size, Image.Resampling.BICUBIC)
    elif long_side > config.max_side:
        factor = config.max_side / long_side
        size = (max(1, round(gray.width * factor)), max(1, round(gray.height * factor)))
        gray = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return gray


def run_tesseract_tsv(image: Image.Image, config: OcrConfig) -> str:
    """tesseract's TSV output for ``image`` (used as is: call ``prepare`` first)."""
    path = _tesseract_path()
    buf = io.BytesIO()
    # compress_level=1: the PNG only crosses a pipe; tesseract's own time dominates anyway.
    image.save(buf, "PNG", compress_level=1)
    cmd = [
        path,
        "stdin",
        "stdout",
        "-l",
        config.lang,
        "--psm",
        str(config.psm),
        # Pixel density is unknown (the PNG declares none); 300 silences the warning and
        # is what tesseract's size heuristics are tuned for.
        "--dpi",
        "300",
        "tsv",
    ]
    try:
        proc = subprocess.run(
            cmd, input=buf.getvalue(), capture_output=True, timeout=config.timeout_s, env=_env()
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrFailed(
            f"tesseract ran past {config.timeout_s:g}s on a {image.width}x{image.height} image"
        ) from exc
    except OSError as exc:  # removed between the PATH lookup and the call, not executable
        raise OcrUnavailable(f"cannot run {path}: {exc}; {INSTALL_HINT}") from exc
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "Failed loading language" in err or "Error opening data file" in err:
            raise OcrUnavailable(
                f"tesseract has no language data for {config.lang!r}: "
                f"{err[:300]}; install tesseract-ocr-{config.lang.split('+')[0]}"
            )
        raise OcrFailed(f"tesseract exited with {proc.returncode}: {err[:500]}")
    return proc.stdout.decode("utf-8", "replace")


@dataclass
class Word:
    block: int
    par: int
    line: int
    left: int
    top: int
    width: int
    height: int
    conf: float
    text: str


def parse_tsv(tsv: str) -> list[Word]:
    """Word rows (level 5) of tesseract's TSV, in reading order; empty words skipped."""
    out: list[Word] = []
    # QUOTE_NONE: a word may be a lone '"'; tesseract never quotes fields.
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        try:
            if int(row["level"]) != _WORD_LEVEL:
                continue
            text = (row.get("text") or "").strip()
            if not text:
                continue
            out.append(
                Word(
                    block=int(row["block_num"]),
                    par=int(row["par_num"]),
                    line=int(row["line_num"]),
                    left=int(row["left"]),
                    top=int(row["top"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    conf=float(row["conf"]),
                    text=text,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a malformed row loses itself, not the page
    return out


def _is_token(text: str) -> bool:
    """Two or more letters/digits: "AM", "10", "Main" -- not "|", "a", "—"."""
    return sum(c.isalnum() for c in text) >= 2


def _keep_line(words: list[Word], config: OcrConfig) -> bool:
    conf = sum(w.conf for w in words) / len(words)
    if len(words) == 1:
        token = words[0].text
        if conf < config.min_single_word_confidence:
            return False
        if (
            not any(c.isdigit() for c in token)
            and sum(c.isalpha() for c in token) < config.min_single_word_letters
        ):
            return False
    elif conf < config.min_line_confidence:
        return False
    chars = "".join(w.text for w in words)
    alnum = sum(c.isalnum() for c in chars)
    if alnum < config.min_line_chars or alnum < config.min_alnum_share * len(chars):
        return False
    return any(_is_token(w.text) for w in words)


def words_to_evidence(
    words: list[Word], config: OcrConfig, *, scale: float = 1.0
) -> list[EvidenceText]:
    """Group confident words into lines; one ``ocr`` EvidenceText per line that reads as text.

    ``scale`` maps OCR-input pixels to the coordinates the bbox is reported in.
    """
    lines: dict[tuple[int, int, int], list[Word]] = {}
    for w in words:
        if w.conf >= config.min_word_confidence:
            lines.setdefault((w.block, w.par, w.line), []).append(w)
    out: list[EvidenceText] = []
    for (block, par, line), ws in lines.items():  # dicts keep tesseract's reading order
        if not _keep_line(ws, config):
            continue
        x0 = min(w.left for w in ws)
        y0 = min(w.top for w in ws)
        x1 = max(w.left + w.width for w in ws)
        y1 = max(w.top + w.height for w in ws)
        bbox = [
            round(x0 * scale),
            round(y0 * scale),
            round((x1 - x0) * scale),
            round((y1 - y0) * scale),
        ]
        conf = sum(w.conf for w in ws) / len(ws) / 100.0
        locator: dict[str, Any] = {
            "block": block,
            "par": par,
            "line": line,
            "bbox": bbox,
            "words": len(ws),
        }
        out.append(
            EvidenceText(
                kind="ocr",
                ordinal=len(out),
                text=" ".join(w.text for w in ws),
                confidence=min(1.0, max(0.0, conf)),
                locator=locator,
            )
        )
    return out


def ocr_image(
    image: Image.Image | DecodedImage,
    config: OcrConfig | None = None,
    *,
    original_size: tuple[int, int] | None = None,
) -> list[EvidenceText]:
    """OCR lines of an image; ``[]`` when it holds no readable text.

    Boxes are in the pixels of ``original_size`` when given (or of the original, for a
    DecodedImage), else of ``image``. Raises OcrUnavailable (no tesseract or language data:
    retry after installing) or OcrFailed (tesseract crashed or timed out).
    """
    config = config or OcrConfig()
    if isinstance(image, DecodedImage):
        original_size = original_size or (image.width, image.height)
        image = image.image
    prepared = prepare(image, config)
    base_width = original_size[0] if original_size else image.width
    words = parse_tsv(run_tesseract_tsv(prepared, config))
    return words_to_evidence(words, config, scale=base_width / prepared.width)


def ocr_bytes(
    data: bytes, *, max_pixels: int, config: OcrConfig | None = None
) -> list[EvidenceText]:
    """Decode (checked, JPEG draft to ``config.max_side``) and OCR an image file's bytes.

    Raises EmptyFile, CorruptImage, DecompressionBomb, OcrUnavailable, OcrFailed.
    """
    config = config or OcrConfig()
    _tesseract_path()  # fail before decoding when OCR cannot run at all
    decoded = decode_image(data, max_pixels=max_pixels, target_side=config.max_side)
    try:
        return ocr_image(decoded, config)
    finally:
        decoded.image.close()

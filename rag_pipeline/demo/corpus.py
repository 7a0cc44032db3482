"""A small, deterministic demo corpus with a graded gold query set.

``generate_demo_corpus(corpus_dir, gold_path)`` writes about forty files (Markdown, plain
text, HTML and PDF documents, JPEG and PNG images with EXIF/XMP/sidecar metadata) and a
JSONL gold file of queries with graded relevance judgements. Everything is generated
locally from the package data in ``rag_pipeline/demo/data/``, read through
``importlib.resources`` (so it works from an installed wheel, even a zipped one):

* ``documents/<corpus path>``: the Markdown, text and HTML documents, written as they are;
* ``documents/<corpus path>.yaml`` for ``*.pdf`` (``PdfSpec``): title, description, author
  and sections, laid out and rendered as a PDF here;
* ``images.yaml`` (``ImageSpec``): per image its size, metadata, painted text, and which
  drawing function below draws it with which seed;
* ``gold.jsonl``: the gold queries, in the extended JSONL format of
  ``rag_pipeline.goldset_schema`` (the evals' format), ``#`` comment lines allowed.

Determinism: the same call writes the same bytes every time (fixed dates, seeded
randomness, fixed file mtimes), so a snapshot built from the corpus is reproducible.

This module deliberately does not import Dagster.
"""

from __future__ import annotations

import json
import math
import os
import random
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape as _xml_escape

import yaml
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag_pipeline.goldset_schema import (
    GoldQuery,
    QAQuestion,
    parse_gold_jsonl,
    parse_qa_jsonl,
    write_gold_jsonl,
)

__all__ = [
    "GOLD_FILENAME",
    "HTML_SCRIPT_SENTINEL",
    "DemoCorpus",
    "DemoDocument",
    "ImageSpec",
    "PdfSpec",
    "generate_demo_corpus",
    "load_documents",
    "load_gold",
    "load_golden_qa",
    "load_images",
    "read_gold",
]

GOLD_FILENAME = "gold.jsonl"

#: A token that appears only inside ``<script>`` elements of the HTML documents (in
#: ``data/documents``). A search for it must return nothing: scripts are not content.
HTML_SCRIPT_SENTINEL = "zqxjv_script_sentinel"

#: Every file gets a fixed mtime: this base (2024-01-15 09:00:00 UTC) plus one hour per
#: file, in sorted path order.
_MTIME_BASE = 1705309200

_PACKAGE = "rag_pipeline.demo"
_DEFAULT_AUTHOR = "rag_pipeline demo corpus"
#: Document formats written as they are in data/documents.
_VERBATIM_SUFFIXES = (".md", ".txt", ".html")
_PDF_SPEC_SUFFIX = ".pdf.yaml"


class DemoCorpus(BaseModel):
    """What ``generate_demo_corpus`` wrote."""

    corpus_dir: Path
    gold_path: Path
    n_documents: int
    n_images: int
    n_queries: int
    files: list[str]  # every file written under corpus_dir, relative POSIX paths, sorted


def read_gold(path: Path) -> list[GoldQuery]:
    """Read a gold JSONL file written by ``generate_demo_corpus``."""
    return parse_gold_jsonl(Path(path).read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------------------------------
# Package data
# ---------------------------------------------------------------------------------------


def _data() -> Traversable:
    return resources.files(_PACKAGE) / "data"


def _source(rel: str) -> str:
    """How errors name a data file."""
    return f"{_PACKAGE}:data/{rel}"


def _walk(node: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """(relative path, file) under ``node``, sorted; dot files are skipped."""
    for child in sorted(node.iterdir(), key=lambda t: t.name):
        if child.name.startswith("."):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk(child, rel + "/")
        else:
            yield rel, child


def _load_yaml(node: Traversable, rel: str) -> Any:
    try:
        return yaml.safe_load(node.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{_source(rel)}: invalid YAML: {exc}") from None


def _reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
    )


def _norm(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------

Paragraph = str | tuple[str, ...]  # a tuple is a bulleted list


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PdfSection(_Spec):
    heading: str | None = None
    paragraphs: tuple[Paragraph, ...] = Field(min_length=1)
    new_page: bool = False  # start this section on a new page

    @field_validator("paragraphs")
    @classmethod
    def _normalize(cls, v: tuple[Paragraph, ...]) -> tuple[Paragraph, ...]:
        return tuple(tuple(_norm(i) for i in p) if isinstance(p, tuple) else _norm(p) for p in v)


class PdfSpec(_Spec):
    """A PDF document: laid out in pages of wrapped Helvetica lines (ASCII text only)."""

    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    author: str = _DEFAULT_AUTHOR
    sections: tuple[PdfSection, ...] = Field(min_length=1)

    @field_validator("description")
    @classmethod
    def _normalize(cls, v: str) -> str:
        return _norm(v)


@dataclass(frozen=True)
class DemoDocument:
    """One document of the corpus: ``content`` written as it is, or ``pdf`` rendered."""

    path: str  # where it is written, relative to the corpus folder
    content: bytes | None = None
    pdf: PdfSpec | None = None

    def render(self) -> bytes:
        if self.pdf is not None:
            return _pdf_bytes(self.pdf, self.path)
        assert self.content is not None
        return self.content


def load_documents() -> list[DemoDocument]:
    """The documents in ``data/documents``, sorted by corpus path."""
    docs: list[DemoDocument] = []
    for rel, node in _walk(_data() / "documents"):
        src = f"documents/{rel}"
        if rel.endswith(_PDF_SPEC_SUFFIX):
            try:
                spec = PdfSpec.model_validate(_load_yaml(node, src))
            except ValidationError as exc:
                raise ValueError(f"{_source(src)}: {_reason(exc)}") from None
            docs.append(DemoDocument(path=rel.removesuffix(".yaml"), pdf=spec))
        elif rel.endswith(_VERBATIM_SUFFIXES):
            docs.append(DemoDocument(path=rel, content=node.read_bytes()))
        else:
            raise ValueError(
                f"{_source(src)}: not a demo document (expected "
                f"{', '.join(_VERBATIM_SUFFIXES)} or {_PDF_SPEC_SUFFIX})"
            )
    docs.sort(key=lambda d: d.path)
    if not docs:
        raise ValueError(f"{_source('documents')}: no documents")
    return docs


# ----------------------------------------------------------------------------- PDF


_PDF_DATE = "D:20240115090000Z"
_PAGE_W, _PAGE_H = 612, 792
_MARGIN = 72
_WRAP = 84  # characters per body line at 11 pt Helvetica in a 468 pt column


def _pdf_string(text: str) -> str:
    if not text.isascii():
        raise ValueError(f"PDF text must be ASCII: {text!r}")
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _pdf_pages(doc: PdfSpec, path: str) -> list[list[tuple[str, int, float, str]]]:
    """Lay out a document as pages of (font, size, y, text) lines."""
    pages: list[list[tuple[str, int, float, str]]] = []
    page: list[tuple[str, int, float, str]] = []
    y = float(_PAGE_H - _MARGIN)

    def emit(font: str, size: int, text: str, advance: float) -> None:
        nonlocal y
        if y - advance < _MARGIN:
            raise ValueError(f"{path}: page {len(pages) + 1} overflows; add a page break")
        y -= advance
        page.append((font, size, y, text))

    emit("F2", 18, doc.title, 18)
    y -= 12
    for i, sec in enumerate(doc.sections):
        if sec.new_page and i > 0:
            pages.append(page)
            page = []
            y = float(_PAGE_H - _MARGIN)
        if sec.heading:
            y -= 6
            emit("F2", 13, sec.heading, 18)
            y -= 2
        for p in sec.paragraphs:
            items = [f"- {item}" for item in p] if isinstance(p, tuple) else [p]
            for item in items:
                for line in textwrap.wrap(item, width=_WRAP):
                    emit("F1", 11, line, 14)
            y -= 8
    pages.append(page)
    return pages


def _pdf_bytes(doc: PdfSpec, path: str) -> bytes:
    """A minimal, valid PDF 1.4: Type1 Helvetica fonts, one content stream per page,
    a correct xref table and an /Info dictionary."""
    pages = _pdf_pages(doc, path)
    n_pages = len(pages)
    # Object numbers: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then (page, content) pairs.
    page_ids = [6 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (
            "<< /Type /Pages /Kids ["
            + " ".join(f"{p} 0 R" for p in page_ids)
            + f"] /Count {n_pages} >>"
        ).encode("ascii"),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold"
        b" /Encoding /WinAnsiEncoding >>",
        5: (
            f"<< /Title {_pdf_string(doc.title)} /Author {_pdf_string(doc.author)}"
            f" /Subject {_pdf_string(doc.description)} /Creator (rag_pipeline demo_corpus)"
            f" /Producer (rag_pipeline demo_corpus) /CreationDate ({_PDF_DATE})"
            f" /ModDate ({_PDF_DATE}) >>"
        ).encode("ascii"),
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        content = "".join(
            f"BT /{font} {size} Tf {_MARGIN} {y:.0f} Td {_pdf_string(text)} Tj ET\n"
            for font, size, y, text in lines
        ).encode("ascii")
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}]"
            f" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode("ascii")
        objects[page_id + 1] = (
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
        )

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        size,
        xref_at,
    )
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

RGB = tuple[int, int, int]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _vgradient(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], top: RGB, bottom: RGB
) -> None:
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0 - 1)
    for y in range(y0, y1):
        t = (y - y0) / span
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(x0, y), (x1 - 1, y)], fill=color)


def _text_centered(
    draw: ImageDraw.ImageDraw, cx: int, cy: int, text: str, size: int, max_width: int, fill: RGB
) -> None:
    """Large, high-contrast text (for OCR), shrunk until it fits max_width."""
    while True:
        font = _font(size)
        left, _, right, _ = draw.textbbox((0, 0), text, font=font)
        if right - left <= max_width or size <= 16:
            break
        size -= 2
    draw.text((cx, cy), text, font=font, fill=fill, anchor="mm")


def _draw_lighthouse(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 300), (58, 40, 110), (250, 145, 75))
    _vgradient(d, (0, 300, w, h), (60, 60, 100), (20, 25, 50))
    for _ in range(40):  # first stars
        x, y = rng.randrange(w), rng.randrange(110)
        d.point((x, y), fill=(255, 250, 230))
    d.ellipse((440, 262, 500, 322), fill=(255, 205, 120))
    _vgradient(d, (0, 300, w, 302), (250, 170, 100), (250, 170, 100))
    for _ in range(60):  # sparkle on the sea
        x, y = rng.randrange(w), rng.randrange(305, h)
        d.line([(x, y), (x + rng.randrange(4, 14), y)], fill=(110, 100, 140))
    # rocks
    d.polygon(
        [(0, h), (0, 330), (70, 306), (160, 298), (255, 318), (330, 356), (372, h)],
        fill=(56, 50, 56),
    )
    d.polygon([(240, h), (300, 380), (380, 392), (450, h)], fill=(40, 36, 42))
    # red tower with a white band
    d.polygon([(168, 308), (252, 308), (236, 150), (184, 150)], fill=(198, 30, 36))
    d.polygon([(177, 222), (243, 222), (240, 196), (180, 196)], fill=(245, 245, 240))
    d.rectangle((176, 140, 244, 150), fill=(40, 30, 30))
    d.rectangle((190, 104, 230, 140), fill=(255, 232, 140))
    d.polygon([(184, 104), (236, 104), (210, 78)], fill=(70, 20, 20))
    # beam of light
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).polygon([(230, 122), (w, 60), (w, 180)], fill=(255, 240, 180, 90))
    im.paste(Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB"))


def _draw_sourdough(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (236, 230, 220), (210, 200, 186))
    d.rounded_rectangle((50, 230, w - 50, 420), radius=18, fill=(150, 100, 55))
    for _ in range(24):  # wood grain
        y = rng.randrange(240, 412)
        d.line([(60, y), (w - 60, y + rng.randrange(-4, 5))], fill=(128, 84, 44), width=2)
    d.ellipse((150, 120, 450, 340), fill=(176, 110, 50))
    d.ellipse((172, 134, 428, 306), fill=(205, 145, 78))
    for box in ((190, 150, 410, 330), (210, 140, 390, 300)):
        d.arc(box, start=205, end=335, fill=(242, 224, 186), width=7)
    for _ in range(260):  # flour
        x, y = rng.randrange(180, 420), rng.randrange(135, 300)
        if ((x - 300) / 128) ** 2 + ((y - 220) / 86) ** 2 < 1:
            d.point((x, y), fill=(250, 246, 236))


def _draw_beehive(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 270), (120, 175, 230), (200, 225, 245))
    _vgradient(d, (0, 270, w, h), (110, 170, 70), (60, 120, 40))
    for _ in range(220):  # wildflowers
        x, y = rng.randrange(w), rng.randrange(280, h)
        r = rng.randrange(2, 5)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(250, 215, 40))
    d.rectangle((240, 420, 400, 440), fill=(110, 75, 40))  # stand
    for box in ((230, 330, 410, 420), (230, 252, 410, 330), (236, 196, 404, 252)):
        d.rectangle(box, fill=(246, 242, 228), outline=(150, 140, 120), width=2)
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        d.rectangle((cx - 24, cy - 5, cx + 24, cy + 5), fill=(120, 110, 95))
    d.rectangle((222, 178, 418, 196), fill=(120, 125, 130))  # roof
    d.rectangle((290, 408, 350, 416), fill=(30, 25, 20))  # entrance
    for _ in range(30):  # bees
        x, y = rng.randrange(200, 460), rng.randrange(150, 420)
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(40, 30, 10))


def _draw_solar_roof(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (70, 140, 220), (180, 215, 245))

    def eave(x: float) -> float:
        return 230 - 0.125 * x

    d.polygon([(0, h), (0, eave(0)), (w, eave(w)), (w, h)], fill=(84, 90, 100))
    for _ in range(80):  # slate joints
        x, y = rng.randrange(w), rng.randrange(240, h)
        d.line([(x, y), (x + 30, y - 4)], fill=(70, 75, 84))
    for col in range(6):
        for row in range(2):
            x0 = 60 + col * 115
            x1 = x0 + 105
            top0, top1 = eave(x0) + 30 + row * 100, eave(x1) + 30 + row * 100
            d.polygon(
                [(x0, top0), (x1, top1), (x1, top1 + 90), (x0, top0 + 90)],
                fill=(22, 36, 92),
                outline=(190, 195, 205),
            )
            for k in range(1, 6):  # cell grid
                gx = x0 + k * (x1 - x0) / 6
                gy = top0 + (top1 - top0) * k / 6
                d.line([(gx, gy), (gx, gy + 90)], fill=(52, 72, 140))
            for k in range(1, 3):
                d.line([(x0, top0 + 30 * k), (x1, top1 + 30 * k)], fill=(52, 72, 140))


def _draw_harbor_sign(im: Image.Image, rng: random.Random, name: str, day: str, hours: str) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 200), (90, 150, 200), (40, 100, 150))
    _vgradient(d, (0, 200, w, h), (120, 118, 112), (90, 88, 84))
    for _ in range(50):  # stone wall texture
        x, y = rng.randrange(w), rng.randrange(205, h)
        d.rectangle((x, y, x + 40, y + 16), outline=(80, 78, 74))
    d.rectangle((40, 40, w - 40, h - 40), fill=(248, 244, 230), outline=(70, 40, 20), width=12)
    _text_centered(d, w // 2, 120, name, 64, w - 120, (0, 0, 0))
    _text_centered(d, w // 2, 205, day, 64, w - 120, (0, 0, 0))
    _text_centered(d, w // 2, 285, hours, 44, w - 120, (0, 0, 0))


def _draw_bike_poster(im: Image.Image, rng: random.Random, what: str, kind: str, when: str) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(176, 136, 88))
    for _ in range(900):  # cork board
        x, y = rng.randrange(w), rng.randrange(h)
        d.point((x, y), fill=(140, 100, 60))
    d.rectangle((40, 40, w - 40, h - 40), fill=(255, 255, 255))
    _text_centered(d, w // 2, 120, what, 56, w - 110, (0, 0, 0))
    _text_centered(d, w // 2, 190, kind, 56, w - 110, (0, 0, 0))
    _text_centered(d, w // 2, 270, when, 40, w - 110, (180, 0, 0))
    # a simple bicycle
    d.ellipse((90, 380, 210, 500), outline=(0, 0, 0), width=6)
    d.ellipse((270, 380, 390, 500), outline=(0, 0, 0), width=6)
    d.line(
        [(150, 440), (215, 380), (300, 380), (330, 440), (240, 440), (150, 440)],
        fill=(0, 0, 0),
        width=6,
    )
    d.line([(240, 440), (215, 380)], fill=(0, 0, 0), width=6)
    d.line([(300, 380), (295, 355), (320, 350)], fill=(0, 0, 0), width=6)
    d.line([(205, 370), (230, 370)], fill=(0, 0, 0), width=8)


def _draw_trail_sign(im: Image.Image, rng: random.Random, notice: str, reason: str) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (40, 90, 50), (20, 50, 25))
    for _ in range(26):  # tree trunks
        x = rng.randrange(w)
        d.rectangle((x, 0, x + rng.randrange(10, 28), h), fill=(70, 50, 30))
    d.rectangle((300, 320, 340, h), fill=(110, 80, 45))  # post
    d.rectangle((80, 90, w - 80, 340), fill=(250, 215, 0), outline=(0, 0, 0), width=10)
    _text_centered(d, w // 2, 170, notice, 60, w - 200, (0, 0, 0))
    _text_centered(d, w // 2, 260, reason, 60, w - 200, (0, 0, 0))


def _star(
    cx: float, cy: float, outer: float, inner: float, rotation: float = -90.0
) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = outer if k % 2 == 0 else inner
        a = math.radians(rotation + k * 36)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _draw_tide_pool(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(110, 104, 98))
    for _ in range(120):  # rock texture
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(6, 30)
        shade = rng.randrange(80, 130)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(shade, shade - 4, shade - 8))
    d.ellipse((70, 80, 570, 420), fill=(36, 108, 118))
    d.ellipse((120, 110, 520, 390), fill=(44, 124, 132))
    for cx, cy in ((170, 180), (470, 300), (420, 150), (200, 330)):  # anemones
        for k in range(16):
            a = 2 * math.pi * k / 16
            d.line(
                [(cx, cy), (cx + 34 * math.cos(a), cy + 34 * math.sin(a))],
                fill=(70, 170, 95),
                width=4,
            )
        d.ellipse((cx - 16, cy - 16, cx + 16, cy + 16), fill=(50, 140, 80))
    d.polygon(_star(310, 245, 86, 34), fill=(236, 110, 30))
    for _ in range(70):  # texture on the sea star
        x, y = rng.randrange(250, 370), rng.randrange(180, 310)
        d.point((x, y), fill=(250, 170, 90))


def _draw_volcano(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (150, 190, 230), (225, 235, 245))
    d.polygon([(40, h), (310, 160), (420, 160), (690, h)], fill=(92, 80, 74))
    d.polygon(
        [
            (310, 160),
            (420, 160),
            (470, 225),
            (440, 214),
            (410, 236),
            (372, 208),
            (332, 234),
            (296, 214),
            (258, 224),
        ],
        fill=(248, 248, 250),
    )
    for i in range(70):  # ash plume drifting right
        t = i / 70
        cx = 365 + t * 260 + rng.randrange(-20, 20)
        cy = 150 - t * 130 + rng.randrange(-15, 15)
        r = 18 + t * 45 + rng.randrange(0, 10)
        g = rng.randrange(95, 140)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(g, g, g + 4))
    _vgradient(d, (0, h - 40, w, h), (70, 90, 60), (50, 70, 45))


def _draw_coffee(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(38, 38, 42))
    d.rounded_rectangle((30, 30, w - 30, h - 30), radius=20, fill=(172, 174, 178))
    for x in range(50, w - 40, 14):  # perforations
        for y in range(50, h - 40, 14):
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(140, 142, 146))
    for _ in range(170):  # beans
        cx, cy = rng.randrange(60, w - 60), rng.randrange(60, h - 60)
        bw, bh = rng.choice(((26, 18), (18, 26), (24, 20)))
        tone = rng.randrange(-15, 15)
        d.ellipse(
            (cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2),
            fill=(92 + tone, 54 + tone // 2, 30),
        )
        if bw > bh:
            d.line([(cx - bw // 2 + 4, cy), (cx + bw // 2 - 4, cy)], fill=(48, 26, 14), width=2)
        else:
            d.line([(cx, cy - bh // 2 + 4), (cx, cy + bh // 2 - 4)], fill=(48, 26, 14), width=2)


def _draw_heron(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 300), (205, 214, 220), (230, 232, 228))
    _vgradient(d, (0, 300, w, h), (130, 150, 160), (90, 110, 120))
    for _ in range(160):  # reeds
        x = rng.randrange(w)
        top = rng.randrange(180, 330)
        d.line(
            [(x, h), (x + rng.randrange(-12, 12), top)],
            fill=(120 + rng.randrange(40), 120 + rng.randrange(30), 50),
            width=2,
        )
    d.line([(322, 255), (318, 345)], fill=(60, 55, 40), width=4)  # legs
    d.line([(338, 255), (342, 345)], fill=(60, 55, 40), width=4)
    d.ellipse((280, 195, 385, 262), fill=(142, 146, 152))
    d.polygon([(360, 205), (420, 230), (372, 245)], fill=(110, 114, 120))  # tail feathers
    d.line([(300, 215), (288, 150)], fill=(160, 164, 170), width=12)  # neck
    d.ellipse((272, 132, 306, 158), fill=(225, 228, 230))
    d.line([(278, 140), (300, 138)], fill=(20, 20, 20), width=3)  # black crest stripe
    d.polygon([(274, 142), (232, 150), (274, 152)], fill=(225, 190, 60))  # beak


def _draw_yarn(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (196, 156, 112), (160, 120, 82))
    for ball, base, line in (
        ((110, 110, 300, 300), (52, 92, 172), (92, 132, 210)),
        ((280, 170, 440, 330), (236, 226, 202), (205, 192, 165)),
    ):
        d.ellipse(ball, fill=base)
        x0, y0, x1, y1 = ball
        for k in range(9):
            off = rng.randrange(-30, 30)
            d.arc(
                (x0 + 10 + off // 3, y0 + 8 * k, x1 - 10 + off // 3, y1 - 8 * k),
                start=200 + off,
                end=340 + off,
                fill=line,
                width=3,
            )
    d.line([(60, 380), (500, 250)], fill=(214, 182, 120), width=7)
    d.line([(70, 395), (510, 275)], fill=(214, 182, 120), width=7)
    d.ellipse((490, 240, 512, 262), fill=(120, 90, 50))
    d.ellipse((500, 265, 522, 287), fill=(120, 90, 50))


def _draw_chessboard(im: Image.Image, rng: random.Random) -> None:
    w, _ = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, w), fill=(100, 62, 35))
    sq, origin = 55, 20
    for r in range(8):
        for c in range(8):
            color = (240, 217, 181) if (r + c) % 2 == 0 else (181, 136, 99)
            x, y = origin + c * sq, origin + r * sq
            d.rectangle((x, y, x + sq - 1, y + sq - 1), fill=color)
            if r in (0, 1, 6, 7):
                fill = (25, 25, 25) if r < 2 else (250, 250, 245)
                outline = (200, 200, 200) if r < 2 else (40, 40, 40)
                rad = 20 if r in (0, 7) else 14
                cx, cy = x + sq // 2, y + sq // 2
                d.ellipse(
                    (cx - rad, cy - rad, cx + rad, cy + rad), fill=fill, outline=outline, width=2
                )


def _draw_abstract(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (255, 120, 90), (60, 40, 160))
    for _ in range(12):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(10, 60)
        d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)


#: drawing name (images.yaml) -> (function, number of painted text lines it takes)
_DRAWINGS: dict[str, tuple[Callable[..., None], int]] = {
    "lighthouse": (_draw_lighthouse, 0),
    "sourdough": (_draw_sourdough, 0),
    "beehive": (_draw_beehive, 0),
    "solar_roof": (_draw_solar_roof, 0),
    "harbor_sign": (_draw_harbor_sign, 3),
    "bike_poster": (_draw_bike_poster, 3),
    "trail_sign": (_draw_trail_sign, 2),
    "tide_pool": (_draw_tide_pool, 0),
    "volcano": (_draw_volcano, 0),
    "coffee": (_draw_coffee, 0),
    "heron": (_draw_heron, 0),
    "yarn": (_draw_yarn, 0),
    "chessboard": (_draw_chessboard, 0),
    "abstract": (_draw_abstract, 0),
}


class ImageSpec(_Spec):
    """One image (an entry of ``images.yaml``, its camera resolved)."""

    path: str = Field(pattern=r"^[\w./-]+\.(jpg|png)$")
    size: tuple[int, int]
    drawing: str
    seed: int
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    exif_text: bool = False  # write description + keywords as EXIF ImageDescription / XPKeywords
    xmp: bool = False  # write an XMP packet with dc:title, dc:description, dc:subject
    sidecar: Literal["txt", "json"] | None = None  # description goes to <name>.txt or <name>.json
    taken: str | None = Field(default=None, pattern=r"^\d{4}:\d\d:\d\d \d\d:\d\d:\d\d$")
    camera: tuple[str, str] | None = None  # EXIF Make, Model
    text: tuple[str, ...] = ()  # lines painted into the picture (for OCR), top to bottom

    @field_validator("description")
    @classmethod
    def _normalize(cls, v: str | None) -> str | None:
        return _norm(v) if v is not None else None

    @model_validator(mode="after")
    def _known_drawing(self) -> ImageSpec:
        if self.drawing not in _DRAWINGS:
            raise ValueError(f"unknown drawing {self.drawing!r} (one of {sorted(_DRAWINGS)})")
        lines = _DRAWINGS[self.drawing][1]
        if len(self.text) != lines:
            raise ValueError(
                f"drawing {self.drawing!r} paints {lines} text lines, text has {len(self.text)}"
            )
        return self


def load_images() -> list[ImageSpec]:
    """The images of ``data/images.yaml``, in file order."""
    raw = _load_yaml(_data() / "images.yaml", "images.yaml")
    if not isinstance(raw, dict) or set(raw) != {"cameras", "images"}:
        raise ValueError(f"{_source('images.yaml')}: expected the keys cameras and images")
    cameras, specs = raw["cameras"], []
    for i, entry in enumerate(raw["images"]):
        where = f"{_source('images.yaml')}: images[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        if "camera" in entry:
            if entry["camera"] not in cameras:
                raise ValueError(
                    f"{where}: unknown camera {entry['camera']!r} (one of {sorted(cameras)})"
                )
            entry = {**entry, "camera": cameras[entry["camera"]]}
        try:
            specs.append(ImageSpec.model_validate(entry))
        except ValidationError as exc:
            raise ValueError(f"{where}: {_reason(exc)}") from None
    paths = [s.path for s in specs]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{_source('images.yaml')}: an image path is listed twice")
    return specs


def _xmp_packet(title: str | None, description: str | None, keywords: tuple[str, ...]) -> str:
    e = _xml_escape
    parts = [
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">',
    ]
    if title:
        parts.append(
            f'   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{e(title)}</rdf:li>'
            "</rdf:Alt></dc:title>"
        )
    if description:
        parts.append(
            f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{e(description)}</rdf:li>'
            "</rdf:Alt></dc:description>"
        )
    if keywords:
        items = "".join(f"<rdf:li>{e(k)}</rdf:li>" for k in keywords)
        parts.append(f"   <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>")
    parts += ["  </rdf:Description>", " </rdf:RDF>", "</x:xmpmeta>", '<?xpacket end="w"?>']
    return "\n".join(parts)


def _exif_for(spec: ImageSpec) -> Image.Exif | None:
    if not (spec.exif_text or spec.taken or spec.camera):
        return None
    exif = Image.Exif()
    if spec.exif_text and spec.description:
        exif[0x010E] = spec.description  # ImageDescription
    if spec.exif_text and spec.keywords:
        exif[0x9C9E] = ";".join(spec.keywords).encode("utf-16-le") + b"\x00\x00"  # XPKeywords
    if spec.camera:
        exif[0x010F], exif[0x0110] = spec.camera  # Make, Model
    if spec.taken:
        exif.get_ifd(0x8769)[0x9003] = spec.taken  # Exif IFD: DateTimeOriginal
    return exif


def _image_files(spec: ImageSpec) -> list[str]:
    """The image and its sidecar, if any: relative paths."""
    return [spec.path] + ([f"{spec.path}.{spec.sidecar}"] if spec.sidecar else [])


def _write_image(spec: ImageSpec, corpus_dir: Path) -> None:
    """Draw and save one image (and its sidecar: ``_image_files``)."""
    im = Image.new("RGB", spec.size, (0, 0, 0))
    draw, _ = _DRAWINGS[spec.drawing]
    draw(im, random.Random(spec.seed), *spec.text)
    target = corpus_dir / spec.path
    target.parent.mkdir(parents=True, exist_ok=True)
    exif = _exif_for(spec)
    xmp = _xmp_packet(spec.title, spec.description, spec.keywords) if spec.xmp else None
    kwargs: dict[str, object] = {}
    if exif is not None:
        kwargs["exif"] = exif
    if target.suffix == ".jpg":
        if xmp is not None:
            kwargs["xmp"] = xmp.encode("utf-8")
        im.save(target, "JPEG", quality=90, **kwargs)
    else:
        if xmp is not None:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp)
            kwargs["pnginfo"] = info
        im.save(target, "PNG", **kwargs)
    if spec.sidecar == "txt":
        _write_bytes(
            corpus_dir / f"{spec.path}.txt", (spec.description or "").encode("utf-8") + b"\n"
        )
    elif spec.sidecar == "json":
        payload = {"description": spec.description, "tags": list(spec.keywords)}
        _write_bytes(
            corpus_dir / f"{spec.path}.json", (json.dumps(payload, indent=2) + "\n").encode("utf-8")
        )


# ---------------------------------------------------------------------------------------
# Gold queries
# ---------------------------------------------------------------------------------------


def load_gold() -> list[GoldQuery]:
    """The demo gold queries of ``data/gold.jsonl``, validated with the evals' schema."""
    queries = parse_gold_jsonl(
        (_data() / "gold.jsonl").read_text(encoding="utf-8"), _source("gold.jsonl")
    )
    if not queries:
        raise ValueError(f"{_source('gold.jsonl')}: no queries")
    return queries


GOLDEN_QA_FILENAME = "golden_qa.jsonl"


def golden_qa_text() -> str:
    """The demo golden QA file's text (``data/golden_qa.jsonl``): answerable questions with
    their sources and phrases, and unanswerable ones that must be refused."""
    return (_data() / GOLDEN_QA_FILENAME).read_text(encoding="utf-8")


def load_golden_qa() -> list[QAQuestion]:
    """The demo golden QA, validated (``rag-pipeline eval qa`` scores it)."""
    questions = parse_qa_jsonl(golden_qa_text(), _source(GOLDEN_QA_FILENAME))
    if not questions:
        raise ValueError(f"{_source(GOLDEN_QA_FILENAME)}: no questions")
    return questions


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate_demo_corpus(corpus_dir: Path, gold_path: Path) -> DemoCorpus:
    """Write the demo corpus under ``corpus_dir`` and its gold queries to ``gold_path``.

    Deterministic: the same bytes and mtimes every time. Existing files of the same name are
    overwritten; other files already in ``corpus_dir`` are left alone (nothing is deleted).
    ``gold_path`` must lie outside ``corpus_dir``, or it would be indexed as a document.
    """
    corpus_dir = Path(corpus_dir).resolve()
    gold_path = Path(gold_path).resolve()
    if gold_path.is_relative_to(corpus_dir):
        raise ValueError(f"gold_path {gold_path} must not be inside corpus_dir {corpus_dir}")
    documents, images, gold = load_documents(), load_images(), load_gold()
    files = sorted([d.path for d in documents] + [f for s in images for f in _image_files(s)])
    for q in gold:
        missing = sorted(set(q.relevant) - set(files))
        if missing:
            raise ValueError(
                f"{_source('gold.jsonl')}: {q.query_id} judges files the corpus "
                f"does not have: {', '.join(missing)}"
            )

    corpus_dir.mkdir(parents=True, exist_ok=True)
    for doc in documents:
        _write_bytes(corpus_dir / doc.path, doc.render())
    for spec in images:
        _write_image(spec, corpus_dir)
    write_gold_jsonl(gold_path, gold)

    # Fixed mtimes: files first, then directories deepest first (writing files touched them).
    for i, rel in enumerate(files):
        stamp = _MTIME_BASE + i * 3600
        os.utime(corpus_dir / rel, (stamp, stamp))
    dirs = sorted(
        {p for rel in files for p in Path(rel).parents if p != Path(".")},
        key=lambda p: (-len(p.parts), p),
    )
    for d in dirs:
        os.utime(corpus_dir / d, (_MTIME_BASE, _MTIME_BASE))
    os.utime(gold_path, (_MTIME_BASE, _MTIME_BASE))

    return DemoCorpus(
        corpus_dir=corpus_dir,
        gold_path=gold_path,
        n_documents=len(documents),
        n_images=len(images),
        n_queries=len(gold),
        files=files,
    )

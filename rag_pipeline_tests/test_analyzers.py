"""Core analyzers on real, hand-built inputs: media types, documents, chunking, images."""

from __future__ import annotations

import io
import itertools
import json
import random
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from rag_pipeline import errors
from rag_pipeline.analysis.analyzers.chunking import Chunk, chunk_sections, count_tokens
from rag_pipeline.analysis.analyzers.doc_text import (
    analyze_document,
    title_from_filename,
)
from rag_pipeline.analysis.analyzers.documents import (
    Section,
    decode_text,
    extract_document,
)
from rag_pipeline.analysis.analyzers.image_metadata import (
    analyze_image,
    parse_datetime,
    parse_xmp,
)
from rag_pipeline.media_types import (
    detect_media_type,
    is_document,
    is_image,
    is_sidecar,
    sidecar_candidates,
)

# --------------------------------------------------------------------------------------
# Input builders
# --------------------------------------------------------------------------------------


def _pdf_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], info: dict[str, str] | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per entry, correct xref offsets."""
    n = len(pages)
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (
            "<< /Type /Pages /Kids ["
            + " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
            + f"] /Count {n} >>"
        ).encode(),
    }
    font_id = 3 + 2 * n
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            ops += [f"({_pdf_escape(line)}) Tj", "T*"]
        ops.append("ET")
        stream = "\n".join(ops).encode() if lines else b""
        objs[3 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> "
            f"/Contents {4 + 2 * i} 0 R >>"
        ).encode()
        objs[4 + 2 * i] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objs[font_id] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    info_id = None
    if info:
        info_id = font_id + 1
        objs[info_id] = (
            "<< " + " ".join(f"/{k} ({_pdf_escape(v)})" for k, v in info.items()) + " >>"
        ).encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref = len(out)
    size = max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    trailer = f"<< /Size {size} /Root 1 0 R" + (f" /Info {info_id} 0 R" if info_id else "") + " >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def noise_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    # Random pixels compress badly, so the JPEG has a long entropy-coded stream to cut.
    pixels = random.Random(seed).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), pixels)


def xp(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


XMP_PACKET = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    photoshop:DateCreated="2023-01-02T03:04:05Z">
   <dc:description><rdf:Alt>
     <rdf:li xml:lang="de">Eine rote Scheune</rdf:li>
     <rdf:li xml:lang="x-default">{description}</rdf:li>
   </rdf:Alt></dc:description>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Barn at dusk</rdf:li></rdf:Alt></dc:title>
   <dc:subject><rdf:Bag><rdf:li>BARN</rdf:li><rdf:li>sunset</rdf:li></rdf:Bag></dc:subject>
   <dc:creator><rdf:Seq><rdf:li>Jane Photographer</rdf:li></rdf:Seq></dc:creator>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def add_iptc(jpeg: bytes, records: list[tuple[int, int, bytes]]) -> bytes:
    """Insert a Photoshop APP13 segment carrying IPTC-IIM records right after SOI."""
    iptc = b"".join(
        b"\x1c" + bytes([rec, ds]) + struct.pack(">H", len(v)) + v for rec, ds, v in records
    )
    size = len(iptc)
    if size % 2:
        iptc += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", size) + iptc
    payload = b"Photoshop 3.0\x00" + resource
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def rich_jpeg(description: str = "A red barn in a field") -> bytes:
    exif = Image.Exif()
    exif[0x010E] = description
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif[0x013B] = "Jane Photographer"
    exif[0x9C9B] = xp("Red barn")
    exif[0x9C9E] = xp("barn; farm;Field")
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:05:01 10:30:00"
    sub[0x9011] = "+02:00"
    buf = io.BytesIO()
    xmp = XMP_PACKET.format(description=description).encode()
    noise_image().save(buf, "JPEG", exif=exif, xmp=xmp, quality=85)
    return add_iptc(
        buf.getvalue(),
        [
            (1, 90, b"\x1b%G"),
            (2, 5, "Scheune am Fluß".encode()),
            (2, 25, b"farm"),
            (2, 25, b"Bauernhof"),
            (2, 120, b"Caption: a barn, seen from the road"),
        ],
    )


def png_bytes(width: int = 4, height: int = 4, **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, "PNG", **save_kwargs)
    return buf.getvalue()


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite IHDR's width/height and fix its CRC, so only the declared size is a lie."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


# --------------------------------------------------------------------------------------
# Media types and sidecars
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("notes.md", b"# hi", "text/markdown"),
        ("notes.MARKDOWN", b"# hi", "text/markdown"),
        ("a.txt", b"hello", "text/plain"),
        ("a.text", b"hello", "text/plain"),
        ("page.HTM", b"<html>", "text/html"),
        ("paper.pdf", b"%PDF-1.7", "application/pdf"),
        ("paper", b"%PDF-1.7\n", "application/pdf"),
        ("photo.JPG", b"\xff\xd8\xff\xe0", "image/jpeg"),
        ("photo.jpg", b"\x89PNG\r\n\x1a\n\x00", "image/png"),  # a PNG with the wrong name
        ("photo.jpg", b"not an image at all", "image/jpeg"),  # decoder reports CorruptImage
        ("blob", b"\x89PNG\r\n\x1a\n", "image/png"),
        ("anim.bin", b"GIF89a....", "image/gif"),
        ("x", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        ("scan.tif", b"II*\x00", "image/tiff"),
        ("data.bin", b"\x00\x01\x02", "application/octet-stream"),
        ("archive.zip", b"PK\x03\x04", "application/octet-stream"),
    ],
)
def test_detect_media_type(name: str, head: bytes, expected: str) -> None:
    assert detect_media_type(Path(name), head) == expected


def test_is_document_and_is_image() -> None:
    assert is_document("application/pdf") and is_document("text/markdown")
    assert not is_document("image/png") and not is_document("application/octet-stream")
    assert is_image("image/jpeg") and is_image("image/tiff")
    assert not is_image("text/plain")


def test_sidecars(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    assert sidecar_candidates(photo) == [
        tmp_path / "photo.jpg.txt",
        tmp_path / "photo.jpg.json",
        tmp_path / "photo.jpg.xmp",
        tmp_path / "photo.xmp",
    ]
    for name in ("photo.jpg.txt", "photo.jpg.json", "photo.jpg.xmp", "photo.xmp"):
        (tmp_path / name).write_text("x")
        assert is_sidecar(tmp_path / name), name
    (tmp_path / "photo.txt").write_text("a real document")
    assert not is_sidecar(tmp_path / "photo.txt")
    # Orphans are documents again: the image they would describe does not exist.
    (tmp_path / "gone.png.txt").write_text("x")
    (tmp_path / "gone.xmp").write_text("x")
    assert not is_sidecar(tmp_path / "gone.png.txt")
    assert not is_sidecar(tmp_path / "gone.xmp")
    # Stem match for .xmp works for any image extension, any case.
    (tmp_path / "IMG_1.CR2.txt").write_text("x")  # CR2 is not an image type we read
    assert not is_sidecar(tmp_path / "IMG_1.CR2.txt")
    (tmp_path / "IMG_2.Tiff").write_bytes(b"II*\x00")
    (tmp_path / "IMG_2.xmp").write_text("x")
    assert is_sidecar(tmp_path / "IMG_2.xmp")
    assert not is_sidecar(tmp_path / "photo.jpg")


# --------------------------------------------------------------------------------------
# Text decoding
# --------------------------------------------------------------------------------------


def test_decode_text_boms_and_fallbacks() -> None:
    assert decode_text("héllo\r\nwörld".encode("utf-8-sig")) == "héllo\nwörld"
    assert decode_text("\ufeffhéllo".encode("utf-16-le")) == "héllo"
    assert decode_text("\ufeffhéllo".encode("utf-16-be")) == "héllo"
    assert decode_text("naïve café – ok".encode()) == "naïve café – ok"
    # Clearly-text legacy bytes are accepted as cp1252.
    assert decode_text("Grüße aus Köln – café".encode("cp1252")) == "Grüße aus Köln – café"


def test_decode_text_rejects_binary() -> None:
    data = b"plain start " + random.Random(3).randbytes(400)
    with pytest.raises(errors.UndecodableText, match=r"offset \d+"):
        decode_text(data, "blob.txt")
    with pytest.raises(errors.UndecodableText, match="offset 5"):
        decode_text(b"hello\xff\x00\x01\x02 world", "x.txt")
    # Valid UTF-8 that is full of NULs (BOM-less UTF-16, say) is not text either.
    with pytest.raises(errors.UndecodableText, match="NUL"):
        decode_text("hello world".encode("utf-16-le"), "x.txt")
    with pytest.raises(errors.EmptyFile):
        decode_text(b"", "x.txt")


# --------------------------------------------------------------------------------------
# Document extraction
# --------------------------------------------------------------------------------------

MARKDOWN = """---
author: Jane Doe
tags: [alpha, beta]
---
Intro with a [link](http://example.com) and **bold** text and snake_case_name.

# Main *Title*

Some text under main.

## Install
### From pip
Run `pip install foo`.

```bash
# not a heading
echo hi
```

## Usage
- Use *it* well.
- See ![diagram](img.png).
"""


def test_markdown_sections_title_and_stripping() -> None:
    doc = extract_document(MARKDOWN.encode(), "text/markdown", "guide.md")
    assert doc.title == "Main Title"
    assert doc.title_source == "heading" and doc.title_explicit
    assert doc.metadata == {"author": "Jane Doe", "keywords": "alpha, beta"}
    names = [s.locator.get("section") for s in doc.sections]
    # "Install" has no body of its own: it is folded into "From pip"; the fenced
    # "# not a heading" stays code.
    assert names == [None, "Main Title", "From pip", "Usage"]
    intro, main, pip, usage = doc.sections
    assert intro.text == "Intro with a link and bold text and snake_case_name."
    assert intro.locator["char_start"] == MARKDOWN.index("Intro")
    assert main.text == "Main Title\nSome text under main."
    assert pip.text.startswith("Install\nFrom pip\nRun pip install foo.")
    assert "# not a heading\necho hi" in pip.text
    assert pip.locator["char_start"] == MARKDOWN.index("## Install")
    assert usage.locator["char_start"] == MARKDOWN.index("## Usage")
    assert usage.text == "Usage\nUse it well.\nSee diagram."


def test_markdown_without_heading_guesses_title() -> None:
    doc = extract_document(b"just some *notes*\n\nmore", "text/markdown", "n.md")
    assert doc.title == "just some notes"
    assert doc.title_source == "first_line" and not doc.title_explicit


HTML = """<!doctype html><html><head><title> The  Page </title>
<meta name="description" content="All about barns">
<meta name="keywords" content="barn, farm">
<meta name="author" content="J. Doe">
<style>body { color: red }</style><script>var secret = 1;</script></head>
<body><nav><a href="/">Home</a> | <a href="/x">Menu</a></nav>
<p>Hello <b>world</b>!</p>
<h2>First part</h2><p>Barns are red.</p><p>Some are <i>blue</i>.</p>
<h3>Details</h3><ul><li>one</li><li>two</li></ul>
<script>document.write("no")</script>
</body></html>"""


def test_html_extraction() -> None:
    doc = extract_document(HTML.encode(), "text/html", "page.html")
    assert doc.title == "The Page" and doc.title_source == "metadata"
    assert doc.metadata == {
        "description": "All about barns",
        "keywords": "barn, farm",
        "author": "J. Doe",
    }
    assert [s.locator.get("section") for s in doc.sections] == [None, "First part", "Details"]
    assert doc.sections[0].text == "Hello world!"
    assert doc.sections[1].text == "First part\nBarns are red.\nSome are blue."
    assert doc.sections[2].text == "Details\none\ntwo"
    everything = " ".join(s.text for s in doc.sections)
    for dropped in ("secret", "Menu", "color", 'no"'):
        assert dropped not in everything


def test_html_title_from_h1_and_declared_charset() -> None:
    doc = extract_document(b"<h1>Big heading</h1><p>x</p>", "text/html", "a.html")
    assert doc.title == "Big heading" and doc.title_explicit
    latin = ('<meta charset="iso-8859-1"><title>Caf\xe9</title><p>cr\xe8me</p>').encode("latin-1")
    doc = extract_document(latin, "text/html", "b.html")
    assert doc.title == "Café" and doc.sections[0].text == "crème"
    with pytest.raises(errors.NoTextContent):
        extract_document(b"<html><script>x()</script></html>", "text/html", "c.html")


def test_pdf_pages_title_and_metadata() -> None:
    pdf = make_pdf(
        [["Quarterly report", "Revenue grew strongly."], ["Second page text here."]],
        info={"Title": "Q1 Report", "Author": "Finance Team", "Keywords": "revenue, growth"},
    )
    doc = extract_document(pdf, "application/pdf", "q1.pdf")
    assert doc.title == "Q1 Report" and doc.title_source == "metadata"
    assert doc.metadata["author"] == "Finance Team"
    assert [s.locator for s in doc.sections] == [{"page": 1}, {"page": 2}]
    assert "Revenue grew strongly." in doc.sections[0].text
    assert doc.sections[1].text == "Second page text here."


def test_pdf_without_title_guesses_first_line() -> None:
    doc = extract_document(make_pdf([["Annual Summary", "body"]]), "application/pdf", "a.pdf")
    assert doc.title == "Annual Summary" and doc.title_source == "first_line"


def test_pdf_errors() -> None:
    good = make_pdf([["Hello"]])
    with pytest.raises(errors.CorruptDocument, match="PDF"):
        extract_document(b"%PDF-1.4\n1 0 obj << /Type /Catalog", "application/pdf", "bad.pdf")
    with pytest.raises(errors.CorruptDocument):
        extract_document(good[: len(good) // 3], "application/pdf", "cut.pdf")
    with pytest.raises(errors.CorruptDocument, match="not a PDF"):
        extract_document(b"<html>oops</html>", "application/pdf", "fake.pdf")
    with pytest.raises(errors.NoTextContent, match="2 page"):
        extract_document(make_pdf([[], []]), "application/pdf", "scan.pdf")


@pytest.mark.parametrize(
    ("data", "media_type", "error"),
    [
        (b"", "text/plain", errors.EmptyFile),
        (b"", "application/pdf", errors.EmptyFile),
        (b"  \n\t \n", "text/markdown", errors.NoTextContent),
        (b"\xef\xbb\xbf   ", "text/plain", errors.NoTextContent),
        (b"\x00\x01\x02\x03\xff\xfe", "text/plain", errors.UndecodableText),
        (b"hello", "application/zip", errors.UnsupportedMediaType),
        (b"hello", "image/png", errors.UnsupportedMediaType),
    ],
)
def test_document_errors(data: bytes, media_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        extract_document(data, media_type, "f")


# --------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------


def _sentences(n: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    rng = random.Random(7)
    out = []
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        out.append(f"Sentence {i} says {body}.")
        if i % 9 == 8:
            out.append("\n\n")
    return " ".join(out)


def _check_chunks(text: str, chunks: list[Chunk], max_tokens: int, overlap: int) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert chunks[0].locator["char_start"] == 0
    assert chunks[-1].locator["char_end"] == len(text.rstrip())
    for c in chunks:
        assert 0 < c.token_count <= max_tokens
        assert count_tokens(c.text) == c.token_count
        assert text[c.locator["char_start"] : c.locator["char_end"]] == c.text
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.locator["char_start"] < prev.locator["char_end"]  # overlap, no gap
        shared = count_tokens(text[nxt.locator["char_start"] : prev.locator["char_end"]])
        assert overlap // 2 <= shared <= overlap + overlap // 2


def test_chunks_respect_limit_overlap_and_sentences() -> None:
    text = _sentences(150)
    chunks = chunk_sections([Section(text=text, locator={})], max_tokens=100, overlap=20)
    assert len(chunks) > 5
    _check_chunks(text, chunks, 100, 20)
    # Chunks start at a sentence boundary (all do here: sentences are short).
    assert all(c.text.startswith("Sentence") for c in chunks)
    assert chunks == chunk_sections([Section(text=text, locator={})], 100, 20)  # deterministic


def test_chunks_hard_cut_without_boundaries() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    chunks = chunk_sections([Section(text=text, locator={})], max_tokens=128, overlap=16)
    _check_chunks(text, chunks, 128, 16)
    assert all(c.token_count == 128 for c in chunks[:-1])
    for prev, nxt in itertools.pairwise(chunks):
        assert count_tokens(text[nxt.locator["char_start"] : prev.locator["char_end"]]) == 16


def test_chunks_never_cross_sections_and_keep_locators() -> None:
    sections = [
        Section("Page one text. " * 50, {"page": 1}),
        Section("Short second page.", {"page": 2}),
        Section("Body of a section.", {"section": "Intro", "char_start": 120}),
    ]
    chunks = chunk_sections(sections, max_tokens=40, overlap=8)
    assert [c.locator.get("page") for c in chunks if c.locator.get("page") == 2] == [2]
    assert all("second" not in c.text for c in chunks if c.locator.get("page") == 1)
    last = chunks[-1]
    assert last.locator == {
        "section": "Intro",
        "section_char_start": 120,
        "char_start": 0,
        "char_end": len("Body of a section."),
    }
    assert all(c.token_count <= 40 for c in chunks)


def test_chunk_argument_validation() -> None:
    with pytest.raises(ValueError):
        chunk_sections([Section("x")], max_tokens=10, overlap=10)
    with pytest.raises(ValueError):
        chunk_sections([Section("x")], max_tokens=0, overlap=0)
    assert chunk_sections([Section("   ")]) == []


# --------------------------------------------------------------------------------------
# doc_text analyzer
# --------------------------------------------------------------------------------------


def test_analyze_markdown_document() -> None:
    ev = analyze_document(
        MARKDOWN.encode(), "text/markdown", "guide.md", chunk_tokens=512, chunk_overlap=64
    )
    titles = [e for e in ev if e.kind == "title"]
    assert [(t.text, t.confidence) for t in titles] == [("Main Title", 1.0)]
    chunks = [e for e in ev if e.kind == "chunk"]
    assert [c.ordinal for c in chunks] == list(range(len(chunks))) and len(chunks) == 4
    assert all(c.confidence == 1.0 for c in chunks)
    assert chunks[3].locator["section"] == "Usage"
    (meta,) = [e for e in ev if e.kind == "metadata"]
    assert meta.text == "author: Jane Doe\nkeywords: alpha, beta"
    assert meta.confidence == 0.9


def test_analyze_plain_text_and_pdf() -> None:
    text = ("Meeting notes\n\n" + _sentences(120)).encode()
    ev = analyze_document(text, "text/plain", "notes.txt", chunk_tokens=64, chunk_overlap=8)
    title = next(e for e in ev if e.kind == "title")
    assert (title.text, title.confidence, title.locator) == (
        "Meeting notes",
        0.6,
        {"source": "first_line"},
    )
    chunks = [e for e in ev if e.kind == "chunk"]
    assert len(chunks) > 10 and all(count_tokens(c.text) <= 64 for c in chunks)
    assert not [e for e in ev if e.kind == "metadata"]

    pdf = make_pdf(
        [["Intro page"], ["Details page"]],
        info={"Title": "Spec", "Author": "A. Writer", "Subject": "Barns"},
    )
    ev = analyze_document(pdf, "application/pdf", "spec.pdf", chunk_tokens=512, chunk_overlap=64)
    assert [(e.kind, e.text, e.confidence) for e in ev if e.kind == "title"] == [
        ("title", "Spec", 1.0)
    ]
    assert [e.locator["page"] for e in ev if e.kind == "chunk"] == [1, 2]
    meta = next(e for e in ev if e.kind == "metadata")
    assert meta.text == "author: A. Writer\nsubject: Barns"


def test_analyze_document_propagates_errors() -> None:
    with pytest.raises(errors.NoTextContent):
        analyze_document(
            make_pdf([[]]), "application/pdf", "x.pdf", chunk_tokens=64, chunk_overlap=8
        )
    with pytest.raises(errors.UndecodableText):
        analyze_document(
            b"\x89\x00\x01binary\xff\xfe\xfd",
            "text/plain",
            "x.txt",
            chunk_tokens=64,
            chunk_overlap=8,
        )


def test_title_from_filename() -> None:
    assert title_from_filename("2024_annual-report.final.pdf") == "2024 annual report final"
    assert title_from_filename("README") == "README"


# --------------------------------------------------------------------------------------
# image_meta analyzer
# --------------------------------------------------------------------------------------


def _by_kind(result, kind):
    return [e for e in result.evidence if e.kind == kind]


def test_rich_jpeg_metadata_and_sidecars() -> None:
    sidecars = {
        "barn.jpg.txt": b"Shot on the way home.\n",
        "barn.jpg.json": json.dumps(
            {
                "description": "A red barn in a field",
                "title": "Barn",
                "tags": ["Sunset", "road trip"],
            }
        ).encode(),
    }
    result = analyze_image(rich_jpeg(), sidecars, max_pixels=10_000_000)
    assert (result.width, result.height, result.format) == (320, 240, "JPEG")
    # 10:30 at +02:00 is 08:30 UTC; DateTimeOriginal wins over the XMP date.
    assert result.taken_at == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)

    descriptions = _by_kind(result, "description")
    assert [(d.text, d.locator["source"]) for d in descriptions] == [
        ("A red barn in a field", "exif"),  # identical XMP and JSON copies are dropped
        ("Caption: a barn, seen from the road", "iptc"),
        ("Shot on the way home.", "sidecar:barn.jpg.txt"),
    ]
    assert all(d.confidence == 1.0 for d in descriptions)
    assert [d.ordinal for d in descriptions] == [0, 1, 2]

    titles = [(t.text, t.locator["source"]) for t in _by_kind(result, "title")]
    assert titles == [
        ("Red barn", "exif"),
        ("Barn at dusk", "xmp"),
        ("Scheune am Fluß", "iptc"),
        ("Barn", "sidecar:barn.jpg.json"),
    ]

    # One per keyword, first spelling wins, case-insensitive de-duplication.
    assert result.keywords == ["barn", "farm", "Field", "sunset", "Bauernhof", "road trip"]
    kw = _by_kind(result, "keyword")
    assert [k.text for k in kw] == result.keywords
    assert [k.locator["source"] for k in kw] == [
        "exif",
        "exif",
        "exif",
        "xmp",
        "iptc",
        "sidecar:barn.jpg.json",
    ]

    (meta,) = _by_kind(result, "metadata")
    assert meta.text == (
        "format: JPEG; size: 320x240; taken: 2024-05-01 08:30:00 UTC; "
        "camera: Canon EOS 5D; artist: Jane Photographer"
    )
    assert meta.confidence == 1.0


def test_png_with_exif_and_xmp_and_xmp_sidecar() -> None:
    exif = Image.Exif()
    exif[0x010E] = "OLYMPUS DIGITAL CAMERA"  # a camera placeholder, not a description
    exif[0x0132] = "2020:12:24 18:00:00"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.format(description="Snowy barn"))
    data = png_bytes(64, 48, exif=exif, pnginfo=info)
    sidecar_xmp = XMP_PACKET.format(description="From the sidecar").replace("BARN", "winter")
    result = analyze_image(data, {"barn.xmp": sidecar_xmp.encode()}, max_pixels=10_000)
    assert result.format == "PNG" and (result.width, result.height) == (64, 48)
    assert [(d.text, d.locator["source"]) for d in _by_kind(result, "description")] == [
        ("Snowy barn", "xmp"),
        ("From the sidecar", "sidecar:barn.xmp"),
    ]
    assert result.taken_at == datetime(2020, 12, 24, 18, 0, tzinfo=UTC)
    assert result.keywords == ["BARN", "sunset", "winter"]
    assert _by_kind(result, "metadata")[0].text.startswith(
        "format: PNG; size: 64x48; taken: 2020-12-24"
    )


def test_image_without_metadata_still_reports_summary() -> None:
    result = analyze_image(png_bytes(), {}, max_pixels=100)
    assert [e.kind for e in result.evidence] == ["metadata"]
    assert result.evidence[0].text == "format: PNG; size: 4x4"
    assert result.taken_at is None and result.keywords == []


def test_broken_sidecars_are_skipped_not_fatal() -> None:
    sidecars = {
        "a.png.json": b"{not json",
        "b.png.json": b"[" * 100_000,
        "c.png.json": b'["a list, not an object"]',
        "a.png.txt": b"\x00\x01\x02\xff binary",
        "a.png.xmp": b"<x:xmpmeta><rdf:RDF",
        "a.xmp": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta/>',
    }
    result = analyze_image(png_bytes(), sidecars, max_pixels=100)
    assert [e.kind for e in result.evidence] == ["metadata"]


def test_parse_xmp_and_dates() -> None:
    xmp = parse_xmp(XMP_PACKET.format(description="Hello"))
    assert xmp.descriptions == ["Hello"]  # x-default only, not the German alternative
    assert xmp.titles == ["Barn at dusk"] and xmp.keywords == ["BARN", "sunset"]
    assert xmp.dates == [datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)]
    assert parse_datetime("0000:00:00 00:00:00") is None
    assert parse_datetime("2024:02:30 10:00:00") is None
    assert parse_datetime("2024-05-01T12:00:00-05:00") == datetime(2024, 5, 1, 17, tzinfo=UTC)
    assert parse_datetime("2024-05") == datetime(2024, 5, 1, tzinfo=UTC)


def test_truncated_and_corrupt_images() -> None:
    buf = io.BytesIO()
    noise_image(512, 384).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    with pytest.raises(errors.CorruptImage, match="truncated"):
        analyze_image(jpeg[: len(jpeg) // 2], {}, max_pixels=10_000_000)
    png = png_bytes(32, 32)
    with pytest.raises(errors.CorruptImage):
        analyze_image(png[:-30], {}, max_pixels=10_000_000)
    with pytest.raises(errors.CorruptImage, match="not a readable image"):
        analyze_image(b"this is not an image at all", {}, max_pixels=10_000_000)
    with pytest.raises(errors.CorruptImage):
        analyze_image(b"\xff\xd8\xff\xe0garbage", {}, max_pixels=10_000_000)
    with pytest.raises(errors.EmptyFile):
        analyze_image(b"", {}, max_pixels=10_000_000)


def test_truncated_image_fails_even_if_pillow_was_told_to_load_truncated(monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    buf = io.BytesIO()
    noise_image().save(buf, "JPEG")
    with pytest.raises(errors.CorruptImage):
        analyze_image(buf.getvalue()[:5000], {}, max_pixels=10_000_000)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_decompression_bombs() -> None:
    small = png_bytes(4, 4)
    # Over our limit, under Pillow's: our check, with the dimensions in the message.
    with pytest.raises(errors.DecompressionBomb, match="3000x3000"):
        analyze_image(patch_png_size(small, 3000, 3000), {}, max_pixels=1_000_000)
    # Over Pillow's warning threshold: the warning becomes our error, not a decode attempt.
    with pytest.raises(errors.DecompressionBomb):
        analyze_image(patch_png_size(small, 10_000, 10_000), {}, max_pixels=10**12)
    # Far over everything (10^10 pixels): Pillow's own error, converted.
    with pytest.raises(errors.DecompressionBomb):
        analyze_image(patch_png_size(small, 100_000, 100_000), {}, max_pixels=64_000_000)
    # The same small image under the limit is fine, and the CRC patch helper is honest.
    assert analyze_image(patch_png_size(small, 4, 4), {}, max_pixels=16).width == 4


# ---------------------------------------------------------------------------------------------
# Chunks that fit the MV model's window (word pieces, title included)


def test_word_piece_chunks_fit_the_model_window(mv_model_dir):
    from rag_pipeline.analysis.analyzers.doc_text import analyze_document
    from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

    tok = ModelTokenizer.load(mv_model_dir)
    assert (tok.max_seq_length, tok.special_tokens, tok.budget) == (256, 2, 254)
    rng = random.Random(7)
    words = ["immunohistochemistry", "of", "mitochondrial", "dysfunction", "in", "cardiomyocytes"]
    paras = [
        ". ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(6))
        for _ in range(12)
    ]
    # A token far longer than the window (a hash) must be cut, not embedded truncated.
    paras.insert(3, "sha " + "f3a9c1" * 400)
    text = "# Cardiac pathology notes\n\n" + "\n\n".join(paras)
    ev = analyze_document(
        text.encode(),
        "text/markdown",
        "notes.md",
        chunk_tokens=254,
        chunk_overlap=32,
        tokenizer=tok,
    )
    title = next(e.text for e in ev if e.kind == "title")
    chunks = [e for e in ev if e.kind == "chunk"]
    assert len(chunks) > 5
    lengths = [tok.count(f"{title}\n{c.text}") for c in chunks]
    assert max(lengths) <= 254
    assert not any(tok.truncated(f"{title}\n{c.text}") for c in chunks)
    # Chunks are reasonably full, and consecutive ones overlap.
    assert sorted(lengths)[len(lengths) // 2] > 254 // 2
    spans = [(c.locator["char_start"], c.locator["char_end"]) for c in chunks]
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    # The regex-token profile's chunks of the same text overflow the window: the problem fixed.
    old = analyze_document(
        text.encode(), "text/markdown", "notes.md", chunk_tokens=512, chunk_overlap=64
    )
    assert any(tok.truncated(f"{title}\n{e.text}") for e in old if e.kind == "chunk")


def test_word_piece_profile_is_new_evidence_beside_the_old(mv_model_dir, tmp_path, monkeypatch):
    import yaml

    from rag_pipeline.analysis.profiles import load_profiles
    from rag_pipeline.settings import Settings, packaged_file

    # The regex-token profiles declared again beside the packaged ones (how an A/B is set up).
    doc = yaml.safe_load(packaged_file("models.yaml").read_text())
    mv = next(p for p in doc["profiles"] if p["name"] == "minilm-l6-fit")
    doc["profiles"] += [
        {"name": "text-v1", "analyzer": "text"},
        {**mv, "name": "minilm-l6", "config": {"text_profile": "text-v1"}},
    ]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("RAG_MODELS_FILE", str(tmp_path / "models.yaml"))
    profiles = load_profiles(Settings.from_env())
    old, new = profiles["text-v1"], profiles["text-v2"]
    cfg = new.tasks["doc_text"].config
    assert cfg["chunk_unit"] == "word_piece" and cfg["chunk_tokens"] == 254
    assert "all-MiniLM-L6-v2" in cfg["chunk_model"]
    assert old.tasks["doc_text"].config != cfg  # another config hash: old evidence is kept
    assert profiles.policy["text"] == "text-v2" and profiles.policy["mv"] == "minilm-l6-fit"
    assert profiles.text_profile_for(profiles["minilm-l6-fit"]).name == "text-v2"
    assert profiles.text_profile_for(profiles["minilm-l6"]).name == "text-v1"

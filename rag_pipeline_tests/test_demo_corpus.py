"""The demo corpus generator and the bad-input helpers."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import pypdf
import pytest
from bs4 import BeautifulSoup
from PIL import Image, UnidentifiedImageError

from rag_pipeline import errors
from rag_pipeline.contracts import QUERY_TYPES
from rag_pipeline.demo import corpus as corpus_module
from rag_pipeline.demo.corpus import (
    GOLD_FILENAME,
    HTML_SCRIPT_SENTINEL,
    DemoCorpus,
    DemoDocument,
    ImageSpec,
    generate_demo_corpus,
    load_documents,
    load_gold,
    load_golden_qa,
    load_images,
    read_gold,
)
from rag_pipeline.goldset_schema import GoldQuery
from rag_pipeline_tests.bad_inputs import (
    BOMB_SIZE,
    FIFO_ERROR,
    UNREADABLE_ERROR,
    write_bad_inputs,
    write_fifo,
    write_unreadable,
)

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> DemoCorpus:
    root = tmp_path_factory.mktemp("demo_a")
    return generate_demo_corpus(root / "corpus", root / GOLD_FILENAME)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


DOCUMENTS = load_documents()
IMAGES = load_images()
REPO = Path(__file__).resolve().parents[1]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(doc: DemoDocument) -> list[str]:
    """A PDF's paragraphs and list items, as its spec gives them."""
    assert doc.pdf is not None
    out: list[str] = []
    for sec in doc.pdf.sections:
        for p in sec.paragraphs:
            out += list(p) if isinstance(p, tuple) else [p]
    return out


def _text(doc: DemoDocument) -> str:
    """A document's readable text: a PDF's title, headings and paragraphs; an HTML page's text
    without scripts and styles; Markdown and plain text as they are."""
    if doc.pdf is not None:
        return " ".join(
            [doc.pdf.title] + [s.heading or "" for s in doc.pdf.sections] + _paragraphs(doc)
        )
    text = doc.content.decode("utf-8")
    if doc.path.endswith(".html"):
        soup = BeautifulSoup(text, "html.parser")
        for s in soup(["script", "style", "nav"]):
            s.decompose()
        text = soup.get_text(" ")
    return text


# ------------------------------------------------------------------------- corpus


def test_generation_is_deterministic(corpus, tmp_path):
    other = generate_demo_corpus(tmp_path / "corpus", tmp_path / "gold" / GOLD_FILENAME)
    first, second = _digests(corpus.corpus_dir), _digests(other.corpus_dir)
    assert first == second
    assert len(first) == len(corpus.files)
    assert (
        hashlib.sha256(corpus.gold_path.read_bytes()).digest()
        == hashlib.sha256(other.gold_path.read_bytes()).digest()
    )
    for rel in corpus.files:
        assert (corpus.corpus_dir / rel).stat().st_mtime == (other.corpus_dir / rel).stat().st_mtime
    assert other.model_dump(exclude={"corpus_dir", "gold_path"}) == corpus.model_dump(
        exclude={"corpus_dir", "gold_path"}
    )


def test_regenerating_in_place_keeps_bytes(corpus, tmp_path):
    before = _digests(corpus.corpus_dir)
    again = generate_demo_corpus(corpus.corpus_dir, corpus.gold_path)
    assert _digests(again.corpus_dir) == before


def test_summary_matches_disk(corpus):
    on_disk = sorted(
        p.relative_to(corpus.corpus_dir).as_posix()
        for p in corpus.corpus_dir.rglob("*")
        if p.is_file()
    )
    assert corpus.files == on_disk
    assert corpus.n_documents == len(DOCUMENTS) >= 24
    assert corpus.n_images == len(IMAGES) >= 12
    assert 36 <= len(corpus.files) <= 50
    suffixes = {Path(f).suffix for f in corpus.files if f.startswith("docs/")}
    assert {".md", ".txt", ".html", ".pdf"} <= suffixes
    assert sum(f.endswith(".pdf") for f in corpus.files) >= 4
    folders = {f.split("/")[1] for f in corpus.files if f.startswith("docs/") and f.count("/") == 2}
    assert folders >= {"kitchen", "outdoors", "science", "home", "history"}
    image_files = [
        f for f in corpus.files if f.startswith("images/") and f.endswith((".jpg", ".png"))
    ]
    assert len(image_files) == corpus.n_images
    assert not corpus.gold_path.is_relative_to(corpus.corpus_dir)


def test_fixed_mtimes(corpus):
    stamps = [(corpus.corpus_dir / rel).stat().st_mtime for rel in corpus.files]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert min(stamps) == 1705309200  # 2024-01-15 09:00:00 UTC


def test_gold_inside_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="inside corpus_dir"):
        generate_demo_corpus(tmp_path / "c", tmp_path / "c" / GOLD_FILENAME)


def test_document_lengths():
    for doc in DOCUMENTS:
        words = len(re.findall(r"\w+", _text(doc)))
        if doc.path == "docs/municipal_water_treatment.md":
            sections = re.findall(r"^## ", _text(doc), flags=re.MULTILINE)
            assert words >= 1500 and len(sections) >= 8, (doc.path, words)
        else:
            assert 150 <= words <= 900, (doc.path, words)


# ------------------------------------------------------------------------- package data

_FROM_ZIP = """
import json, os, sys
from pathlib import Path

import rag_pipeline.demo.corpus as c

opened = []


def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(hook)
runs = [c.generate_demo_corpus(Path(d) / "corpus", Path(d) / "gold.jsonl") for d in ("a", "b")]
print(json.dumps({"module": c.__file__, "opened": opened, "files": runs[0].files}))
"""


def test_generates_from_package_data_only(corpus, tmp_path):
    """The generator reads its texts and specs through importlib.resources only: run from a
    zip of the package (as zipimport loads a zipped wheel), with no checkout on sys.path, it
    opens no file of a source tree and writes the same bytes twice, the same as from here."""
    package = Path(corpus_module.__file__).resolve().parents[1]
    archive = tmp_path / "rag_pipeline.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                zf.write(f, f.relative_to(package.parent).as_posix())
    run = tmp_path / "run"
    run.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", _FROM_ZIP],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(archive)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["module"].startswith(str(archive) + os.sep)
    sources = [str(package), str(REPO)]
    read_from_a_tree = [
        f
        for f in report["opened"]
        if not f.startswith(str(run) + os.sep)
        # the interpreter's own libraries (a .venv may sit inside the checkout)
        and not f.startswith(os.path.realpath(sys.prefix) + os.sep)
        and ("/rag_pipeline/" in f or any(f.startswith(s) for s in sources))
    ]
    assert read_from_a_tree == []
    assert report["files"] == corpus.files
    expected = _digests(corpus.corpus_dir)
    for d in ("a", "b"):
        assert _digests(run / d / "corpus") == expected
        assert (run / d / "gold.jsonl").read_bytes() == corpus.gold_path.read_bytes()


def test_every_data_file_is_used():
    """Each file under data/ is a document source, the image list, the gold set or the golden
    QA (``load_golden_qa``: ``rag-pipeline eval qa``)."""
    data = resources.files("rag_pipeline.demo") / "data"
    on_disk = sorted(
        p.relative_to(Path(str(data))).as_posix() for p in Path(str(data)).rglob("*") if p.is_file()
    )
    used = sorted(
        [f"documents/{d.path}" + (".yaml" if d.pdf else "") for d in DOCUMENTS]
        + ["gold.jsonl", "golden_qa.jsonl", "images.yaml"]
    )
    assert on_disk == used
    paths = {d.path for d in DOCUMENTS} | {s.path for s in load_images()}
    assert all(set(q.expected_sources) <= paths for q in load_golden_qa())


def test_image_specs_are_checked():
    base = {"path": "images/x.png", "size": [10, 10], "drawing": "heron", "seed": 1}
    assert ImageSpec.model_validate(base).drawing == "heron"
    for bad, reason in (
        ({"drawing": "unicorn"}, "unknown drawing"),
        ({"drawing": "trail_sign", "text": ["ONE"]}, "paints 2 text lines"),
        ({"taken": "2024-01-01"}, "taken"),
        ({"sidecar": "xml"}, "sidecar"),
        ({"colour": "red"}, "colour"),
    ):
        with pytest.raises(ValueError, match=reason):
            ImageSpec.model_validate({**base, **bad})


def test_gold_judging_a_missing_file_is_refused(tmp_path, monkeypatch):
    stray = GoldQuery(query_id="qx", query="nothing", relevant={"docs/missing.md": 2})
    monkeypatch.setattr(corpus_module, "load_gold", lambda: [*load_gold(), stray])
    with pytest.raises(
        ValueError, match="qx judges files the corpus does not have: docs/missing.md"
    ):
        generate_demo_corpus(tmp_path / "c", tmp_path / GOLD_FILENAME)
    assert not (tmp_path / GOLD_FILENAME).exists()


# ------------------------------------------------------------------------- gold


def test_gold_is_well_formed(corpus):
    raw = corpus.gold_path.read_text(encoding="utf-8").splitlines()
    assert all(
        set(json.loads(line)) == {"query_id", "query", "query_type", "relevant"} for line in raw
    )
    gold = read_gold(corpus.gold_path)
    assert len(gold) == corpus.n_queries >= 14
    assert len({q.query_id for q in gold}) == len(gold)
    assert {q.query_type for q in gold} == set(QUERY_TYPES)  # serving's vocabulary, all four
    assert gold == load_gold()  # the package data, as the shared schema reads it
    for q in gold:
        assert set(q.relevant.values()) <= {1, 2}, q
        assert 2 in q.relevant.values(), q
        for rel in q.relevant:
            assert rel in corpus.files, (q.query_id, rel)
            assert (corpus.corpus_dir / rel).is_file(), (q.query_id, rel)
            assert not rel.endswith((".json", ".jpg.txt", ".png.txt")), (
                "gold points at media, not sidecars"
            )
    answers = [p for q in gold for p, g in q.relevant.items() if g == 2]
    assert any(p.startswith("images/") for p in answers)
    assert any(p.endswith(".pdf") for p in answers)


def test_gold_long_document_query_hits_a_late_section(corpus):
    gold = {q.query_id: q for q in read_gold(corpus.gold_path)}
    long_doc = "docs/municipal_water_treatment.md"
    (q,) = [q for q in gold.values() if q.relevant.get(long_doc) == 2]
    text = (corpus.corpus_dir / long_doc).read_text(encoding="utf-8")
    assert text.index("rolling boil") > 0.8 * len(text)


def test_keyword_queries_use_terms_from_their_targets(corpus):
    for q in read_gold(corpus.gold_path):
        if q.query_type != "keyword":
            continue
        (target,) = [p for p, g in q.relevant.items() if g == 2]
        doc = next(d for d in DOCUMENTS if d.path == target)
        body = _norm(_text(doc)).lower()
        for term in q.query.lower().split():
            if len(term) > 3:
                assert term in body, (q.query_id, term)


# ------------------------------------------------------------------------- documents


def test_pdfs_extract_with_pypdf(corpus):
    pdfs = [d for d in DOCUMENTS if d.path.endswith(".pdf")]
    assert len(pdfs) >= 4 and all(d.pdf is not None and d.content is None for d in pdfs)
    page_counts = []
    for doc in pdfs:
        reader = pypdf.PdfReader(corpus.corpus_dir / doc.path, strict=True)
        page_counts.append(len(reader.pages))
        assert reader.metadata.title == doc.pdf.title
        assert reader.metadata.author == doc.pdf.author
        assert reader.metadata.subject == doc.pdf.description
        pages = [_norm(page.extract_text()) for page in reader.pages]
        assert all(pages), doc.path
        full = " ".join(pages)
        assert _norm(doc.pdf.title) in pages[0]
        for paragraph in _paragraphs(doc):
            assert _norm(paragraph) in full, (doc.path, paragraph[:60])
    assert max(page_counts) >= 3 and sum(n >= 2 for n in page_counts) >= 3


def test_pdf_second_page_answers_its_query(corpus):
    reader = pypdf.PdfReader(corpus.corpus_dir / "docs/science/volcano_monitoring.pdf")
    first, second = (_norm(reader.pages[i].extract_text()) for i in (0, 1))
    assert "tonnes per day" in second and "DOAS" in second
    assert "tonnes per day" not in first


def test_html_documents(corpus):
    for doc in (d for d in DOCUMENTS if d.path.endswith(".html")):
        soup = BeautifulSoup(
            (corpus.corpus_dir / doc.path).read_text(encoding="utf-8"), "html.parser"
        )
        assert soup.title.string and soup.h1.get_text() == soup.title.string
        assert soup.find("meta", attrs={"name": "description"})["content"].strip()
        assert soup.find_all("h2")
        scripts = soup.find_all("script")
        assert scripts and all(HTML_SCRIPT_SENTINEL in s.get_text() for s in scripts)
        for s in soup(["script", "style"]):
            s.decompose()
        assert HTML_SCRIPT_SENTINEL not in soup.get_text()


def test_text_formats(corpus):
    md = (corpus.corpus_dir / "docs/kitchen/sourdough_starter.md").read_text(encoding="utf-8")
    assert md.startswith("# Keeping a Sourdough Starter Alive\n")
    assert "\n## Feeding schedule\n" in md
    assert "\n- It doubles in volume" in md
    for doc in DOCUMENTS:
        data = (corpus.corpus_dir / doc.path).read_bytes()
        if not doc.path.endswith(".pdf"):
            assert data == doc.content  # written as the package data has it
            data.decode("utf-8")
            assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data


# ------------------------------------------------------------------------- images


def test_image_sizes_and_formats(corpus):
    formats = set()
    for spec in IMAGES:
        with Image.open(corpus.corpus_dir / spec.path) as im:
            im.load()
            formats.add(im.format)
            assert im.size == spec.size
            assert all(320 <= side <= 800 for side in im.size)
            assert im.format == {".jpg": "JPEG", ".png": "PNG"}[Path(spec.path).suffix]
    assert formats == {"JPEG", "PNG"}


def test_images_carry_exif(corpus):
    checked = 0
    for spec in IMAGES:
        with Image.open(corpus.corpus_dir / spec.path) as im:
            exif = im.getexif()
        if spec.exif_text:
            checked += 1
            assert exif[0x010E] == spec.description
            raw = exif[0x9C9E]
            assert isinstance(raw, bytes) and raw.endswith(b"\x00\x00")
            assert raw[:-2].decode("utf-16-le").split(";") == list(spec.keywords)
        else:
            assert 0x010E not in exif and 0x9C9E not in exif
        if spec.taken:
            assert exif.get_ifd(0x8769)[0x9003] == spec.taken
        if spec.camera:
            assert (exif[0x010F], exif[0x0110]) == spec.camera
    assert checked >= 6


def test_images_carry_xmp(corpus):
    checked = 0
    for spec in IMAGES:
        with Image.open(corpus.corpus_dir / spec.path) as im:
            xmp = im.info.get("xmp")
        if not spec.xmp:
            assert xmp is None, spec.path
            continue
        checked += 1
        root = ET.fromstring(xmp.decode("utf-8").split("?>", 1)[1].rsplit("<?xpacket", 1)[0])
        desc = root.find("rdf:RDF/rdf:Description", NS)
        assert desc.find("dc:description/rdf:Alt/rdf:li", NS).text == spec.description
        assert desc.find("dc:title/rdf:Alt/rdf:li", NS).text == spec.title
        subjects = desc.findall("dc:subject/rdf:Bag/rdf:li", NS)
        assert [li.text for li in subjects] == list(spec.keywords)
    assert checked >= 4
    assert {Path(s.path).suffix for s in IMAGES if s.xmp} == {".jpg", ".png"}


def test_image_sidecars(corpus):
    kinds = set()
    for spec in IMAGES:
        txt, js = corpus.corpus_dir / f"{spec.path}.txt", corpus.corpus_dir / f"{spec.path}.json"
        assert txt.exists() == (spec.sidecar == "txt") and js.exists() == (spec.sidecar == "json")
        if spec.sidecar == "txt":
            assert txt.read_text(encoding="utf-8").strip() == spec.description
        elif spec.sidecar == "json":
            assert json.loads(js.read_text(encoding="utf-8")) == {
                "description": spec.description,
                "tags": list(spec.keywords),
            }
        kinds.add(spec.sidecar)
    assert {"txt", "json"} <= kinds


def test_text_images_and_bare_image(corpus):
    texts = [s for s in IMAGES if s.text]
    assert len(texts) >= 3
    for spec in texts:  # large, high-contrast lettering: a good share of near-black pixels
        with Image.open(corpus.corpus_dir / spec.path) as im:
            gray = im.convert("L")
            dark = sum(gray.histogram()[:60])
        assert dark > 0.01 * gray.width * gray.height, spec.path
    (bare,) = [
        s for s in IMAGES if not (s.description or s.taken or s.camera or s.xmp or s.sidecar)
    ]
    with Image.open(corpus.corpus_dir / bare.path) as im:
        assert not im.getexif() and "xmp" not in im.info and not im.text


# ------------------------------------------------------------------------- bad inputs


def test_bad_inputs(tmp_path):
    expected = write_bad_inputs(tmp_path)
    assert write_bad_inputs(tmp_path) == expected  # idempotent
    assert expected == {
        "empty.txt": "EmptyFile",
        "garbage.txt": "UndecodableText",
        "corrupt.jpg": "CorruptImage",
        "corrupt.png": "CorruptImage",
        "corrupt.pdf": "CorruptDocument",
        "bomb.png": "DecompressionBomb",
        "broken_link.md": "BrokenSymlink",
        "loop_a.txt": "SymlinkLoop",
        "loop_b.txt": "SymlinkLoop",
    }
    for name in {*expected.values(), UNREADABLE_ERROR, FIFO_ERROR}:
        assert issubclass(getattr(errors, name), errors.AnalysisError)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)

    for name in (
        "empty.txt",
        "garbage.txt",
        "corrupt.jpg",
        "corrupt.png",
        "corrupt.pdf",
        "bomb.png",
    ):
        assert (tmp_path / name).is_file() and not (tmp_path / name).is_symlink()
    assert (tmp_path / "empty.txt").stat().st_size == 0


def test_garbage_text_is_undecodable(tmp_path):
    write_bad_inputs(tmp_path)
    data = (tmp_path / "garbage.txt").read_bytes()
    assert not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
    assert b"\x00" in data and b"\xff\xfe" in data[1:]
    for encoding in ("utf-8", "utf-16", "cp1252"):
        with pytest.raises(UnicodeDecodeError):
            data.decode(encoding)


def test_corrupt_images_and_pdf(tmp_path):
    write_bad_inputs(tmp_path)
    jpg, png, pdf = (tmp_path / n for n in ("corrupt.jpg", "corrupt.png", "corrupt.pdf"))
    assert jpg.read_bytes().startswith(b"\xff\xd8\xff")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for path in (jpg, png):
        with pytest.raises((UnidentifiedImageError, OSError, SyntaxError)):
            with Image.open(path) as im:
                im.load()
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-1.4") and b"xref" not in raw and b"%%EOF" not in raw
    with pytest.raises(pypdf.errors.PdfReadError):
        reader = pypdf.PdfReader(pdf)
        for page in reader.pages:
            page.extract_text()


def test_decompression_bomb(tmp_path):
    write_bad_inputs(tmp_path)
    data = (tmp_path / "bomb.png").read_bytes()
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == BOMB_SIZE
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(data[12:29]) & 0xFFFFFFFF  # a valid chunk, not a corrupt one
    assert len(data) < 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "bomb.png")


def test_bad_symlinks(tmp_path):
    write_bad_inputs(tmp_path)
    broken = tmp_path / "broken_link.md"
    assert broken.is_symlink() and not broken.exists()
    assert os.readlink(broken) == "missing_target.md"
    with pytest.raises(FileNotFoundError):
        broken.stat()
    for name, target in (("loop_a.txt", "loop_b.txt"), ("loop_b.txt", "loop_a.txt")):
        link = tmp_path / name
        assert link.is_symlink() and os.readlink(link) == target
        with pytest.raises(OSError) as exc:
            link.stat()
        assert exc.value.errno == errno.ELOOP


def test_unreadable_and_fifo(tmp_path):
    secret = write_unreadable(tmp_path)
    assert secret == tmp_path / "secret.txt"
    assert stat.S_IMODE(secret.stat().st_mode) == 0 and secret.stat().st_size > 0
    assert write_unreadable(tmp_path) == secret  # idempotent even with mode 000
    pipe = write_fifo(tmp_path)
    assert pipe == tmp_path / "pipe.txt" and stat.S_ISFIFO(pipe.stat().st_mode)
    assert write_fifo(tmp_path) == pipe

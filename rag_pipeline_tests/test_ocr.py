"""OCR with the real tesseract program on images rendered with Pillow, the demo corpus and
COCO photos; the line filter on hand-written TSV; a missing tesseract."""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from rag_pipeline import errors
from rag_pipeline.analysis.analyzers.image_decode import decode_image
from rag_pipeline.analysis.analyzers.ocr import (
    OcrConfig,
    ocr_bytes,
    ocr_image,
    ocr_model_spec,
    parse_tsv,
    tesseract_spec,
    words_to_evidence,
)
from rag_pipeline_tests.conftest import require, shared_data_or_skip

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


@pytest.fixture(scope="module")
def tesseract() -> str:
    path = shutil.which("tesseract")
    require(
        path,
        "tesseract is not installed (`make setup`, or apt-get install tesseract-ocr "
        "tesseract-ocr-eng)",
    )
    return path


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if DEJAVU.exists():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def render(
    lines: list[str],
    size: tuple[int, int] = (900, 400),
    text_px: int = 40,
    origin: tuple[int, int] = (40, 40),
) -> Image.Image:
    im = Image.new("RGB", size, (250, 248, 240))
    d = ImageDraw.Draw(im)
    x, y = origin
    for line in lines:
        d.text((x, y), line, font=font(text_px), fill=(10, 10, 10))
        y += int(text_px * 1.8)
    return im


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def words_of(evidence) -> set[str]:
    return {re.sub(r"\W", "", w).casefold() for e in evidence for w in e.text.split()} - {""}


# --------------------------------------------------------------------------------------------
# Reading rendered text


def test_reads_rendered_text_with_lines_confidences_and_boxes(tesseract) -> None:
    im = render(["Quarterly invoice 4521", "Harbour street depot", "Closed on Mondays"])
    ev = ocr_image(im)
    assert [e.kind for e in ev] == ["ocr"] * 3
    assert [e.ordinal for e in ev] == [0, 1, 2]
    assert words_of(ev) >= {
        "quarterly",
        "invoice",
        "4521",
        "harbour",
        "street",
        "depot",
        "closed",
        "mondays",
    }
    assert ev[0].text.casefold().startswith("quarterly")
    for e in ev:
        assert 0.8 <= e.confidence <= 1.0
        loc = e.locator
        assert set(loc) == {"block", "par", "line", "bbox", "words"}
        assert loc["words"] == len(e.text.split())
        x, y, w, h = loc["bbox"]
        # In the input image's pixels (not the upscaled copy tesseract saw).
        assert 30 <= x <= 50 and w > 100 and x + w <= im.width and y + h <= im.height
    ys = [e.locator["bbox"][1] for e in ev]
    assert ys == sorted(ys) and ys[1] - ys[0] == pytest.approx(72, abs=8)


def test_small_text_is_upscaled_before_ocr(tesseract) -> None:
    # 8 px text in a 320 px image: too small for tesseract as is.
    im = render(["Fresh bread daily"], size=(320, 40), text_px=8, origin=(8, 12))
    assert words_of(ocr_image(im)) >= {"fresh", "bread", "daily"}
    assert ocr_image(im, OcrConfig(upscale_to=0)) == []


def test_boxes_map_back_to_the_original_image(tesseract) -> None:
    # A 2400 px wide original decoded at 1200: boxes are reported in original pixels.
    original = render(
        ["Platform seven departures"], size=(2400, 600), text_px=90, origin=(600, 200)
    )
    ev = ocr_bytes(png(original), max_pixels=10**8, config=OcrConfig(max_side=1200))
    assert words_of(ev) >= {"platform", "seven", "departures"}
    x, y, w, h = ev[0].locator["bbox"]
    assert 590 <= x <= 620 and 190 <= y <= 240 and w > 900
    decoded = decode_image(png(original), max_pixels=10**8, target_side=1200)
    assert ocr_image(decoded)[0].locator["bbox"] == ev[0].locator["bbox"]
    assert ocr_image(decoded.image)[0].locator["bbox"][0] == pytest.approx(x / 2, abs=3)


def test_demo_corpus_text_images_are_read(tesseract, tmp_path) -> None:
    from rag_pipeline.demo.corpus import generate_demo_corpus

    corpus = tmp_path / "corpus"
    generate_demo_corpus(corpus, tmp_path / "gold.jsonl")
    expected = {
        "harbor_market_sign.png": {"harbor", "market", "open", "sunday", "am"},
        "bike_clinic_poster.png": {"bike", "repair", "clinic", "saturday", "10", "am"},
        "trail_closed_sign.jpg": {"trail", "closed", "rockfall"},
    }
    images = sorted(p for p in (corpus / "images").iterdir() if p.suffix in (".jpg", ".png"))
    assert {p.name for p in images} >= set(expected)
    for path in images:
        ev = ocr_bytes(path.read_bytes(), max_pixels=10**8)
        if path.name in expected:
            assert words_of(ev) >= expected[path.name], (path.name, [e.text for e in ev])
        else:  # drawings without text (a chessboard, a heron ...) add nothing
            assert ev == [], (path.name, [e.text for e in ev])


# --------------------------------------------------------------------------------------------
# No text, no noise


def test_photo_like_images_without_text_give_no_lines(tesseract) -> None:
    rng = random.Random(7)
    noise = Image.frombytes("RGB", (640, 480), rng.randbytes(640 * 480 * 3))
    gradient = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    shapes = Image.new("RGB", (640, 480), (120, 160, 200))
    d = ImageDraw.Draw(shapes)
    for _ in range(60):
        x, y, r = rng.randrange(640), rng.randrange(480), rng.randrange(4, 40)
        d.ellipse(
            (x - r, y - r, x + r, y + r),
            fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        )
        d.line(
            [(rng.randrange(640), rng.randrange(480)) for _ in range(2)],
            fill=(0, 0, 0),
            width=rng.randrange(1, 4),
        )
    for name, im in (("noise", noise), ("gradient", gradient), ("shapes", shapes)):
        assert ocr_image(im) == [], name


COCO_WITHOUT_TEXT = [
    "train2017/000000030752.jpg",
    "train2017/000000161846.jpg",
    # Texture tesseract reads as confident junk ("te" 89, "~" 87, "ata" 71, "Why" 65):
    # the line filter must drop all of it.
    "train2017/000000037666.jpg",
    "train2017/000000212679.jpg",
]


@pytest.mark.shared_data
def test_coco_photos_without_text_give_no_lines_and_a_sign_is_read(tesseract) -> None:
    images = shared_data_or_skip("coco_mini") / "images"
    for rel in COCO_WITHOUT_TEXT:
        ev = ocr_bytes((images / rel).read_bytes(), max_pixels=10**8)
        assert ev == [], (rel, [e.text for e in ev])
    # A birthday party in front of a museum banner.
    ev = ocr_bytes((images / "train2017/000000000790.jpg").read_bytes(), max_pixels=10**8)
    assert words_of(ev) >= {"brandywine", "river", "museum"}


# --------------------------------------------------------------------------------------------
# The line filter, on tesseract's TSV format

TSV_HEADER = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\t"
    "height\tconf\ttext\n"
)


def tsv(*words: tuple[int, int, int, int, int, int, int, float, str]) -> str:
    rows = [TSV_HEADER, "1\t1\t0\t0\t0\t0\t0\t0\t800\t600\t-1\t\n"]
    for block, par, line, left, top, width, height, conf, text in words:
        rows.append(
            f"5\t1\t{block}\t{par}\t{line}\t1\t{left}\t{top}\t{width}\t{height}\t{conf}\t{text}\n"
        )
    return "".join(rows)


def test_line_filter_keeps_text_and_drops_texture() -> None:
    words = parse_tsv(
        tsv(
            (1, 1, 1, 10, 10, 50, 20, 95.5, "OPEN"),
            (1, 1, 1, 70, 12, 60, 20, 93.0, "DAILY"),
            (1, 1, 1, 140, 10, 10, 20, 20.0, "~"),  # low confidence word: dropped
            (1, 1, 2, 10, 50, 20, 20, 91.0, "8"),
            (1, 1, 2, 35, 50, 30, 20, 90.0, "AM"),
            (1, 1, 2, 70, 50, 10, 20, 88.0, "-"),
            (1, 1, 2, 85, 50, 20, 20, 92.0, "1"),
            (2, 1, 1, 300, 300, 40, 20, 88.0, "Yee"),  # lone word under 90: texture
            (3, 1, 1, 10, 400, 30, 20, 85.0, "te"),
            (3, 1, 1, 45, 400, 20, 20, 86.0, "~"),
            (3, 1, 1, 70, 400, 20, 20, 84.0, "=>"),  # alnum share too low
            (4, 1, 1, 10, 500, 10, 20, 95.0, "a"),
            (4, 1, 1, 30, 500, 10, 20, 95.0, "b"),
            (4, 1, 1, 50, 500, 10, 20, 95.0, "c"),  # no token of 2+ letters: specks
            (5, 1, 1, 10, 550, 40, 20, 70.0, "seen"),
            (5, 1, 1, 60, 550, 40, 20, 75.0, "here"),  # line mean 72.5 < 80
            (6, 1, 1, 400, 100, 80, 30, 96.0, "ROCKFALL"),  # lone word, confident: kept
            (7, 1, 1, 400, 200, 40, 30, 95.0, "INS"),  # lone short word: clutter
            (8, 1, 1, 400, 300, 40, 30, 94.0, "180"),  # lone number: kept
        )
    )
    ev = words_to_evidence(words, OcrConfig())
    assert [e.text for e in ev] == ["OPEN DAILY", "8 AM - 1", "ROCKFALL", "180"]
    assert [e.ordinal for e in ev] == [0, 1, 2, 3]
    assert ev[0].locator == {"block": 1, "par": 1, "line": 1, "bbox": [10, 10, 120, 22], "words": 2}
    assert ev[0].confidence == pytest.approx((95.5 + 93.0) / 200)
    assert ev[1].confidence == pytest.approx((91 + 90 + 88 + 92) / 400)
    # Boxes scale to the caller's coordinates.
    scaled = words_to_evidence(words, OcrConfig(), scale=0.5)
    assert scaled[0].locator["bbox"] == [5, 5, 60, 11]
    # Thresholds are configuration: lowering them lets the lone word in.
    loose = OcrConfig(
        min_single_word_confidence=80, min_line_confidence=70, min_single_word_letters=3
    )
    assert {e.text for e in words_to_evidence(words, loose)} >= {"Yee", "INS", "seen here"}


def test_tsv_parser_tolerates_quotes_and_bad_rows() -> None:
    text = tsv((1, 1, 1, 0, 0, 10, 10, 90.0, '"quoted'), (1, 1, 1, 20, 0, 10, 10, 91.0, ""))
    text += "5\t1\tnot-a-number\t1\t1\t1\t0\t0\t1\t1\t90\tbroken\n"
    assert [w.text for w in parse_tsv(text)] == ['"quoted']
    assert parse_tsv("") == []


def test_config_is_validated() -> None:
    OcrConfig.model_validate({"lang": "eng+deu", "psm": 6})  # accepted
    for bad in (
        {"lang": "eng; rm -rf /"},
        {"psm": 14},
        {"min_word_confidence": 101},
        {"langs": "eng"},
        {"timeout_s": 0},
    ):
        with pytest.raises(ValueError):
            OcrConfig.model_validate(bad)


# --------------------------------------------------------------------------------------------
# The engine: version, model spec, failures


def test_tesseract_spec_reports_version_and_languages(tesseract) -> None:
    info = tesseract_spec()
    out = subprocess.run([tesseract, "--version"], capture_output=True, text=True).stdout
    assert info.version in out and re.match(r"\d+\.\d+", info.version)
    assert "eng" in info.languages
    spec, reason = ocr_model_spec(OcrConfig())
    assert reason is None
    assert (spec.backend, spec.model_id, spec.revision) == ("builtin", "tesseract", info.version)
    assert re.fullmatch(r"[0-9a-f]{64}", spec.weights_checksum)
    assert spec.weights_checksum == info.model_spec("eng").weights_checksum


def test_missing_tesseract_raises_ocr_unavailable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no tesseract on it
    with pytest.raises(errors.OcrUnavailable, match="tesseract-ocr") as info:
        ocr_image(render(["hello"]))
    assert isinstance(info.value, errors.AnalysisError)
    assert info.value.retryable is True and info.value.error_class == "OcrUnavailable"
    with pytest.raises(errors.OcrUnavailable):
        tesseract_spec()
    with pytest.raises(errors.OcrUnavailable):
        ocr_bytes(png(render(["hello"])), max_pixels=10**8)
    spec, reason = ocr_model_spec(OcrConfig())
    assert spec.revision == "unavailable" and "tesseract-ocr" in (reason or "")


def test_missing_language_data_raises_ocr_unavailable(tesseract) -> None:
    with pytest.raises(errors.OcrUnavailable, match="language"):
        ocr_image(render(["hello world"]), OcrConfig(lang="zzz"))
    spec, reason = ocr_model_spec(OcrConfig(lang="zzz"))
    assert spec.revision == "unavailable" and "zzz" in (reason or "")


def _fake_tesseract(folder: Path, body: str) -> None:
    exe = folder / "tesseract"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)


def test_tesseract_crash_and_hang_raise_ocr_failed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    _fake_tesseract(tmp_path, "cat >/dev/null; echo 'Segmentation fault' >&2; exit 139")
    with pytest.raises(errors.OcrFailed, match="Segmentation fault") as info:
        ocr_image(render(["hello"]))
    assert info.value.retryable is True and isinstance(info.value, errors.ModelError)
    _fake_tesseract(tmp_path, "cat >/dev/null; exec sleep 30")
    with pytest.raises(errors.OcrFailed, match="ran past"):
        ocr_image(render(["hello"]), OcrConfig(timeout_s=0.5))

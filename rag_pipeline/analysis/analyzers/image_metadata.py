"""image_meta analyzer: an image's embedded metadata and sidecar files -> text evidence.

No model is involved: descriptions, titles and keywords that people (or their cameras) wrote
into EXIF, XMP, IPTC or a sidecar file next to the image. The image is still decoded (at
reduced scale for JPEG) so that a truncated or corrupt file fails here, with a clear error,
instead of later inside an embedding model.

Safety (declared pixel count checked before decoding, a fixed list of raster formats,
truncation is an error) lives in ``image_decode``, shared with the other image analyzers.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import PurePath
from typing import Any

from PIL import Image, IptcImagePlugin

from rag_pipeline.analysis.analyzers.documents import decode_text
from rag_pipeline.analysis.analyzers.image_decode import (
    JPEG_FORMATS,
    SAFE_FORMATS,  # noqa: F401  (re-exported: it used to be defined here)
    load_image,
    open_image,
    strict_pillow,
)
from rag_pipeline.contracts import EvidenceText
from rag_pipeline.errors import EmptyFile

ANALYZER_REVISION = "image_meta-1"

log = logging.getLogger(__name__)

# Upper bounds on what one image can contribute, so a hostile sidecar cannot flood the index.
MAX_TEXT_CHARS = 10_000
MAX_KEYWORD_CHARS = 200
MAX_KEYWORDS = 200
# How far into the file to look for an XMP packet Pillow did not pick up itself.
_XMP_SCAN_BYTES = 4 * 1024 * 1024

# Comment-style fields (XPComment, UserComment) are free text that is often not a
# description of the picture; they rank below explicit descriptions.
COMMENT_CONFIDENCE = 0.8

# Strings that cameras and editors write into ImageDescription by default.
_PLACEHOLDER_TEXT = frozenset(
    s.casefold()
    for s in (
        "OLYMPUS DIGITAL CAMERA",
        "SONY DSC",
        "DIGITAL CAMERA",
        "KODAK Digital Still Camera",
        "MINOLTA DIGITAL CAMERA",
        "KONICA MINOLTA DIGITAL CAMERA",
        "SAMSUNG",
        "LEICA",
        "DCIM",
        "Exif_JPEG_PICTURE",
        "Exif JPEG",
        "default",
        "image",
        "picture",
        "photo",
        "untitled",
        "Created with GIMP",
        "Screenshot",
        "None",
        "-",
        "Title",
        "Description",
    )
)

# EXIF tags (IFD0 and the Exif sub-IFD).
_IMAGE_DESCRIPTION = 0x010E
_MAKE = 0x010F
_MODEL = 0x0110
_DATETIME = 0x0132
_ARTIST = 0x013B
_COPYRIGHT = 0x8298
_XP_TITLE = 0x9C9B
_XP_COMMENT = 0x9C9C
_XP_AUTHOR = 0x9C9D
_XP_KEYWORDS = 0x9C9E
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_OFFSET_TIME = 0x9010
_OFFSET_TIME_ORIGINAL = 0x9011
_OFFSET_TIME_DIGITIZED = 0x9012
_USER_COMMENT = 0x9286

_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
}
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _q(prefix: str, local: str) -> str:
    return f"{{{_NS[prefix]}}}{local}"


@dataclass
class ImageAnalysis:
    evidence: list[EvidenceText]
    width: int
    height: int
    format: str
    taken_at: datetime | None  # UTC
    keywords: list[str] = field(default_factory=list)


@dataclass
class _Found:
    """What the metadata sources yielded, each value with its locator, in precedence order."""

    descriptions: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    titles: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    keywords: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dates: list[datetime] = field(default_factory=list)
    artist: str | None = None
    copyright: str | None = None
    make: str | None = None
    model: str | None = None


# --------------------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.replace("\x00", " ").split())


def _meaningful(text: str | None) -> str | None:
    """Whitespace-normalised text, or None for empty strings and camera placeholders."""
    if text is None:
        return None
    text = _squash(text)
    if not text or text.casefold() in _PLACEHOLDER_TEXT:
        return None
    if any(ord(c) < 32 for c in text) or not any(c.isalnum() for c in text):
        return None
    return text[:MAX_TEXT_CHARS]


def _bytes_of(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value)
    return None


def _ascii_field(value: Any) -> str | None:
    """An EXIF ASCII field. Strictly ASCII by spec; UTF-8 in practice; else cp1252."""
    if isinstance(value, str):
        return value
    raw = _bytes_of(value)
    if raw is None:
        return None
    raw = raw.split(b"\x00", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _xp_field(value: Any) -> str | None:
    """Windows XP* tags: UTF-16LE, NUL-terminated, stored as BYTE."""
    if isinstance(value, str):
        return value
    raw = _bytes_of(value)
    if raw is None:
        return None
    if len(raw) % 2:
        raw = raw[:-1]
    try:
        return raw.decode("utf-16-le").split("\x00", 1)[0]
    except UnicodeDecodeError:
        return None


def _user_comment(value: Any) -> str | None:
    """EXIF UserComment: an 8-byte character-code prefix, then the text."""
    if isinstance(value, str):
        return value
    raw = _bytes_of(value)
    if raw is None or len(raw) < 8:
        return None
    code, body = raw[:8], raw[8:]
    try:
        if code.startswith(b"ASCII"):
            return body.decode("utf-8").split("\x00", 1)[0]
        if code.startswith(b"UNICODE"):
            # Byte order is not declared; a BOM or the position of the NULs tells.
            if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
                return body.decode("utf-16").split("\x00", 1)[0]
            le = body[1::2].count(0) >= body[0::2].count(0)
            return body.decode("utf-16-le" if le else "utf-16-be").split("\x00", 1)[0]
        if code == b"\x00" * 8:
            return body.decode("utf-8").split("\x00", 1)[0]
    except UnicodeDecodeError:
        return None
    return None  # JIS and unknown codes: skip rather than guess


def _split_keywords(text: str) -> list[str]:
    return [k for k in (p.strip() for p in re.split(r"[;,]", text)) if k]


# --------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"^\s*(\d{4})(?:[:\-]?(\d{2})(?:[:\-]?(\d{2})"
    r"(?:[ T](\d{2}):?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?\s*(Z|[+\-]\d{2}:?\d{2})?)?)?)?\s*$"
)


def _parse_offset(text: str | None) -> timezone | None:
    if not text:
        return None
    text = text.strip().rstrip("\x00")
    if text == "Z":
        return UTC
    m = re.fullmatch(r"([+\-])(\d{2}):?(\d{2})", text)
    if not m:
        return None
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return timezone(-delta if m.group(1) == "-" else delta)


def parse_datetime(text: str | None, offset: str | None = None) -> datetime | None:
    """EXIF ("2024:05:01 10:30:00"), XMP/ISO 8601 and IPTC ("20240501") dates -> UTC.

    A time without a zone (EXIF's usual case, unless OffsetTime* is present) is taken to be
    UTC: the camera's zone is unknown and any guess would be as wrong as this one.
    Placeholder dates ("0000:00:00 00:00:00") and impossible ones give None.
    """
    if not text:
        return None
    m = _DATE_RE.match(text.replace("\x00", ""))
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    try:
        tz = _parse_offset(zone) or _parse_offset(offset) or UTC
        micro = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hh or 0),
            int(mm or 0),
            int(ss or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None
    if dt.year < 1800:  # "0001-01-01" and friends are placeholders, not dates
        return None
    return dt.astimezone(UTC)


# --------------------------------------------------------------------------------------
# XMP
# --------------------------------------------------------------------------------------

_XMP_START = re.compile(rb"<(?:[\w.-]+:)?xmpmeta\b|<(?:[\w.-]+:)?RDF\b")


@dataclass
class XmpData:
    descriptions: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    creators: list[str] = field(default_factory=list)
    dates: list[datetime] = field(default_factory=list)


def _xmp_values(desc: ET.Element, qname: str) -> list[str]:
    """A property's values, whether written as an attribute, text, or an rdf container.

    For a language alternative only the x-default entry (else the first) is returned.
    """
    out: list[str] = []
    if qname in desc.attrib:
        out.append(desc.attrib[qname])
    for prop in desc.findall(qname):
        container = next(
            (c for c in prop if c.tag in (_q("rdf", "Alt"), _q("rdf", "Bag"), _q("rdf", "Seq"))),
            None,
        )
        if container is None:
            if prop.text and prop.text.strip():
                out.append(prop.text)
            continue
        items = [li for li in container.findall(_q("rdf", "li")) if li.text and li.text.strip()]
        if container.tag == _q("rdf", "Alt") and items:
            # Translations of one value: take the default language only, so a caption in
            # five languages is one description, not five near-duplicates.
            items = [next((li for li in items if li.get(_XML_LANG) == "x-default"), items[0])]
        out.extend(li.text for li in items if li.text)
    return out


def parse_xmp(raw: bytes | str) -> XmpData:
    """Parse an XMP packet. Malformed XMP yields an empty result, never an exception.

    DOCTYPE/ENTITY declarations are refused outright: XMP never needs them, and refusing
    them rules out entity-expansion attacks without a hardened XML parser.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    out = XmpData()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        log.warning("XMP packet with DOCTYPE/ENTITY declarations ignored")
        return out
    m = _XMP_START.search(data)
    if m is None:
        return out
    data = data[m.start() :]
    for closing in (rb"</x:xmpmeta>", rb"</rdf:RDF>"):
        end = data.rfind(closing)
        if end >= 0:
            data = data[: end + len(closing)]
            break
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, RecursionError) as exc:
        log.warning("malformed XMP ignored: %s", exc)
        return out
    for desc in root.iter(_q("rdf", "Description")):
        out.descriptions += _xmp_values(desc, _q("dc", "description"))
        out.titles += _xmp_values(desc, _q("dc", "title"))
        out.titles += _xmp_values(desc, _q("photoshop", "Headline"))
        out.keywords += _xmp_values(desc, _q("dc", "subject"))
        out.creators += _xmp_values(desc, _q("dc", "creator"))
        for prop in (
            _q("photoshop", "DateCreated"),
            _q("exif", "DateTimeOriginal"),
            _q("xmp", "CreateDate"),
        ):
            out.dates += [d for d in map(parse_datetime, _xmp_values(desc, prop)) if d]
    return out


def _add_xmp(found: _Found, xmp: XmpData, source: str) -> None:
    loc = {"source": source}
    found.descriptions += [(d, loc, 1.0) for d in xmp.descriptions]
    found.titles += [(t, loc) for t in xmp.titles]
    found.keywords += [(k, loc) for k in xmp.keywords]
    found.dates += xmp.dates
    if xmp.creators and not found.artist:
        found.artist = ", ".join(_squash(c) for c in xmp.creators)


# --------------------------------------------------------------------------------------
# Embedded metadata readers: each one is best-effort (broken metadata is not a broken image)
# --------------------------------------------------------------------------------------


def _read_exif(im: Image.Image, data: bytes, found: _Found) -> None:
    exif = im.getexif()
    if not exif:
        return
    sub = exif.get_ifd(_EXIF_IFD)
    loc = {"source": "exif"}
    desc = _ascii_field(exif.get(_IMAGE_DESCRIPTION))
    if desc:
        found.descriptions.append((desc, {**loc, "field": "ImageDescription"}, 1.0))
    for tag, name, reader in (
        (_XP_COMMENT, "XPComment", _xp_field),
        (_USER_COMMENT, "UserComment", _user_comment),
    ):
        value = exif.get(tag) if tag != _USER_COMMENT else sub.get(tag)
        text = reader(value) if value is not None else None
        if text:
            found.descriptions.append((text, {**loc, "field": name}, COMMENT_CONFIDENCE))
    title = _xp_field(exif.get(_XP_TITLE))
    if title:
        found.titles.append((title, {**loc, "field": "XPTitle"}))
    keywords = _xp_field(exif.get(_XP_KEYWORDS))
    if keywords:
        found.keywords += [(k, {**loc, "field": "XPKeywords"}) for k in _split_keywords(keywords)]
    found.artist = _meaningful(_ascii_field(exif.get(_ARTIST)) or _xp_field(exif.get(_XP_AUTHOR)))
    found.copyright = _meaningful(_ascii_field(exif.get(_COPYRIGHT)))
    found.make = _meaningful(_ascii_field(exif.get(_MAKE)))
    found.model = _meaningful(_ascii_field(exif.get(_MODEL)))
    for tag, offset_tag, ifd in (
        (_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, sub),
        (_DATETIME_DIGITIZED, _OFFSET_TIME_DIGITIZED, sub),
        (_DATETIME, _OFFSET_TIME, exif),
    ):
        when = parse_datetime(_ascii_field(ifd.get(tag)), _ascii_field(sub.get(offset_tag)))
        if when:
            found.dates.append(when)


def _embedded_xmp(im: Image.Image, data: bytes) -> bytes | str | None:
    xmp = im.info.get("xmp")
    if xmp:
        return xmp
    # Pillow keys XMP by the APP1 header it knows; scan for a packet it did not recognise
    # (JPEG APP1 with an unusual header, XMP embedded by other tools).
    head = data[:_XMP_SCAN_BYTES]
    start = head.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = head.find(b"</x:xmpmeta>", start)
    return head[start : end + len(b"</x:xmpmeta>")] if end >= 0 else None


def _read_xmp(im: Image.Image, data: bytes, found: _Found) -> None:
    xmp = _embedded_xmp(im, data)
    if xmp:
        _add_xmp(found, parse_xmp(xmp), "xmp")


def _iptc_text(value: bytes, utf8: bool) -> str:
    if utf8:
        return value.decode("utf-8", errors="replace")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:  # legacy IPTC is Latin-1/cp1252 unless 1:90 says UTF-8
        return value.decode("cp1252", errors="replace")


def _read_iptc(im: Image.Image, data: bytes, found: _Found) -> None:
    info = IptcImagePlugin.getiptcinfo(im)  # type: ignore[arg-type]
    if not info:
        return
    charset = info.get((1, 90))
    utf8 = isinstance(charset, bytes) and b"\x1b%G" in charset

    def values(key: tuple[int, int]) -> list[str]:
        raw = info.get(key)
        items = raw if isinstance(raw, list) else [raw] if raw else []
        return [_iptc_text(v, utf8) for v in items if isinstance(v, bytes)]

    loc = {"source": "iptc"}
    found.descriptions += [(c, {**loc, "field": "caption"}, 1.0) for c in values((2, 120))]
    found.titles += [(t, {**loc, "field": "object_name"}) for t in values((2, 5))]
    found.titles += [(t, {**loc, "field": "headline"}) for t in values((2, 105))]
    found.keywords += [(k, {**loc, "field": "keywords"}) for k in values((2, 25))]
    if not found.artist:
        found.artist = _meaningful(", ".join(values((2, 80))))
    date, time = values((2, 55)), values((2, 60))
    if date:
        time_part = time[0] if time else ""
        m = re.fullmatch(r"(\d{2})(\d{2})(\d{2})([+\-]\d{4})?", time_part.strip())
        stamp = f"{date[0]}T{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else date[0]
        when = parse_datetime(stamp, m.group(4) if m else None)
        if when:
            found.dates.append(when)


def _read_sidecars(sidecars: dict[str, bytes], found: _Found) -> None:
    # Sorted for determinism: the same files give the same evidence order.
    for name in sorted(sidecars):
        raw = sidecars[name]
        suffix = PurePath(name).suffix.lower()
        source = f"sidecar:{name}"
        loc = {"source": source}
        try:
            if suffix == ".xmp":
                _add_xmp(found, parse_xmp(raw), source)
            elif suffix == ".txt":
                found.descriptions.append((decode_text(raw, name), loc, 1.0))
            elif suffix == ".json":
                _read_json_sidecar(json.loads(decode_text(raw, name)), name, found, loc)
            else:
                log.warning("sidecar %s: unknown kind, ignored", name)
        except MemoryError:
            raise
        except Exception as exc:  # bad encoding, bad JSON, JSON nested past recursion ...
            # A broken sidecar loses its own text, not the image's other evidence.
            log.warning("sidecar %s ignored: %s", name, exc)


def _read_json_sidecar(obj: Any, name: str, found: _Found, loc: dict[str, Any]) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    description = obj.get("description")
    if isinstance(description, str):
        found.descriptions.append((description, loc, 1.0))
    title = obj.get("title")
    if isinstance(title, str):
        found.titles.append((title, loc))
    for key in ("tags", "keywords"):
        value = obj.get(key)
        if isinstance(value, str):
            value = _split_keywords(value)
        if isinstance(value, list):
            found.keywords += [(v, loc) for v in value if isinstance(v, str)]


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def _open_and_decode(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    im, width, height = open_image(data, max_pixels)
    if im.format in JPEG_FORMATS:
        # Only metadata is needed: decode at 1/8 scale. The whole entropy-coded stream is
        # still read, so truncation and corruption are still detected.
        im.draft(None, (64, 64))
    load_image(im, (width, height))
    return im, width, height


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _dedupe(
    items: list[tuple[str, dict[str, Any], float]], limit: int
) -> list[tuple[str, dict[str, Any], float]]:
    seen: set[str] = set()
    out = []
    for text, loc, conf in items:
        clean = _meaningful(text)
        if clean is None:
            continue
        clean = clean[:limit]
        key = clean.casefold()
        if key not in seen:
            seen.add(key)
            out.append((clean, loc, conf))
    return out


def _summary(fmt: str, width: int, height: int, found: _Found, taken_at: datetime | None) -> str:
    parts = [f"format: {fmt}", f"size: {width}x{height}"]
    if taken_at:
        parts.append(f"taken: {taken_at:%Y-%m-%d %H:%M:%S} UTC")
    camera = found.model or ""
    if found.make and not camera.casefold().startswith(found.make.split()[0].casefold()):
        camera = f"{found.make} {camera}".strip()
    if camera:
        parts.append(f"camera: {camera}")
    if found.artist:
        parts.append(f"artist: {found.artist}")
    if found.copyright:
        parts.append(f"copyright: {found.copyright}")
    return "; ".join(parts)


def analyze_image(data: bytes, sidecars: dict[str, bytes], *, max_pixels: int) -> ImageAnalysis:
    """Decode-check an image and collect its metadata and sidecar text as evidence.

    ``sidecars`` maps each sidecar's file name (``photo.jpg.txt``) to its bytes. Raises
    EmptyFile, CorruptImage or DecompressionBomb; broken metadata or sidecars only lose
    their own evidence.
    """
    if not data:
        raise EmptyFile("image file is empty")
    found = _Found()
    with strict_pillow():
        im, width, height = _open_and_decode(data, max_pixels)
        fmt = "JPEG" if im.format == "MPO" else (im.format or "unknown")
        try:
            # Read order is precedence order: EXIF, XMP, IPTC, then sidecars. The first
            # of identical texts keeps its locator, the first date found is taken_at.
            for name, reader in (("EXIF", _read_exif), ("XMP", _read_xmp), ("IPTC", _read_iptc)):
                try:
                    reader(im, data, found)
                except Exception as exc:  # vendor metadata is full of surprises
                    log.warning("%s metadata unreadable: %s: %s", name, type(exc).__name__, exc)
        finally:
            im.close()
    _read_sidecars(sidecars, found)

    descriptions = _dedupe(found.descriptions, MAX_TEXT_CHARS)
    titles = _dedupe([(t, loc, 1.0) for t, loc in found.titles], MAX_TEXT_CHARS)
    keywords = _dedupe([(k, loc, 1.0) for k, loc in found.keywords], MAX_KEYWORD_CHARS)[
        :MAX_KEYWORDS
    ]
    taken_at = found.dates[0] if found.dates else None

    evidence: list[EvidenceText] = []
    for i, (text, loc, conf) in enumerate(descriptions):
        evidence.append(
            EvidenceText(kind="description", ordinal=i, text=text, confidence=conf, locator=loc)
        )
    for i, (text, loc, _) in enumerate(titles):
        evidence.append(
            EvidenceText(kind="title", ordinal=i, text=text, confidence=1.0, locator=loc)
        )
    for i, (text, loc, _) in enumerate(keywords):
        evidence.append(
            EvidenceText(kind="keyword", ordinal=i, text=text, confidence=1.0, locator=loc)
        )
    evidence.append(
        EvidenceText(
            kind="metadata",
            ordinal=0,
            text=_summary(fmt, width, height, found, taken_at),
            confidence=1.0,
            locator={
                "source": "image",
                "format": fmt,
                "width": width,
                "height": height,
                "taken_at": taken_at.isoformat() if taken_at else None,
            },
        )
    )
    return ImageAnalysis(
        evidence=evidence,
        width=width,
        height=height,
        format=fmt,
        taken_at=taken_at,
        keywords=[k for k, _, _ in keywords],
    )

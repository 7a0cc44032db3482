"""Media-type detection and image sidecar naming.

Detection trusts the file extension first (it is what the user meant the file to be, and it
is the only signal for text formats) and falls back to magic bytes for unknown extensions.
The one exception: when the extension says "image" and the magic bytes say a *different*
image format (a PNG saved as ``.jpg`` is common), the magic bytes win, because they are what
the decoder will see. When the extension says image and the magic matches no image at all,
the extension is kept so that the image analyzer reports the file as a CorruptImage rather
than silently skipping it as an unknown type.
"""

from __future__ import annotations

from pathlib import Path

MARKDOWN = "text/markdown"
PLAIN = "text/plain"
HTML = "text/html"
PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
GIF = "image/gif"
TIFF = "image/tiff"
OCTET_STREAM = "application/octet-stream"

DOCUMENT_TYPES = frozenset({MARKDOWN, PLAIN, HTML, PDF})
IMAGE_TYPES = frozenset({JPEG, PNG, WEBP, GIF, TIFF})

# Lower-case suffix -> media type. Matching is case-insensitive (cameras write ".JPG").
_BY_EXTENSION: dict[str, str] = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": PLAIN,
    ".text": PLAIN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
    ".jpg": JPEG,
    ".jpeg": JPEG,
    ".jpe": JPEG,
    ".png": PNG,
    ".webp": WEBP,
    ".gif": GIF,
    ".tif": TIFF,
    ".tiff": TIFF,
}

IMAGE_EXTENSIONS = tuple(sorted(ext for ext, mt in _BY_EXTENSION.items() if mt in IMAGE_TYPES))

# Sidecar suffixes appended to the full image file name (``photo.jpg`` -> ``photo.jpg.txt``).
SIDECAR_SUFFIXES = (".txt", ".json", ".xmp")

# How many leading bytes callers should pass as ``head``; every signature fits in it.
HEAD_BYTES = 64


def _sniff(head: bytes) -> str | None:
    """Media type from magic bytes, or None when nothing we read matches."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    return None


def detect_media_type(path: Path, head: bytes) -> str:
    """Media type of ``path`` whose first bytes are ``head`` (see module doc for precedence)."""
    by_ext = _BY_EXTENSION.get(Path(path).suffix.lower())
    sniffed = _sniff(head)
    if by_ext is not None:
        if by_ext in IMAGE_TYPES and sniffed in IMAGE_TYPES:
            return sniffed
        return by_ext
    return sniffed or OCTET_STREAM


def is_document(media_type: str) -> bool:
    return media_type in DOCUMENT_TYPES


def is_image(media_type: str) -> bool:
    return media_type in IMAGE_TYPES


def _has_image_extension(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def sidecar_candidates(image_path: Path) -> list[Path]:
    """Every file that may describe ``image_path``, most specific first.

    ``photo.txt`` is deliberately not a candidate: it may be a real document that merely
    shares the stem. ``photo.xmp`` is, because XMP files never stand on their own.
    """
    image_path = Path(image_path)
    out = [image_path.with_name(image_path.name + suffix) for suffix in SIDECAR_SUFFIXES]
    out.append(image_path.with_name(image_path.stem + ".xmp"))
    return out


def _existing_sibling_with_stem(directory: Path, stem: str) -> bool:
    """True when ``directory`` holds an image file named ``<stem><image extension>``.

    Extensions are matched case-insensitively by listing the directory only when a cheap
    exact-case probe fails, so the common case costs a couple of ``stat`` calls.
    """
    for ext in IMAGE_EXTENSIONS:
        for variant in (ext, ext.upper()):
            if (directory / (stem + variant)).is_file():
                return True
    try:
        return any(
            p.stem == stem and _has_image_extension(p.name) and p.is_file()
            for p in directory.iterdir()
        )
    except OSError:
        return False


def is_sidecar(path: Path) -> bool:
    """True when ``path`` is a sidecar of an image that exists next to it.

    A sidecar whose image is gone is reported as *not* a sidecar, so an orphaned
    ``photo.jpg.txt`` is still indexed as a text document rather than silently dropped.
    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in SIDECAR_SUFFIXES:
        return False
    image_name = name[: -len(suffix)]
    if _has_image_extension(image_name) and (path.parent / image_name).is_file():
        return True
    if suffix == ".xmp" and image_name and not _has_image_extension(image_name):
        return _existing_sibling_with_stem(path.parent, image_name)
    return False


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def upload_media_type(name: str, head: bytes) -> str:
    """The media type of an uploaded file when its name and its bytes agree, else
    ``application/octet-stream`` (what an upload allow-list refuses). Stricter than
    ``detect_media_type``, which indexes what is already on disk: an image or PDF name needs
    the matching magic bytes, a text name needs bytes that are text (no NUL unless UTF-16 with
    a BOM, no binary signature), and a name without a known extension is judged by its magic
    bytes alone. ``head``: the first few KiB."""
    by_ext = _BY_EXTENSION.get(Path(name).suffix.lower())
    sniffed = _sniff(head)
    if by_ext is None:
        return sniffed or OCTET_STREAM
    if by_ext in IMAGE_TYPES:
        return sniffed if sniffed in IMAGE_TYPES else OCTET_STREAM
    if by_ext == PDF:
        return PDF if sniffed == PDF else OCTET_STREAM
    # text formats
    if sniffed is not None or (b"\x00" in head and not head.startswith(_UTF16_BOMS)):
        return OCTET_STREAM
    return by_ext

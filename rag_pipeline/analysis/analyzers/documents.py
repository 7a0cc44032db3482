"""Document text extraction: Markdown, plain text, HTML and PDF -> title, sections, metadata.

Each format is turned into a list of ``Section``s, the units the chunker splits further. A
section's ``locator`` says where it came from (``{"page": 3}`` for a PDF page,
``{"section": "Heading", "char_start": n}`` for a Markdown section, where ``n`` is the
heading's offset in the decoded, newline-normalised source text). Bad input raises one of the
``errors`` classes; nothing here guesses its way past bytes that are not text.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal

from rag_pipeline import media_types as mt
from rag_pipeline.errors import (
    CorruptDocument,
    EmptyFile,
    NoTextContent,
    UndecodableText,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

TitleSource = Literal["metadata", "heading", "first_line"]

# Titles longer than this are not titles: a guessed first line is cut at a word boundary.
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class Section:
    text: str
    locator: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExtractedDocument:
    title: str | None
    sections: list[Section]
    metadata: dict[str, str] = field(default_factory=dict)
    # Where the title came from: "metadata" (PDF /Title, HTML <title>, front matter) and
    # "heading" (Markdown "# ", HTML <h1>) are explicit; "first_line" is a guess.
    title_source: TitleSource | None = None

    @property
    def title_explicit(self) -> bool:
        return self.title_source in ("metadata", "heading")


# --------------------------------------------------------------------------------------
# Text decoding
# --------------------------------------------------------------------------------------

# C0 controls other than tab, LF and CR (plus DEL). Text files do not contain them; binary
# files almost always do within their first few hundred bytes.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")
# Fraction of stray control characters above which valid UTF-8 is still treated as binary
# (a few form feeds in an old README are fine; a file full of them is not text).
_MAX_CONTROL_FRACTION = 0.01
# For the cp1252 fallback: at most this fraction of bytes may be non-ASCII. Real Western
# European text sits at a few percent; arbitrary binary data sits near 50%.
_MAX_HIGH_BYTE_FRACTION = 0.30

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its LE BOM starts with the UTF-16 LE BOM.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _reject_binary(text: str, name: str, encoding: str) -> None:
    if "\x00" in text:
        raise UndecodableText(
            f"{name}: decoded as {encoding} but contains NUL characters "
            f"(first at character {text.index(chr(0))}); binary data or BOM-less UTF-16?"
        )
    n_ctrl = len(_CONTROL_RE.findall(text))
    if n_ctrl and n_ctrl > _MAX_CONTROL_FRACTION * len(text):
        raise UndecodableText(
            f"{name}: decoded as {encoding} but {n_ctrl} of {len(text)} characters are "
            "control characters; this looks like binary data"
        )


def decode_text(data: bytes, name: str = "<bytes>") -> str:
    """Decode a text file's bytes; raise UndecodableText for anything that is not text.

    Order: a BOM decides the encoding outright (and is stripped); otherwise strict UTF-8.
    If UTF-8 fails we accept cp1252 only when the bytes are *clearly* text: every byte is
    defined in cp1252, there are no control characters besides tab/LF/CR, and no more than
    30% of bytes are non-ASCII. We never fall back to latin-1, which "decodes" any byte
    string and would turn binary garbage into indexable nonsense. The result has its line
    endings normalised to ``\\n``; stray control characters in otherwise valid text are
    replaced by spaces.
    """
    if not data:
        raise EmptyFile(f"{name}: file is empty")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise UndecodableText(
                    f"{name}: has a {encoding} byte-order mark but invalid {encoding} data "
                    f"at byte offset {exc.start + len(bom)}"
                ) from exc
            break
    else:
        try:
            text = data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError as exc:
            text = _cp1252_if_clearly_text(data, name, exc)
            encoding = "cp1252"
    return _finish_text(text, name, encoding)


# ANSI colour/cursor sequences (coloured logs saved as .txt): markup, not text.
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _finish_text(text: str, name: str, encoding: str) -> str:
    text = _ANSI_RE.sub("", text)
    _reject_binary(text, name, encoding)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL_RE.sub(" ", text)


def _cp1252_if_clearly_text(data: bytes, name: str, utf8_error: UnicodeDecodeError) -> str:
    bad = data[utf8_error.start]
    reason = (
        f"{name}: not valid UTF-8 (byte 0x{bad:02x} at offset {utf8_error.start}: "
        f"{utf8_error.reason})"
    )
    if b"\x00" in data:
        raise UndecodableText(
            f"{reason}; contains NUL bytes (first at offset "
            f"{data.index(0)}), so it is binary, not text"
        )
    high = sum(1 for b in data if b >= 0x80)
    if high > _MAX_HIGH_BYTE_FRACTION * len(data):
        raise UndecodableText(
            f"{reason}; {high} of {len(data)} bytes are non-ASCII, too many for legacy 8-bit text"
        )
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise UndecodableText(
            f"{reason}; byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} is not defined in cp1252 either"
        ) from exc
    m = _CONTROL_RE.search(text)
    if m:
        raise UndecodableText(
            f"{reason}; control character 0x{ord(m.group()):02x} at offset "
            f"{m.start()}, so it is not legacy cp1252 text either"
        )
    return text


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


def _guess_title(text: str) -> str | None:
    """First non-empty line, cut at a word boundary if it is paragraph-long."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            if len(line) > MAX_TITLE_CHARS:
                cut = line.rfind(" ", 0, MAX_TITLE_CHARS)
                line = line[: cut if cut > 0 else MAX_TITLE_CHARS].rstrip() + "…"
            return line
    return None


def _clean_paragraphs(text: str) -> str:
    """Collapse runs of spaces per line and runs of blank lines; keep paragraph breaks."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def extract_document(data: bytes, media_type: str, name: str) -> ExtractedDocument:
    """Extract title, sections and metadata from a document's bytes.

    Raises EmptyFile, UndecodableText, CorruptDocument, NoTextContent or
    UnsupportedMediaType.
    """
    if media_type not in mt.DOCUMENT_TYPES:
        raise UnsupportedMediaType(f"{name}: no document extractor for {media_type!r}")
    if not data:
        raise EmptyFile(f"{name}: file is empty")
    if media_type == mt.PDF:
        doc = _extract_pdf(data, name)
    elif media_type == mt.HTML:
        doc = _extract_html(data, name)
    else:
        text = decode_text(data, name)
        if _is_blank(text):
            raise NoTextContent(f"{name}: contains only whitespace")
        doc = _extract_markdown(text) if media_type == mt.MARKDOWN else _extract_plain(text)
    doc.sections = [s for s in doc.sections if not _is_blank(s.text)]
    if not doc.sections:
        raise NoTextContent(f"{name}: no text to index after extraction")
    return doc


# --------------------------------------------------------------------------------------
# Plain text
# --------------------------------------------------------------------------------------


def _extract_plain(text: str) -> ExtractedDocument:
    # One section: the chunker splits at paragraph and sentence boundaries, and its
    # char offsets are then offsets into the (newline-normalised) file.
    title = _guess_title(text)
    return ExtractedDocument(
        title=title,
        sections=[Section(text=text, locator={})],
        title_source="first_line" if title else None,
    )


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$|^ {0,3}(#{1,6})[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)

_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_MD_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+.*$", re.M)
_MD_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]+)>")
_MD_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
# Emphasis: ``*x*``, ``**x**``, ``_x_``, ``__x__`` (underscores only at word edges, so
# snake_case identifiers survive).
_MD_EMPH_STAR = re.compile(r"(\*{1,3})(?=\S)(.+?)(?<=\S)\1")
_MD_EMPH_UNDER = re.compile(r"(?<!\w)(_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")
_MD_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_MD_CODE = re.compile(r"(`+)(.+?)\1")
_MD_LIST = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])[ \t]+(\[[ xX]\][ \t]+)?")
_MD_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_MD_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def strip_markdown_inline(line: str) -> str:
    """Plain text of one line of Markdown (links -> their text, emphasis and code marks off)."""
    line = _MD_IMAGE.sub(r"\1", line)
    line = _MD_LINK.sub(r"\1", line)
    line = _MD_REF_LINK.sub(r"\1", line)
    line = _MD_AUTOLINK.sub(r"\1", line)
    line = _MD_CODE.sub(lambda m: m.group(2).strip(), line)
    line = _MD_EMPH_STAR.sub(r"\2", line)
    line = _MD_EMPH_UNDER.sub(r"\2", line)
    line = _MD_STRIKE.sub(r"\1", line)
    return line


def _fence_step(line: str, in_fence: str | None) -> tuple[bool, str | None]:
    """(is this a code-fence line, fence state after it): a fence closes only on its own marker."""
    fence = _FENCE.match(line)
    if not fence:
        return False, in_fence
    marker = fence.group(1)
    if in_fence is None:
        return True, marker[0] * len(marker)
    return True, (None if marker.startswith(in_fence) else in_fence)


def _strip_markdown_block(lines: list[str]) -> str:
    out: list[str] = []
    in_fence: str | None = None
    for line in lines:
        is_fence, in_fence = _fence_step(line, in_fence)
        if is_fence:
            continue  # the fence line itself (```python) is not content
        if in_fence is not None:
            out.append(line)  # code is kept verbatim: identifiers are searchable
            continue
        if _MD_RULE.match(line) or _MD_SETEXT.match(line):
            out.append("")
            continue
        line = _MD_QUOTE.sub("", line)
        line = _MD_LIST.sub(r"\1", line)
        out.append(strip_markdown_inline(line))
    return _clean_paragraphs("\n".join(out))


def _front_matter(text: str) -> tuple[dict[str, str], int]:
    """YAML front matter (``---`` block at the very top) -> (string fields, its length)."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, 0
    try:
        import yaml

        data = yaml.safe_load(m.group(1))
    except Exception:  # malformed front matter is just text we skip, not a corrupt file
        data = None
    if not isinstance(data, dict):
        return {}, m.end()
    meta: dict[str, str] = {}
    for key in ("title", "author", "description", "summary", "keywords", "tags"):
        value = data.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if v is not None)
        if value is not None and str(value).strip():
            meta["keywords" if key == "tags" else key] = " ".join(str(value).split())
    return meta, m.end()


def _extract_markdown(text: str) -> ExtractedDocument:
    meta, body_start = _front_matter(text)
    # Find headings (outside fenced code) with their offsets in the source text.
    headings: list[tuple[int, int, str]] = []  # (line index, level, plain heading text)
    lines = text.split("\n")
    offsets: list[int] = []
    pos = 0
    in_fence: str | None = None
    for i, line in enumerate(lines):
        offsets.append(pos)
        pos += len(line) + 1
        if offsets[i] < body_start:
            continue
        is_fence, in_fence = _fence_step(line, in_fence)
        if is_fence:
            continue
        if in_fence is not None:
            continue
        m = _ATX_HEADING.match(line)
        if m:
            level = len(m.group(1) or m.group(3))
            headings.append((i, level, " ".join(strip_markdown_inline(m.group(2) or "").split())))

    first_body_line = next((i for i, off in enumerate(offsets) if off >= body_start), len(lines))
    sections: list[Section] = []
    bounds: list[tuple[int, int, str | None]] = [(first_body_line, 0, None), *headings]
    pending_headings: list[str] = []  # heading-only sections, folded into the next one
    pending_start: int | None = None
    for k, (start, _level, heading) in enumerate(bounds):
        end = bounds[k + 1][0] if k + 1 < len(bounds) else len(lines)
        body_first = start + 1 if heading is not None else start
        body = _strip_markdown_block(lines[body_first:end])
        if heading is None and not body:
            continue  # nothing before the first heading
        if heading is not None and not body:
            # A heading directly followed by a sub-heading says nothing on its own: carry
            # it into the next section's text so its words stay next to their content.
            if heading:
                pending_headings.append(heading)
            pending_start = offsets[start] if pending_start is None else pending_start
            continue
        parts = pending_headings + ([heading] if heading else []) + [body]
        locator: dict[str, Any] = {}
        if heading:
            locator["section"] = heading
        elif pending_headings:
            locator["section"] = pending_headings[-1]
        locator["char_start"] = pending_start if pending_start is not None else offsets[start]
        sections.append(Section(text="\n".join(p for p in parts if p), locator=locator))
        pending_headings, pending_start = [], None
    if pending_headings:  # trailing headings with no body at all
        sections.append(
            Section(
                text="\n".join(pending_headings),
                locator={"section": pending_headings[-1], "char_start": pending_start or 0},
            )
        )

    title: str | None = meta.pop("title", None)
    source: TitleSource | None = "metadata" if title else None
    if not title:
        h1 = next((h for _, lvl, h in headings if lvl == 1 and h), None)
        if h1:
            title, source = h1, "heading"
    if not title:
        title = _guess_title(_strip_markdown_block(lines[first_body_line:]))
        source = "first_line" if title else None
    return ExtractedDocument(title=title, sections=sections, metadata=meta, title_source=source)


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_HTML_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_DROP_TAGS = (
    "script",
    "style",
    "nav",
    "noscript",
    "template",
    "svg",
    "iframe",
    "object",
    "embed",
    "canvas",
)
_BLOCK_TAGS = (
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "section",
    "article",
    "aside",
    "header",
    "footer",
    "main",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "h4",
    "h5",
    "h6",
    "hr",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "caption",
)
_BLOCK_MARK = "\ue000"  # private-use code points: cannot collide with decoded text,
_HEAD_MARK = "\ue001"  # which has them stripped before parsing


def _decode_html(data: bytes, name: str) -> str:
    """BOM, then UTF-8 (what the web uses); then a declared charset; then decode_text's rules.

    The declared charset comes before the cp1252 fallback so that, say, a Shift-JIS page
    that says so is not read as cp1252 mojibake.
    """
    if not any(data.startswith(bom) for bom, _ in _BOMS):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            m = _HTML_CHARSET.search(data[:4096])
            declared = m.group(1).decode("ascii", "replace").lower() if m else ""
            # A <meta> that the parser could read as ASCII cannot be UTF-16/32.
            if declared and not declared.startswith(("utf-16", "utf-32", "utf16", "utf32")):
                try:
                    codecs.lookup(declared)
                    text = data.decode(declared)
                except (LookupError, UnicodeDecodeError):
                    pass  # a wrong declaration: fall through to the generic rules
                else:
                    return _finish_text(text, name, declared)
    return decode_text(data, name)


_VOID_TAGS = frozenset(
    (
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    )
)
_META_KEYS = {
    "og:description": "description",
    "og:title": "og:title",
    "dc.creator": "author",
    "dc.description": "description",
    "dc.subject": "keywords",
}


class _HtmlText(HTMLParser):
    """One pass over the tag stream, no tree: text with block and heading marks, the title and
    the <meta> fields. Keeping no tree is what makes it linear in the input (a tree builder
    that re-walks descendants per tag is quadratic in nesting depth: 20,000 nested <div>s took
    18 s)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.meta: dict[str, str] = {}
        self.title_parts: list[str] | None = None  # the first <title>'s text
        self.first_h1: str | None = None
        self._drop: dict[str, int] = {}  # open drop tags (and head), by name
        self._in_title = False
        self._title_done = False
        self._heading: tuple[str, list[str]] | None = None

    def _dropping(self) -> bool:
        return any(self._drop.values())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            self._meta(dict(attrs))
            return
        if tag == "title":
            self._in_title = True
            if not self._title_done:
                self.title_parts = []
            return
        if tag == "body":
            self._drop.pop("head", None)  # sloppy HTML: a <body> ends an unclosed <head>
        if tag in _DROP_TAGS or tag == "head":
            if tag not in _VOID_TAGS:
                self._drop[tag] = self._drop.get(tag, 0) + 1
            return
        if self._dropping():
            return
        if tag in ("h1", "h2", "h3"):
            if self._heading is None:
                self._heading = (tag, [])
            return
        if tag in _BLOCK_TAGS:
            self._emit(_BLOCK_MARK)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <div/>: a start without content; only void tags (<br/>) need no end.
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            if self._in_title and self.title_parts is not None:
                self._title_done = True
            self._in_title = False
            return
        if tag in self._drop:
            self._drop[tag] -= 1
            if not self._drop[tag]:
                del self._drop[tag]
            return
        if self._dropping():
            return
        if self._heading is not None and tag == self._heading[0]:
            heading = " ".join(" ".join(self._heading[1]).split())
            self._heading = None
            if tag == "h1" and heading and self.first_h1 is None:
                self.first_h1 = heading
            self.out.append(f"{_HEAD_MARK}{heading}{_HEAD_MARK}")
            return
        if tag in ("br", "hr") or tag in _BLOCK_TAGS:
            self._emit(_BLOCK_MARK)
        elif tag in ("td", "th"):
            self._emit(" ")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            if not self._title_done and self.title_parts is not None:
                self.title_parts.append(data)
            return
        if not self._dropping():
            self._emit(data)

    def _emit(self, text: str) -> None:
        if self._heading is not None:
            if text != _BLOCK_MARK:
                self._heading[1].append(text)
        else:
            self.out.append(text)

    def _meta(self, attrs: dict[str, str | None]) -> None:
        key = str(attrs.get("name") or attrs.get("property") or "").strip().lower()
        content = " ".join(str(attrs.get("content") or "").split())
        key = _META_KEYS.get(key, key)
        if content and key in ("description", "keywords", "author", "og:title"):
            self.meta.setdefault(key, content)

    def finish(self) -> None:
        self.close()
        if self._heading is not None:  # an unclosed heading keeps its text
            tag = self._heading[0]
            self.handle_endtag(tag)


def _extract_html(data: bytes, name: str) -> ExtractedDocument:
    text = _decode_html(data, name)
    if _is_blank(text):
        raise NoTextContent(f"{name}: contains only whitespace")
    text = text.replace(_BLOCK_MARK, "").replace(_HEAD_MARK, "")
    parser = _HtmlText()
    try:
        parser.feed(text)
        parser.finish()
    except Exception as exc:  # html.parser is lenient; anything it raises is corruption
        raise CorruptDocument(f"{name}: HTML parser failed: {type(exc).__name__}: {exc}") from exc

    meta = parser.meta
    title: str | None = None
    source: TitleSource | None = None
    if parser.title_parts is not None:
        title = " ".join(" ".join(parser.title_parts).split()) or None
        source = "metadata" if title else None
    if not title and meta.get("og:title"):
        title, source = meta["og:title"], "metadata"
    meta.pop("og:title", None)
    first_h1 = parser.first_h1

    # HTML whitespace is insignificant: collapse it, then turn block marks into line breaks.
    flat = re.sub(r"\s+", " ", "".join(parser.out))
    parts = flat.split(_HEAD_MARK)
    # parts: [before first heading, heading1, body1, heading2, body2, ...]
    sections: list[Section] = []

    def _block_text(s: str) -> str:
        # Adjacent block boundaries (</p><p>, </li><li>) are one line break, not several.
        return _clean_paragraphs(re.sub(f"{_BLOCK_MARK}(?:\\s*{_BLOCK_MARK})*", "\n", s))

    lead = _block_text(parts[0])
    if lead:
        sections.append(Section(text=lead, locator={}))
    for k in range(1, len(parts) - 1, 2):
        heading = " ".join(parts[k].split())
        body = _block_text(parts[k + 1])
        section_text = "\n".join(p for p in (heading, body) if p)
        if section_text:
            locator = {"section": heading} if heading else {}
            sections.append(Section(text=section_text, locator=locator))

    if not title and first_h1:
        title, source = first_h1, "heading"
    if not title and sections:
        title = _guess_title(sections[0].text)
        source = "first_line" if title else None
    return ExtractedDocument(title=title, sections=sections, metadata=meta, title_source=source)


# --------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------

_PDF_META_KEYS = {
    "/Title": "title",
    "/Author": "author",
    "/Subject": "subject",
    "/Keywords": "keywords",
    "/Creator": "creator",
    "/Producer": "producer",
    "/CreationDate": "created",
}
_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "title", "document"})


def _extract_pdf(data: bytes, name: str) -> ExtractedDocument:
    from pypdf import PdfReader

    # The spec lets the header sit anywhere in the first 1024 bytes.
    if b"%PDF-" not in data[:1024]:
        raise CorruptDocument(f"{name}: not a PDF (no %PDF- header in the first 1024 bytes)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password (print restrictions
            # only); those open fine. Anything else needs a password we do not have.
            try:
                ok = reader.decrypt("")
            except Exception as exc:
                raise CorruptDocument(
                    f"{name}: encrypted PDF cannot be decrypted: {type(exc).__name__}: {exc}"
                ) from exc
            if not ok:
                raise CorruptDocument(f"{name}: encrypted PDF needs a password")
        pages = list(reader.pages)
    except CorruptDocument:
        raise
    except Exception as exc:  # pypdf raises PdfReadError and plain ValueError/KeyError alike
        raise CorruptDocument(f"{name}: PDF parser failed: {type(exc).__name__}: {exc}") from exc

    meta: dict[str, str] = {}
    try:
        info: Mapping[str, Any] = reader.metadata or {}
        for key, out_key in _PDF_META_KEYS.items():
            value = info.get(key)
            if value is None:
                continue
            value = " ".join(str(value).replace("\x00", "").split())
            if value:
                meta[out_key] = value
    except Exception as exc:  # a broken /Info dictionary loses metadata, not the text
        log.warning("%s: unreadable PDF metadata: %s", name, exc)

    sections: list[Section] = []
    failures: list[tuple[int, Exception]] = []
    for number, page in enumerate(pages, start=1):
        try:
            raw = page.extract_text() or ""
        except Exception as exc:  # one bad content stream should not lose the whole file
            failures.append((number, exc))
            continue
        text = _clean_paragraphs(_CONTROL_RE.sub(" ", raw.replace("\r\n", "\n")))
        if text:
            sections.append(Section(text=text, locator={"page": number}))
    if failures and len(failures) == len(pages):
        number, first_exc = failures[0]
        raise CorruptDocument(
            f"{name}: text extraction failed on every page "
            f"(page {number}: {type(first_exc).__name__}: {first_exc})"
        ) from first_exc
    if failures:
        meta["pages_failed"] = ", ".join(str(n) for n, _ in failures)
        log.warning("%s: text extraction failed on pages %s", name, meta["pages_failed"])
    if not sections:
        raise NoTextContent(
            f"{name}: PDF has {len(pages)} page(s) but no extractable text (scanned or image-only?)"
        )

    title = meta.pop("title", None)
    source: TitleSource | None = "metadata"
    if title and title.strip().lower() in _PLACEHOLDER_TITLES:
        title = None
    if not title:
        title = _guess_title(sections[0].text)
        source = "first_line" if title else None
    return ExtractedDocument(title=title, sections=sections, metadata=meta, title_source=source)

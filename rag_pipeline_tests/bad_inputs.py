"""Helpers that write deliberately bad input files for tests (not a test module).

Each writer returns the expected ``AnalysisError`` subclass name (see
``rag_pipeline/analyzers/errors.py``) for what it created, so a test can check that the
pipeline dead-letters every file with the right error class.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

#: The declared size that ``bomb.png``'s patched IHDR claims.
BOMB_SIZE = (100_000, 100_000)

#: Expected error classes for the files that ``write_unreadable`` and ``write_fifo`` create.
UNREADABLE_ERROR = "UnreadableFile"
FIFO_ERROR = "NotRegularFile"


def _replace(path: Path) -> None:
    """Remove whatever is at ``path`` (file, symlink, dangling symlink) so writers are idempotent."""
    if path.is_symlink() or path.exists():
        path.unlink()


def _garbage(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _undecodable_text() -> bytes:
    # Starts like text (no BOM), then binary: NULs, 0xff 0xfe in the middle, bytes that are
    # invalid in UTF-8 and undefined in cp1252 (0x81 0x8d 0x8f 0x90 0x9d), and an odd total
    # length so that it cannot be UTF-16 either.
    head = b"Quarterly totals\n"
    middle = b"\x00\x00\x00\xff\xfe\x00\x81\x8d\x8f\x90\x9d\x00\xc3\x28\xa0\xa1\xe2\x28\xa1\x00"
    body = _garbage(7, 200).replace(b"\n", b"\x00")
    data = head + middle + body + middle + b"\x00\x01\x02"
    if len(data) % 2 == 0:
        data += b"\x00"
    assert not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
    return data


def _corrupt_jpeg() -> bytes:
    # SOI + a JFIF APP0 segment, then garbage where the frame header should be.
    soi_app0 = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return soi_app0 + _garbage(11, 400).replace(b"\xff", b"\x00")


def _corrupt_png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _garbage(13, 400)


def _corrupt_pdf() -> bytes:
    # A PDF header, then garbage: no objects, no xref table, no trailer, no %%EOF.
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + _garbage(17, 600).replace(b"%", b"#")


def _bomb_png() -> bytes:
    """A valid 8x8 PNG whose IHDR claims 100000x100000 pixels (CRC recomputed)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    # signature(8) | length(4) | b"IHDR" | width(4) height(4) ...(5) | crc(4)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", *BOMB_SIZE)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def write_bad_inputs(dir: Path) -> dict[str, str]:
    """Write bad inputs into ``dir``; return {relative path: expected error class name}."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, str]] = {
        "empty.txt": (b"", "EmptyFile"),
        "garbage.txt": (_undecodable_text(), "UndecodableText"),
        "corrupt.jpg": (_corrupt_jpeg(), "CorruptImage"),
        "corrupt.png": (_corrupt_png(), "CorruptImage"),
        "corrupt.pdf": (_corrupt_pdf(), "CorruptDocument"),
        "bomb.png": (_bomb_png(), "DecompressionBomb"),
    }
    expected: dict[str, str] = {}
    for name, (data, error_class) in files.items():
        _replace(dir / name)
        (dir / name).write_bytes(data)
        expected[name] = error_class

    _replace(dir / "broken_link.md")
    os.symlink("missing_target.md", dir / "broken_link.md")
    expected["broken_link.md"] = "BrokenSymlink"

    for name, target in (("loop_a.txt", "loop_b.txt"), ("loop_b.txt", "loop_a.txt")):
        _replace(dir / name)
        os.symlink(target, dir / name)
        expected[name] = "SymlinkLoop"
    return expected


def write_unreadable(dir: Path) -> Path:
    """Write ``secret.txt`` with mode 000 (expected "UnreadableFile").

    Root ignores file modes: a caller running as root must drop CAP_DAC_OVERRIDE (and
    CAP_DAC_READ_SEARCH) before reading it for the error to occur.
    """
    path = Path(dir) / "secret.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o600)
    _replace(path)
    path.write_text("The combination is written down somewhere else.\n", encoding="utf-8")
    path.chmod(0o000)
    return path


def write_fifo(dir: Path) -> Path:
    """Create the named pipe ``pipe.txt`` (expected "NotRegularFile"). Never open it: a
    reader would block until a writer appears."""
    path = Path(dir) / "pipe.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path)
    os.mkfifo(path)
    return path

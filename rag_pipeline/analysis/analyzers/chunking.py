"""Split document sections into overlapping, size-bounded chunks.

A "token" is a regex word-or-punctuation token (``\\w+|[^\\w\\s]``): cheap, deterministic and
model-independent, and a slight over-count of what a subword tokenizer sees for ordinary
prose, so a chunk of ``max_tokens`` tokens rarely overflows the embedding model's window.

Splitting prefers, in order: a paragraph break, a line break, a sentence end, and only then
a cut between two arbitrary tokens. A preferred break is only taken in the second half of
the window, so chunks stay reasonably full. Consecutive chunks of one section overlap by
about ``overlap`` tokens (between half and one and a half times it), starting at a sentence
boundary when one is that near, else exactly ``overlap`` tokens back. Chunks never
span two sections, so never two pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.analysis.analyzers.documents import Section

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Full-width CJK punctuation ends sentences too.
_SENTENCE_END = frozenset({".", "!", "?", "。", "！", "？", "…"})  # noqa: RUF001

# Break priorities between token i-1 and token i.
_NONE, _SENTENCE, _LINE, _PARAGRAPH = 0, 1, 2, 3


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    # page/section from the section, char_start/char_end within the section's text, and
    # the section's own offset (if it had one) as section_char_start.
    locator: dict[str, Any] = field(default_factory=dict)
    token_count: int = 0


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN_RE.finditer(text))


def _break_priorities(text: str, starts: list[int], ends: list[int]) -> list[int]:
    """priority[i]: how good a place it is to start a chunk at token i."""
    prio = [_NONE] * len(starts)
    for i in range(1, len(starts)):
        gap = text[ends[i - 1] : starts[i]]
        newlines = gap.count("\n")
        if newlines >= 2:
            prio[i] = _PARAGRAPH
        elif newlines == 1:
            prio[i] = _LINE
        elif gap and text[starts[i - 1] : ends[i - 1]] in _SENTENCE_END:
            prio[i] = _SENTENCE
    return prio


def _split_points(
    prio: list[int], n: int, max_tokens: int, overlap: int
) -> Iterator[tuple[int, int]]:
    """Token ranges [start, end) covering 0..n, each at most max_tokens long."""
    start = 0
    min_len = max(1, max_tokens // 2)
    while True:
        limit = start + max_tokens
        if limit >= n:
            yield (start, n)
            return
        end = limit  # hard cut if no better break exists
        lo = start + min_len
        for level in (_PARAGRAPH, _LINE, _SENTENCE):
            # The latest break of this level within the window's second half.
            found = next((b for b in range(limit, lo - 1, -1) if prio[b] >= level), None)
            if found is not None:
                end = found
                break
        yield (start, end)
        if overlap <= 0:
            next_start = end
        else:
            # Start the next chunk at the sentence (or stronger) boundary nearest to
            # ``overlap`` tokens back, within half an overlap either way; failing that,
            # exactly ``overlap`` tokens back.
            target = end - overlap
            lo = max(target - overlap // 2, start + 1)
            hi = end - max(1, overlap // 2)
            candidates = [b for b in range(lo, hi + 1) if prio[b] >= _SENTENCE]
            next_start = (
                min(candidates, key=lambda b: (abs(b - target), b))
                if candidates
                else max(target, start + 1)
            )
        start = max(next_start, start + 1)  # always make progress


def chunk_sections(
    sections: Iterable[Section], max_tokens: int = 512, overlap: int = 64
) -> list[Chunk]:
    """Chunks of every section, numbered 0..n-1 across the document, in order."""
    return list(iter_chunks(sections, max_tokens, overlap))


def iter_chunks(
    sections: Iterable[Section], max_tokens: int = 512, overlap: int = 64
) -> Iterator[Chunk]:
    """chunk_sections, lazily: a caller that caps the chunk count stops the work there."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(
            f"overlap must be in [0, max_tokens), got {overlap} with max_tokens={max_tokens}"
        )
    ordinal = 0
    for section in sections:
        text = section.text
        matches = list(TOKEN_RE.finditer(text))
        if not matches:
            continue
        starts = [m.start() for m in matches]
        ends = [m.end() for m in matches]
        prio = _break_priorities(text, starts, ends)
        base = {k: v for k, v in section.locator.items() if k not in ("char_start", "char_end")}
        if "char_start" in section.locator:
            base["section_char_start"] = section.locator["char_start"]
        for a, b in _split_points(prio, len(matches), max_tokens, overlap):
            char_start, char_end = starts[a], ends[b - 1]
            yield Chunk(
                ordinal=ordinal,
                text=text[char_start:char_end],
                locator={**base, "char_start": char_start, "char_end": char_end},
                token_count=b - a,
            )
            ordinal += 1

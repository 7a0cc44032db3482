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

With a ``ModelTokenizer`` the same splitting is measured in the model's own word pieces: each
regex token weighs the word pieces it holds (a very long one, say a hash or a URL, is cut at
word-piece boundaries), and every chunk is checked against the window with its prefix (the
title the MV axis puts in front), so the model never truncates a chunk.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from rag_pipeline.analysis.analyzers.documents import Section

if TYPE_CHECKING:
    from rag_pipeline.analysis.analyzers.token_budget import ModelTokenizer

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
    prio: list[int], n: int, max_tokens: int, overlap: int, weights: list[int] | None = None
) -> Iterator[tuple[int, int]]:
    """Token ranges [start, end) covering 0..n, each weighing at most max_tokens (a token
    weighs 1, or its ``weights``: word pieces; a single token heavier than that stands alone).
    """
    cum = list(accumulate(weights or [1] * n, initial=0))  # cum[i]: weight of tokens 0..i-1
    start = 0
    min_len = max(1, max_tokens // 2)
    while True:
        limit = max(bisect_right(cum, cum[start] + max_tokens) - 1, start + 1)
        if limit >= n:
            yield (start, n)
            return
        end = limit  # hard cut if no better break exists
        lo = max(bisect_left(cum, cum[start] + min_len), start + 1)
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
            target = bisect_left(cum, cum[end] - overlap)
            lo = max(bisect_left(cum, cum[end] - overlap - overlap // 2), start + 1)
            hi = bisect_right(cum, cum[end] - max(1, overlap // 2)) - 1
            candidates = [b for b in range(lo, hi + 1) if prio[b] >= _SENTENCE]
            next_start = (
                min(candidates, key=lambda b: (abs(cum[b] - cum[target]), b))
                if candidates
                else max(target, start + 1)
            )
        start = max(next_start, start + 1)  # always make progress


def _word_pieces(
    text: str, starts: list[int], ends: list[int], tokenizer: ModelTokenizer, cap: int
) -> tuple[list[int], list[int], list[int]]:
    """Tokens re-cut so none holds more than ``cap`` word pieces, and each one's word pieces."""
    per_token: list[list[tuple[int, int]]] = [[] for _ in starts]
    for a, b in tokenizer.spans(text):
        if b > a:  # a piece belongs to the regex token its first character is in
            i = bisect_right(starts, a) - 1
            if i >= 0 and a < ends[i]:
                per_token[i].append((a, b))
    out_s: list[int] = []
    out_e: list[int] = []
    weights: list[int] = []
    for s, e, pieces in zip(starts, ends, per_token, strict=True):
        if len(pieces) <= cap:
            out_s.append(s)
            out_e.append(e)
            weights.append(max(1, len(pieces)))
            continue
        for k in range(0, len(pieces), cap):
            group = pieces[k : k + cap]
            out_s.append(s if k == 0 else group[0][0])
            out_e.append(e if k + cap >= len(pieces) else pieces[k + cap][0])
            weights.append(len(group))
    return out_s, out_e, weights


def chunk_sections(
    sections: Iterable[Section],
    max_tokens: int = 512,
    overlap: int = 64,
    *,
    tokenizer: ModelTokenizer | None = None,
    prefix: str = "",
) -> list[Chunk]:
    """Chunks of every section, numbered 0..n-1 across the document, in order.

    With ``tokenizer``, ``max_tokens`` and ``overlap`` count its word pieces and every chunk,
    after ``prefix`` and a newline (what the MV axis embeds), fits ``max_tokens``.
    """
    return list(iter_chunks(sections, max_tokens, overlap, tokenizer=tokenizer, prefix=prefix))


def iter_chunks(
    sections: Iterable[Section],
    max_tokens: int = 512,
    overlap: int = 64,
    *,
    tokenizer: ModelTokenizer | None = None,
    prefix: str = "",
) -> Iterator[Chunk]:
    """chunk_sections, lazily: a caller that caps the chunk count stops the work there."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(
            f"overlap must be in [0, max_tokens), got {overlap} with max_tokens={max_tokens}"
        )
    prefix_tokens = tokenizer.count(prefix) if tokenizer is not None and prefix else 0
    # A prefix may take at most half the window (a longer title is cut by the model anyway).
    budget = max(max_tokens - prefix_tokens, max_tokens // 2)
    ordinal = 0
    for section in sections:
        text = section.text
        matches = list(TOKEN_RE.finditer(text))
        if not matches:
            continue
        starts = [m.start() for m in matches]
        ends = [m.end() for m in matches]
        weights = None
        if tokenizer is not None:
            starts, ends, weights = _word_pieces(text, starts, ends, tokenizer, max(1, budget // 4))
        prio = _break_priorities(text, starts, ends)
        base = {k: v for k, v in section.locator.items() if k not in ("char_start", "char_end")}
        if "char_start" in section.locator:
            base["section_char_start"] = section.locator["char_start"]
        ranges = _fitting_ranges(
            text, starts, ends, prio, weights, budget, overlap, tokenizer, prefix, max_tokens
        )
        for a, b, n_tokens in ranges:
            char_start, char_end = starts[a], ends[b - 1]
            yield Chunk(
                ordinal=ordinal,
                text=text[char_start:char_end],
                locator={**base, "char_start": char_start, "char_end": char_end},
                token_count=n_tokens,
            )
            ordinal += 1


def _fitting_ranges(
    text: str,
    starts: list[int],
    ends: list[int],
    prio: list[int],
    weights: list[int] | None,
    budget: int,
    overlap: int,
    tokenizer: ModelTokenizer | None,
    prefix: str,
    window: int,
) -> Iterator[tuple[int, int, int]]:
    """Token ranges with their token counts; with a tokenizer, each re-measured as the model
    will see it (prefix included) and the section split tighter until every one fits."""
    n = len(starts)
    if tokenizer is None:
        yield from ((a, b, b - a) for a, b in _split_points(prio, n, budget, overlap))
        return
    for _ in range(8):  # word pieces are near-additive: one tighter pass almost always fits
        ranges = _split_points(prio, n, budget, min(overlap, budget // 2), weights)
        out = []
        worst = 0
        for a, b in ranges:
            piece = text[starts[a] : ends[b - 1]]
            used = tokenizer.count(f"{prefix}\n{piece}" if prefix else piece)
            worst = max(worst, used - window)
            out.append((a, b, used))
        if worst <= 0 or budget <= 1:
            break
        budget = max(1, budget - max(worst, budget // 20))
    yield from out

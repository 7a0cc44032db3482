"""Metadata-first tag search: entities named in the query are matched against the snapshot's
``content_tags`` (image keywords, VLM tags) before anything else.

The tag vocabulary is read once per searcher. A query's entities are its word n-grams that are
tags (longest first, "fishing boat" before "boat"; a plural "boats" finds "boat"). Units
carrying any of them are the tag axis' candidates, ranked by how many of the entities they carry;
``SearchFilters.tags`` is the hard pre-filter form (every tag must be present).
"""

from __future__ import annotations

import re
from typing import Any

from rag_pipeline.snapshot.schema import normalize_tag
from serving.filters import sql_list

MAX_TAG_WORDS = 4
_WORD = re.compile(r"[\w'-]+", re.UNICODE)


class TagIndex:
    def __init__(self, dataset: Any):
        self.vocabulary: set[str] = set()
        if "content_tags" in dataset.schema.names:
            col = dataset.to_table(
                columns=["content_tags"], filter="array_length(content_tags) > 0"
            ).column("content_tags")
            for tags in col.to_pylist():
                self.vocabulary.update(tags or ())
        self.max_words = min(
            MAX_TAG_WORDS, max((len(t.split()) for t in self.vocabulary), default=0)
        )

    def entities(self, query: str) -> list[str]:
        if not self.vocabulary:
            return []
        words = [w.casefold() for w in _WORD.findall(query)]
        found: list[str] = []
        used = [False] * len(words)
        for n in range(self.max_words, 0, -1):
            for i in range(len(words) - n + 1):
                if any(used[i : i + n]):
                    continue
                phrase = normalize_tag(" ".join(words[i : i + n]))
                for cand in (phrase, phrase[:-1] if phrase.endswith("s") else None):
                    if cand and cand in self.vocabulary:
                        found.append(cand)
                        used[i : i + n] = [True] * n
                        break
        return list(dict.fromkeys(found))

    @staticmethod
    def search(
        dataset: Any, entities: list[str], where: str, limit: int
    ) -> tuple[list[int], list[float]]:
        """Row ids and scores (entities carried) of units carrying any of ``entities``."""
        tbl = dataset.to_table(
            columns=["content_tags"],
            with_row_id=True,
            filter=f"({where}) AND array_has_any(content_tags, {sql_list(entities)})",
        )
        wanted = set(entities)
        scored = sorted(
            (
                (float(len(wanted.intersection(tags or ()))), rid)
                for rid, tags in zip(
                    tbl.column("_rowid").to_pylist(),
                    tbl.column("content_tags").to_pylist(),
                    strict=True,
                )
            ),
            key=lambda sr: (-sr[0], sr[1]),
        )[:limit]
        return [rid for _, rid in scored], [s for s, _ in scored]

"""LanceDB's built-in hybrid search (vector + FTS, ``RRFReranker``) over a serving snapshot: the
baseline that serving's own hybrid (``Searcher.search``) is compared with.

The comparison is kept fair: the same snapshot table version, query encoder, SQL filter (less
the clauses every row passes) and BM25 fields, boosts and ``fts_combine`` as the ``Searcher``
it is given, and RRF with the same k. It returns unit ids only (no hits, no explanations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lancedb import query as lancedb_query
from lancedb.rerankers import RRFReranker

from rag_pipeline.retrieval.explain import query_terms
from rag_pipeline.retrieval.fusion import RRF_K
from serving.errors import AxisUnavailable
from serving.filters import sql_and
from serving.models import SearchFilters
from serving.principal import Principal

if TYPE_CHECKING:
    from serving.searcher import Searcher


def lancedb_hybrid(
    searcher: Searcher,
    query: str,
    principal: Principal,
    k: int = 10,
    *,
    filters: SearchFilters | None = None,
) -> list[str]:
    """Unit ids from LanceDB's built-in hybrid search over ``searcher``'s snapshot.

    Same filters (less the clauses every row passes) and FTS fields/boosts as
    ``searcher.search``; a query with no FTS terms (stopwords only) runs the vector side alone.
    """
    if searcher.encoder is None:
        raise AxisUnavailable(
            f"lancedb_hybrid needs the MV axis: {searcher.unavailable.get('mv', 'unavailable')}"
        )
    terms = query_terms(query)
    vec = searcher.encoder.encode_query(query)
    where = searcher.where(principal, filters)
    if not terms:  # nothing for FTS to match: the vector side alone
        q = (
            searcher.table.search(vec, vector_column_name="vector_mv")
            .metric("cosine")
            .select(["unit_id", "_distance"])
        )
        mv_where = sql_and(where, searcher.mv_clause)
        q = q.where(mv_where, prefilter=True) if mv_where else q
        return q.limit(k).to_arrow().column("unit_id").to_pylist()
    q = (
        searcher.table.search(query_type="hybrid", vector_column_name="vector_mv")
        .vector(vec)
        .text(searcher.fts_query(" ".join(terms), lancedb_query))
        .metric("cosine")
        .rerank(RRFReranker(K=RRF_K))
        .select(["unit_id"])
    )
    q = q.where(where, prefilter=True) if where else q
    return q.limit(k).to_arrow().column("unit_id").to_pylist()

"""rag_pipeline: files -> evidence-centric catalog -> search snapshot -> served queries.

The core (contracts, catalog, analyzers, snapshot, retrieval) imports no Dagster; the Dagster
wiring lives in ``rag_pipeline.definitions`` and ``rag_pipeline.defs``.
"""

__version__ = "0.1.0"

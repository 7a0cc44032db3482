"""rag_pipeline: folders of files -> evidence-centric catalog -> search snapshot -> served queries.

The stages, in the order data flows (each a package; see docs/architecture.md):

- ``discovery``: source folders -> assets and asset_versions in the catalog
- ``planning``: current asset versions x profiles -> plan files per profile x shard
- ``analysis``: plans + file bytes -> staged result envelopes (``analysis.analyzers`` inside)
- ``storage``: staged envelopes -> DuckDB catalog + LanceDB vector store (and plan files)
- ``snapshot``: evidence selected by the policy -> a versioned LanceDB search snapshot
- ``retrieval``: fusion and explanation, shared by ``serving`` and ``evals``

At the bottom: ``contracts``, ``errors``, ``goldset_schema``, ``media_types`` and ``settings``.
None of these import Dagster; the Dagster wiring is ``definitions`` + ``defs/<asset group>/``,
and ``launcher`` runs the graph from the CLI.
"""

__version__ = "0.1.0"

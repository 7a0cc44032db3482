"""The Dagster wiring, one folder per asset group; ``rag_pipeline.definitions`` loads it all.

- ``catalog/``: ``assets`` + ``asset_versions`` (the ``discover`` multi-asset), ``discover_job``
  and the file sensors (``source_files_sensor``, ``discover_done_sensor``)
- ``analysis/``: ``analysis_runs``, ``inference_runs``, ``evidence`` (+ ``envelopes_verified``),
  ``cpu_job`` / ``gpu_job`` and their sensors (``profiles_sensor``, ``analysis_done_sensor``)
- ``search/``: ``search_snapshot`` (+ its checks, the blocking ``smoke_eval_gates`` among them),
  ``promoted_snapshot`` and ``publish_job``
- ``evals/``: ``nightly_eval``, ``nightly_eval_job`` and ``nightly_eval_schedule``

Shared, defining nothing themselves: ``resources`` (the ``pipeline`` resource, bound here for the
whole folder), ``partitions``, ``owners``, ``run_tags``, ``metadata`` (Markdown summaries) and
``evaluation`` (running ``evals`` against snapshots).

``dg.load_defs`` registers every asset, check, job, sensor and schedule found at the top level
of any module below this one, so a module imports another module's definitions as a module
(``from rag_pipeline.defs.analysis import jobs as analysis_jobs``), never by name: a name
imported into a second module would be registered twice. ``__init__`` files stay empty.
"""

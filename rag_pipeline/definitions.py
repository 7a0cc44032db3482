"""Dagster entry point (``dagster dev -m rag_pipeline.definitions``, ``workspace.yaml``).

Dagster's folder loader finds every asset, asset check, job, sensor and schedule under
``rag_pipeline.defs`` (one folder per asset group) and the resources bound in
``defs/resources.py``. ``rag_pipeline/dg.toml`` names that folder; it ships inside the package,
so an installed wheel loads exactly as a checkout does.
"""

from pathlib import Path

import dagster as dg

import rag_pipeline

defs = dg.load_from_defs_folder(path_within_project=Path(rag_pipeline.__file__).parent)

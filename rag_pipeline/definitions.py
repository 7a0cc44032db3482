"""Dagster entry point (``dagster dev -m rag_pipeline.definitions``, ``workspace.yaml``).

``dg.load_defs`` loads every asset, asset check, job, sensor and schedule under
``rag_pipeline.defs`` (one folder per asset group) and the resources bound in
``defs/resources.py``. ``project_root`` is given so that no pyproject.toml is needed at run time
(an installed wheel has none); ``dg.load_from_defs_folder`` would read the project's config.
"""

from pathlib import Path

import dagster as dg

import rag_pipeline.defs

defs = dg.load_defs(defs_root=rag_pipeline.defs,
                    project_root=Path(rag_pipeline.defs.__file__).resolve().parents[2])

"""The one resource: pipeline settings, overridable per run or per test.

``defs`` binds it as ``pipeline`` for everything ``dg.load_defs`` finds under ``rag_pipeline.defs``.
"""

import dagster as dg

from rag_pipeline.settings import Settings


class PipelineSettings(dg.ConfigurableResource):
    """Where the catalog, vector store and snapshots live; which folders are sources.

    Empty fields fall back to RAG_* environment variables, then to the embedded defaults.
    """

    data_dir: str = ""
    sources: list[str] = []  # noqa: RUF012 - a pydantic field: each instance gets a copy
    tenant_id: str = ""

    def settings(self) -> Settings:
        overrides: dict = {}
        if self.data_dir:
            overrides["data_dir"] = self.data_dir
        if self.sources:
            overrides["sources"] = self.sources
        if self.tenant_id:
            overrides["tenant_id"] = self.tenant_id
        return Settings.from_env(**overrides)


# A run here is one partition of one asset (or discover's two steps): a step subprocess on top
# of the run's own process would pay the imports (torch, the analyzers) twice per partition.
defs = dg.Definitions(resources={"pipeline": PipelineSettings()}, executor=dg.in_process_executor)

"""Analyzers: bytes (or texts) in -> evidence out. They know nothing of plans, workers, the
catalog or Dagster."""

"""Builders of random-weight models for tests and benchmarks (never used by the pipeline)."""

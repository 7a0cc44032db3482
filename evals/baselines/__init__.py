"""Comparison baselines: other engines' search over the same snapshot, for evals and benchmarks
only (never served)."""

"""Retrieval: per-axis candidate lists in -> fused, explained rankings out (pure functions
shared by serving and evals)."""

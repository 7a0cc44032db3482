"""Offline retrieval evaluation: IR metrics over runs and graded relevance judgements."""

"""Serving's refusals: errors that are the server's (not the request's) problem.

``rag_pipeline.cli`` recognises them by class through ``sys.modules["serving.errors"]``, so
that its start-up never imports serving.
"""

from __future__ import annotations


class SearchError(Exception):
    """Base class of serving errors that are the server's (not the request's) problem."""


class AxisUnavailable(SearchError):
    """A request named an axis this snapshot or this build cannot serve."""


class ModelMismatch(SearchError):
    """The query-time model is not the model that built the snapshot's vectors."""

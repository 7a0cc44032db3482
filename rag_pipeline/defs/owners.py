"""Who owns the pipeline's assets (shown in the UI and used by alerting)."""

OWNERS = ["team:search-platform"]

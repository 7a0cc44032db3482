"""Packaged configuration: the default models.yaml and the embedded Dagster instance file."""

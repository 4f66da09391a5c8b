"""The errors shared across layers, in one module that imports nothing of the project."""

from __future__ import annotations


class ConfigError(ValueError):
    """The pipeline config is invalid; the message names the file and the bad key."""


class StageOrderError(ValueError):
    """The pipeline's `stages` cannot run in that order; the message names the conflict."""


class ReleaseError(RuntimeError):
    """A release cannot go on (no input left, a shard failed past ingest, a bad model file)."""

"""Errors of ``autophagy pipeline compile|submit``: ``ValueError`` subclasses with clear messages.

Imports nothing heavy, so the CLI can name these types without importing kfp.
"""

from __future__ import annotations

from autophagy.config import ConfigError


class PipelineError(ValueError):
    """The pipeline could not be built, compiled or submitted."""


class PipelineConfigError(PipelineError, ConfigError):
    """The ``cluster:`` section (or another pipeline option) is invalid."""


class PipelineSubmitError(PipelineError):
    """The Kubeflow Pipelines API could not be reached or refused the run."""

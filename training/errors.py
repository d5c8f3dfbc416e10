"""Errors the training tools raise for bad input: each names the file or key and says what to do."""

from __future__ import annotations


class TrainingInputError(ValueError):
    """A dataset, model or argument given to a training command is unusable (message says why)."""

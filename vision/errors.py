"""Errors raised by the vision runtime. Each message names the file it is about."""

from __future__ import annotations


class VisionError(Exception):
    """Base class for every error the vision runtime raises on purpose."""


class ModelLoadError(VisionError):
    """A model file is missing, corrupt, or lacks what we need to run it."""


class ImageError(VisionError):
    """An image is missing, unreadable, empty or too small to inspect."""

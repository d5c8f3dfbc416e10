"""The runnable examples in `vision`'s docstrings stay runnable (supervision style: each module shows how
it is called)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "vision.anomaly",
    "vision.detections",
    "vision.digest",
    "vision.draw",
    "vision.images",
    "vision.postprocess",
    "vision.preprocess",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

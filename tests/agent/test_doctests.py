"""The runnable examples in the agent's docstrings stay runnable."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "contract.yamlconf",
    "edge_agent.inference_budget",
    "edge_agent.journal",
    "edge_agent.metrics",
    "edge_agent.publishers.feed",
    "edge_agent.publishers.registry",
    "training.promotion",
    "training.raw_labels",
    "vision.rules",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

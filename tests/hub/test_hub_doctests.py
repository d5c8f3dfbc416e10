"""The runnable examples in the hub's docstrings stay runnable."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hub.db",
    "hub.store",
    "hub.config",
    "hub.server",
    "hub.registry",
    "hub.auth",
    "hub.commands",
    "hub.overview",
    "contract.model_signing",
    "contract.login_throttle",
    "contract.web",
    "contract.session_store",
    "mes.store",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

"""Fixtures of the hub tests: a throwaway PostgreSQL server per session and a store URL per backend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pg_support, hub_support

from pg_support import PgServer, why_no_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty hub database: an SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture(scope="session")
def tiny_classify_onnx(tiny_model_dir: Path) -> Path:
    """A tiny real classifier: its top-1 class is one whole-image detection, so every part is NG
    under a recipe without `ok_classes` (lines that need NG parts and archived NG images)."""
    from tests.model_factory import tiny_model

    return tiny_model("yolov8n-cls", tiny_model_dir)

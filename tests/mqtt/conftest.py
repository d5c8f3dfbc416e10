"""Fixtures for the MQTT tests: a real mosquitto per test (helpers: `mqtt_support`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_support import MOSQUITTO, SITE, SKIP_REASON, Mosquitto

from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip(SKIP_REASON)
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[ResultJournal]:
    j = ResultJournal(tmp_path / "journal.sqlite")
    yield j
    j.close()


@pytest.fixture
def context(journal: ResultJournal) -> PublisherContext:
    return PublisherContext(site=SITE, boot_id=uuid.uuid4().hex, journal=journal)

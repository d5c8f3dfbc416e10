"""Fixtures for the ZeroMQ tests: a real journal and publisher context (helpers: `zmq_support`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from zmq_support import SITE

from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[ResultJournal]:
    j = ResultJournal(tmp_path / "journal.sqlite")
    yield j
    j.close()


@pytest.fixture
def publisher_context(journal: ResultJournal) -> PublisherContext:
    return PublisherContext(site=SITE, boot_id=uuid.uuid4().hex, journal=journal)

"""A slow publisher never stalls inference: it is fed from its own bounded queue; what it cannot take is
dropped and counted (best effort), while the journal keeps every result."""

from __future__ import annotations

import threading
from typing import Literal

import pytest
from agent_helpers import folder_line, wait_until, write_site
from pydantic import BaseModel

from contract.result import InspectionResult
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import Publisher, PublisherContext
from edge_agent.publishers.registry import register_publisher, unregister_publisher


class StuckConfig(BaseModel):
    type: Literal["stuck"] = "stuck"
    name: str = "stuck"


class StuckPublisher(Publisher):
    """Blocks in notify() until released: the worst a plug-in can do."""

    def __init__(self, config: StuckConfig, context: PublisherContext) -> None:
        self.name = config.name
        self.release = threading.Event()
        self.seen: list[int] = []
        self.statuses: list[str] = []

    def start(self, journal: ResultJournal) -> None:
        pass

    def notify(self, result: InspectionResult) -> None:
        self.release.wait()
        self.seen.append(result.seq or 0)

    def publish_status(self, line: str, status: dict) -> None:
        self.statuses.append(status["state"])

    def stop(self, timeout: float = 5.0) -> None:
        self.release.set()


@pytest.fixture
def stuck_type():
    register_publisher("stuck", StuckConfig, StuckPublisher)
    yield
    unregister_publisher("stuck")


def test_blocked_publisher_does_not_stall_the_line(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory, stuck_type
):
    line = folder_line("l1", synthetic_images, tiny_detect_onnx)
    line["cameras"][0]["source"]["mode"] = "loop"
    agent = agent_factory(write_site(tmp_path, [line], publishers=[{"type": "stuck"}]))
    agent.start()
    feed = agent.feeds[0]
    feed.maxlen = 5  # a small queue, so the test sees drops quickly
    publisher: StuckPublisher = feed.publisher  # type: ignore[assignment]
    # the publisher is blocked on the first result; the line goes on inspecting and journaling
    wait_until(lambda: agent.journal.last_seq() >= 40)
    assert publisher.seen == []
    stats = agent.publisher_stats()["stuck"]
    assert stats["feed_dropped"] > 0 and stats["feed_backlog"] <= 5
    publisher.release.set()
    wait_until(lambda: len(publisher.seen) >= 2)
    assert publisher.seen == sorted(publisher.seen)  # order kept, oldest dropped first
    # the journal lost nothing: once the looping line is paused, every seq handed out is a stored row
    agent.lines["l1"].pause()
    wait_until(lambda: agent.journal.count() == agent.journal.last_seq(), timeout=10)

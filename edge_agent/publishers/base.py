"""The publisher plug-in interface. Every output (ZeroMQ, OPC UA, MES) implements it.

The daemon journals each result first, then calls `notify()` on every publisher. `notify()` must
never block inference: a publisher queues the result and works in its own thread or event loop.
Guaranteed publishers (MES acked delivery, OPC UA history) treat `notify()` as a wake-up only and read
what they owe from the journal with their own cursor (`journal.cursor(name)`), so nothing is lost across
restarts; best-effort publishers (live PUB stream) may drop under load and count what they drop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.result import InspectionResult
from edge_agent.journal import ResultJournal


class Publisher(ABC):
    """Base class for an output. Subclasses are registered in `edge_agent.publishers.registry`."""

    #: unique name of this publisher instance; also its journal cursor name
    name: str = "publisher"
    #: True if every journaled result must reach the peer (then it keeps a journal cursor)
    guaranteed: bool = False

    @abstractmethod
    def start(self, journal: ResultJournal) -> None:
        """Open sockets/servers and start background work. Called once before any notify()."""

    @abstractmethod
    def notify(self, result: InspectionResult) -> None:
        """A result was just committed to the journal. Must return at once."""

    def publish_status(self, line: str, status: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """A line's state changed (running, camera lost, model reloaded...). Optional."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within `timeout`, close sockets, join threads."""

    def stats(self) -> dict[str, float]:
        """Counters for metrics, e.g. sent, dropped, backlog, oldest_undelivered_s."""
        return {}

    @classmethod
    def check(cls, config: Any) -> str | None:
        """`edge-inspect config check`: reach the peer this config names (e.g. log in to the MQTT broker).
        None when all is well, else one line saying what is wrong. Default: nothing to reach."""
        return None


@dataclass
class PublisherContext:
    """What the daemon hands every publisher when it builds it: `Cls(config, context)`."""

    site: str
    boot_id: str
    journal: ResultJournal
    #: line name -> the daemon's running line object; publishers that also *control* lines (OPC UA
    #: methods, PLC trigger tags, ZeroMQ trigger requests) use it, others ignore it.
    lines: Mapping[str, Any] = field(default_factory=dict)
    #: the NG archive's folder (None when archiving is off): the OPC UA server hands archived images out
    archive_dir: Path | None = None

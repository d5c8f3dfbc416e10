"""`PublisherFeed`: hands results to one publisher on its own thread, so no publisher can stall a line.

`Publisher.notify()` must return at once, but a plug-in that blocks anyway (a stuck socket, a slow disk)
would hold up the line's journal thread and, through the bounded result queue, inference. The agent
therefore calls each publisher from a feed thread behind a bounded queue. When the queue is full the
oldest item is dropped and counted: for best-effort outputs that is the documented loss; guaranteed
outputs read what they owe from the journal by cursor, for them a notify is only a wake-up.

Example:
    >>> from edge_agent.publishers.base import Publisher
    >>> class Collect(Publisher):
    ...     def __init__(self): self.got = []
    ...     def start(self, journal): pass
    ...     def notify(self, result): self.got.append(result)
    ...     def stop(self, timeout=5.0): pass
    >>> feed = PublisherFeed(Collect(), maxlen=10); feed.start()
    >>> feed.notify("r1"); feed.stop(); feed.publisher.got
    ['r1']
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from contract.result import InspectionResult
from edge_agent.publishers.base import Publisher

log = logging.getLogger(__name__)


class PublisherFeed:
    def __init__(self, publisher: Publisher, maxlen: int = 10_000) -> None:
        self.publisher = publisher
        self.maxlen = maxlen
        self.dropped = 0
        self.delivered = 0
        self._items: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed/{publisher.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        self._wake.set()

    def notify(self, result: InspectionResult) -> None:
        """Never blocks."""
        self._put(("result", result))

    def publish_status(self, line: str, status: dict[str, Any]) -> None:
        self._put(("status", (line, status)))

    def backlog(self) -> int:
        return len(self._items)

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while True:
                with self._lock:
                    item = self._items.popleft() if self._items else None
                if item is None:
                    break
                kind, payload = item
                try:
                    if kind == "result":
                        self.publisher.notify(payload)
                        self.delivered += 1
                    else:
                        self.publisher.publish_status(*payload)
                except Exception:
                    log.exception("publisher %s: %s failed", self.publisher.name, kind)
            if self._stopping.is_set():
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then stop the thread (the publisher is not stopped)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("publisher %s: %d items not delivered at stop", self.publisher.name, self.backlog())

    def stats(self) -> dict[str, float]:
        return {"feed_backlog": float(self.backlog()), "feed_dropped": float(self.dropped)}

"""`ServerThread`: runs an `opcua.server.VisionServer` in its own thread and event loop.

Importing this module does not import asyncua: the server (and asyncua, ~1 s to import) is made in
the server's own thread on `start()`, so building the OPC UA publisher costs the agent's start nothing.
Results submitted before the server exists are queued and published once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from contract import InspectionResult
from opcua.backend import LineBackend, ResultStore
from opcua.config import OpcUaServerConfig

logger = logging.getLogger("opcua.server")


class ServerThread:
    """Runs a `VisionServer` in its own thread with its own event loop."""

    def __init__(
        self, config: OpcUaServerConfig, lines: Mapping[str, LineBackend], store: ResultStore
    ) -> None:
        self._args = (config, lines, store)
        self._vision: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._early: queue.SimpleQueue[InspectionResult] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start the thread; with `wait`, return once the server listens (raise what made it fail).
        Without, return at once: results submitted meanwhile are published once it listens."""
        self._thread = threading.Thread(target=self._run, name="opcua-server", daemon=True)
        self._thread.start()
        if wait:
            self.wait_started(timeout)

    def wait_started(self, timeout: float = 60.0) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"opcua: server did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    @property
    def started(self) -> bool:
        return self._ready.is_set() and self._error is None

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def vision(self) -> Any:
        """The `opcua.server.VisionServer` (made on first use: importing asyncua takes a second);
        results submitted before are handed to it here."""
        with self._lock:
            if self._vision is None:
                from opcua.server import VisionServer

                self._vision = VisionServer(*self._args)
                while not self._early.empty():
                    self._vision.submit_result(self._early.get_nowait())
            return self._vision

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.vision.start())
        except BaseException as exc:  # handed to start()'s caller (or to wait_started())
            logger.error("opcua: the server failed to start: %s", exc)
            self._error = exc
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self.vision.stop())
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.vision.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def submit_result(self, result: InspectionResult) -> None:
        with self._lock:
            if self._vision is None:  # not made yet: `vision` hands it over
                self._early.put(result)
                return
            vision = self._vision
        vision.submit_result(result)

    def line_changed(self, line: str) -> None:
        if self._vision is not None:
            self.vision.line_changed(line)

    @property
    def endpoint_url(self) -> str:
        return self.vision.endpoint_url

    def stop(self, timeout: float = 5.0) -> None:
        # a server still starting (NodeSet import) finishes its start first: stopping the loop under
        # it would leave a half-built server and a misleading "failed to start"
        if self._thread is not None:
            self._ready.wait(max(timeout, 30.0))
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def stats(self) -> dict[str, float]:
        if self._vision is None:
            return {"submitted": self._early.qsize(), "published": 0, "backlog": self._early.qsize()}
        return self.vision.stats()

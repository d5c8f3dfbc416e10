"""The reference MES receiver: a ROUTER that stores every result exactly once, then acknowledges it.

Read this file top to bottom to build your own MES adapter; the rules it follows are the contract:

1. Receive what is waiting (up to `max_batch` messages) from any number of agents.
2. Store the batch in **one committed SQLite transaction** (`INSERT OR IGNORE` on `result_id`: a resend is
   recognised and stored once).
3. Only then acknowledge each message to the agent that sent it: `[b"ack", {"acks": [[seq, result_id,
   status], ...]}]`. A crash between 2 and 3 only causes a resend, which step 2 absorbs.

Run it with `edge-inspect mes listen --endpoint tcp://0.0.0.0:5560 --store results.sqlite`.

Example:
    >>> import tempfile, pathlib
    >>> receiver = MesReceiver("tcp://127.0.0.1:*", pathlib.Path(tempfile.mkdtemp()) / "mes.sqlite",
    ...                        ServerSecurity(security="plain"))
    >>> receiver.start()
    >>> receiver.endpoint.startswith("tcp://127.0.0.1:")
    True
    >>> receiver.stop()
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import zmq

from contract.result import InspectionResult
from contract.zmq_security import CurveServer, ServerSecurity, make_curve_server
from contract.zmq_wire import WireError, decode
from mes.store import ResultStore, StoreItem, StoreStatus

log = logging.getLogger(__name__)


class MesReceiver:
    """ROUTER + `ResultStore`; `start()` runs it in a thread, `serve_forever()` in the caller's."""

    def __init__(
        self,
        endpoint: str,
        store_path: str | Path | None,
        security: ServerSecurity,
        *,
        durability: Literal["normal", "full"] = "full",
        max_batch: int = 1000,
        on_stored: Callable[[InspectionResult, StoreStatus], None] | None = None,
        store_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.requested_endpoint = endpoint
        self.store_path = Path(store_path) if store_path is not None else None
        self.security = security
        self.durability = durability
        self.max_batch = max_batch
        self.on_stored = on_stored
        # another store with the same store_batch()/close() contract (the programme hub's database)
        self.store_factory = store_factory
        self.endpoint: str | None = None
        self.counters = {"received": 0, "stored": 0, "duplicate": 0, "rejected": 0}
        self._stopping = threading.Event()
        self._stop_requested = False  # set from signal handlers: a plain flag, no lock
        self._thread: threading.Thread | None = None
        self._zctx: zmq.Context | None = None
        self._curve: CurveServer | None = None
        self._router: zmq.Socket | None = None
        self.store: ResultStore | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the store and bind (raises a clear error if the endpoint is taken)."""
        if self.store_factory is not None:
            self.store = self.store_factory()
        else:
            self.store = ResultStore(self.store_path, self.durability)
        self._zctx = zmq.Context()
        self._curve = make_curve_server(self._zctx, self.security)
        self._router = self._zctx.socket(zmq.ROUTER)
        self._router.linger = 0
        # No inbound high-water mark: the senders' windows bound what can arrive. With one, a busy
        # receiver's full inbound pipe stops the engine's input, and an ack sent to that peer afterwards
        # aborted the process in libzmq 4.3.5 (`Assertion failed: !_io_error (stream_engine_base.cpp)`,
        # seen with 15 agents delivering to one hub on a loaded machine).
        self._router.rcvhwm = 0
        if self._curve is not None:
            self._curve.apply(self._router)
        try:
            self._router.bind(self.requested_endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise RuntimeError(f"MES receiver cannot bind {self.requested_endpoint!r}: {exc}") from exc
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        # CURVE: an agent whose key leaves the authorised folder loses its live connection too
        self._guard = self._curve.guard(self._router, "MES receiver") if self._curve is not None else None
        log.info("MES receiver on %s storing into %s", self.endpoint, getattr(self.store, "path", ""))

    def start(self) -> None:
        self.open()
        self._thread = threading.Thread(target=self._loop, name="mes-receiver", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Open (unless open) and serve until `stop()` or Ctrl-C."""
        if self._router is None:
            self.open()
        try:
            self._loop()
        finally:
            self.close()

    def request_stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread).

        Only a plain attribute is written: `Event.set()` takes a lock, and a second signal arriving
        while the first handler holds it would deadlock the main thread.
        """
        self._stop_requested = True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            self.close()

    def close(self) -> None:
        if self._router is not None:
            self._router.close(0)
            self._router = None
        if self._curve is not None:
            self._curve.stop()
            self._curve = None
        if self._zctx is not None:
            self._zctx.term()
            self._zctx = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- the receive → store → ack loop --------------------------------------------------------
    def _loop(self) -> None:
        assert self._router is not None
        guard = getattr(self, "_guard", None)
        while not (self._stop_requested or self._stopping.is_set()):
            if guard is not None:
                guard.check()
            if not self._router.poll(100):
                continue
            batch: list[tuple[bytes, int | None, str | None, StoreItem]] = []
            while len(batch) < self.max_batch:
                try:
                    parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if guard is not None:
                    guard.note(parts[-1])
                frames = [p.bytes for p in parts]
                batch.append(self._parse(frames[0], frames[1:]))
            self._store_and_ack(batch)

    def _parse(
        self, identity: bytes, frames: list[bytes]
    ) -> tuple[bytes, int | None, str | None, StoreItem]:
        """(sender, header seq, header result_id, what to store): the ack echoes seq and result_id."""
        self.counters["received"] += 1
        header_seq: int | None = None
        header_id: str | None = None
        try:
            message = decode(frames)
            header_seq, header_id = message.header.get("seq"), message.header.get("result_id")
            result = message.result()
            if result.seq != header_seq or result.result_id != header_id:
                raise WireError(f"header (seq {header_seq}, id {header_id}) differs from the body "
                                f"(seq {result.seq}, id {result.result_id})")
            item = StoreItem(result=result, boot_id=message.header.get("boot_id"))
            return identity, header_seq, header_id, item
        except (WireError, ValueError) as exc:
            log.error("rejected a message from the agent (seq %s): %s", header_seq, exc)
            return identity, header_seq, header_id, StoreItem(
                result=None, error=str(exc),
                raw_header=frames[1] if len(frames) > 1 else b"",
                raw_body=frames[2] if len(frames) > 2 else b"",
            )

    def _store_and_ack(self, batch: list[tuple[bytes, int | None, str | None, StoreItem]]) -> None:
        assert self.store is not None and self._router is not None
        statuses = self.store.store_batch([item for *_, item in batch])  # committed when it returns
        acks: dict[bytes, list[list]] = defaultdict(list)
        for (identity, seq, result_id, item), status in zip(batch, statuses, strict=False):
            self.counters[status] += 1
            if seq is not None:  # without a seq the agent could not match an ack anyway
                acks[identity].append([seq, result_id, status])
            if self.on_stored is not None and item.result is not None:
                self.on_stored(item.result, status)
        for identity, entries in acks.items():
            try:
                self._router.send_multipart([identity, b"ack", json.dumps({"acks": entries}).encode()])
            except zmq.ZMQError as exc:  # agent gone: it resends after reconnecting
                log.info("ack to a disconnected agent dropped: %s", exc)

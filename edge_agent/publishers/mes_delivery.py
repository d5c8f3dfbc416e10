"""Acknowledged delivery of every journaled result to the MES over DEALER → ROUTER (`type: mes`).

The journal is the queue: the publisher keeps a cursor (`journal.cursor(name)`: every seq at or below it
was acknowledged) and reads what it owes with `journal.since(cursor)`. Up to `window` results are in
flight at once; each is resent with exponential back-off until the MES answers `ack` for it. The MES
deduplicates by `result_id` (a resend after a lost ack, or after a crash of the agent, is stored once).
So nothing is lost by an agent crash (`kill -9`), an MES outage or a network cut; the price is that the
MES may receive a result more than once, which the reference receiver (`mes.receiver`) absorbs.

Protocol: the agent sends the wire message `[topic, header, body]` (see `contract.zmq_wire`); the MES
answers `[b"ack", JSON {"acks": [[seq, result_id, status], ...]}]` with status `stored`, `duplicate` or
`rejected` (a body it could not parse is kept in its quarantine table and acknowledged, so one bad
message cannot block the line's delivery forever).

`notify()` only wakes the delivery thread (one byte on a local socket pair, skipped when a wake-up is
already pending); it never touches the network.

Durability: reads use the publisher's own SQLite connection (WAL readers never wait for the writer). The
cursor is written through the daemon's journal object (its lock, its durability setting), at most every
`cursor_flush_s` while busy, so a burst of acks costs one small write, not one per ack, and never starves
journal appends. After a crash the cursor may be up to `cursor_flush_s` behind: those results are sent
again and the MES deduplicates them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Literal

import zmq
from pydantic import Field

from contract.result import InspectionResult
from contract.zmq_security import ClientSecurity, apply_curve_client
from contract.zmq_wire import Encoding, encode_result
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import Publisher, PublisherContext

log = logging.getLogger(__name__)

#: while the MES is not connected, how often to try again (sends fail at once, so this is cheap)
_RETRY_UNCONNECTED_S = 0.05


class MesDeliveryConfig(ClientSecurity):
    """`publishers: - type: mes` in the site file: acknowledged delivery to the MES."""

    type: Literal["mes"] = "mes"
    name: str = Field(
        "mes", description="also the journal cursor name: a new name resends the journal (MES dedups)"
    )
    endpoint: str = Field(
        "tcp://127.0.0.1:5560", description="the MES receiver's ROUTER (edge-inspect mes listen --endpoint)"
    )
    window: int = Field(256, ge=1, le=100_000, description="most results sent and not yet acknowledged")
    resend_initial_s: float = Field(1.0, gt=0, description="first resend after this; doubles each time")
    resend_max_s: float = Field(30.0, gt=0, description="longest wait between resends")
    encoding: Encoding = Field("json", description="body encoding: json or msgpack")
    cursor_flush_s: float = Field(
        0.2, ge=0, description="while results keep coming, save the acknowledged position this often"
    )


@dataclass
class _InFlight:
    result: InspectionResult
    due: float  # monotonic time of the next (re)send
    backoff: float
    sends: int = 0  # sends that reached a connected MES (0 = never sent yet)


class MesDeliveryPublisher(Publisher):
    """Guaranteed, acknowledged delivery with a journal cursor; see the module docstring."""

    guaranteed = True
    config_model = MesDeliveryConfig

    def __init__(self, config: MesDeliveryConfig, context: PublisherContext) -> None:
        if config.resend_max_s < config.resend_initial_s:
            raise ValueError(
                f"publisher {config.name!r}: resend_max_s ({config.resend_max_s}) must be >= "
                f"resend_initial_s ({config.resend_initial_s})"
            )
        self.config = config
        self.context = context
        self.name = config.name
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._thread: threading.Thread | None = None
        self._reader: ResultJournal | None = None
        self._in_flight: dict[int, _InFlight] = {}  # seq -> entry, in seq order
        self._next_seq = 0  # highest seq read from the journal and put in flight
        self.cursor = 0  # highest seq with everything at or below it acknowledged (in memory)
        self._persisted_cursor = 0
        self._persisted_at = 0.0
        self._journal: ResultJournal | None = None
        self._zctx: zmq.Context | None = None
        self._dealer: zmq.Socket | None = None
        self.counters = {"sent": 0, "resent": 0, "delivered": 0, "duplicates": 0, "rejected": 0,
                         "stray_acks": 0,
                         "expired_undelivered": 0}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, journal: ResultJournal) -> None:
        # Own connection for reads: WAL readers never wait for, nor hold up, the journal's writer.
        self._reader = ResultJournal(journal.path)
        self._journal = journal
        self.cursor = self._next_seq = self._persisted_cursor = self._reader.cursor(self.name)
        self._zctx = zmq.Context()
        dealer = self._dealer = self._zctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.immediate = 1  # no queueing towards a peer that is not connected: we resend ourselves
        dealer.sndhwm = self.config.window * 4
        dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)  # notice a dead MES behind a silent network
        dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        try:
            apply_curve_client(dealer, self.config)  # a missing/bad key file names itself
            dealer.connect(self.config.endpoint)
        except zmq.ZMQError as exc:
            self._close()
            raise RuntimeError(
                f"publisher {self.name!r}: bad endpoint {self.config.endpoint!r}: {exc}"
            ) from exc
        except Exception:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-delivery", daemon=True)
        self._thread.start()
        log.info("mes delivery %s -> %s from cursor %d", self.name, self.config.endpoint, self.cursor)

    def stop(self, timeout: float = 5.0) -> None:
        """Give in-flight results `timeout` seconds to be acknowledged; the rest goes after a restart."""
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        self._close()
        self._wake_r.close()
        self._wake_w.close()

    def _close(self) -> None:
        if self._dealer is not None:
            self._dealer.close(0)
            self._dealer = None
        if self._zctx is not None:
            self._zctx.term()
            self._zctx = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def notify(self, result: InspectionResult) -> None:
        self._wake()

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # buffer full: the thread has wake-ups pending anyway
            self._wake_w.send(b"\x00")

    def stats(self) -> dict[str, float]:
        reader = self._reader
        backlog, oldest = 0.0, 0.0
        if reader is not None:
            backlog = max(0, reader.last_seq() - self.cursor)
            first = reader.since(self.cursor, limit=1)
            if first:
                oldest = max(0.0, time.time() - first[0].timestamp.timestamp())
        c = self.counters
        return {
            "sent": c["sent"],
            "resent": c["resent"],
            "delivered": c["delivered"],
            "duplicates": c["duplicates"],
            "rejected": c["rejected"],
            "expired_undelivered": c["expired_undelivered"],
            "dropped": 0,  # guaranteed: never drops, the backlog grows instead
            "in_flight": len(self._in_flight),
            "backlog": backlog,
            "oldest_undelivered_s": oldest,
            "cursor": self.cursor,
        }

    # -- delivery thread -----------------------------------------------------------------------
    def _run(self) -> None:
        assert self._dealer is not None
        poller = zmq.Poller()
        poller.register(self._dealer, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            if self._stopping.is_set() and (not self._in_flight or time.monotonic() >= self._stop_deadline):
                break
            if not self._stopping.is_set():
                self._fill_window()
            self._resend_due()
            ready = dict(poller.poll(self._poll_timeout_ms()))
            if self._wake_r.fileno() in ready:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
                self._wake_pending = False
            if self._dealer in ready:
                self._read_acks()
            self._persist_cursor()
        try:
            self._persist_cursor(force=True)
        except Exception:  # journal already closed: the MES deduplicates what gets resent next start
            log.exception("mes delivery %s: could not save cursor %d at stop", self.name, self.cursor)

    def _poll_timeout_ms(self) -> int:
        # Wake for the earliest resend; at most every 0.5 s to notice results journaled without notify()
        # (e.g. by an earlier run before a crash).
        timeout = 0.5
        if self._in_flight:
            earliest = min(entry.due for entry in self._in_flight.values())
            timeout = min(timeout, max(0.0, earliest - time.monotonic()))
        return max(1, int(timeout * 1000))

    def _fill_window(self) -> None:
        assert self._reader is not None
        free = self.config.window - len(self._in_flight)
        if free <= 0:
            return
        for result in self._reader.since(self._next_seq, limit=free):
            assert result.seq is not None
            if result.seq > self._next_seq + 1:
                # Seqs have no holes except rows deleted by journal retention before they were delivered.
                missing = result.seq - self._next_seq - 1
                self.counters["expired_undelivered"] += missing
                log.error("mes delivery %s: %d results (seq %d..%d) were removed by journal retention "
                          "before the MES acknowledged them", self.name, missing, self._next_seq + 1,
                          result.seq - 1)
            entry = _InFlight(result=result, due=0.0, backoff=self.config.resend_initial_s)
            self._in_flight[result.seq] = entry
            self._next_seq = result.seq

    def _resend_due(self) -> None:
        """Send what is due (new entries have due=0). Stops at the first refusal: the MES is not there."""
        now = time.monotonic()
        for entry in list(self._in_flight.values()):
            if entry.due > now:
                continue
            if not self._send(entry, now):
                for waiting in self._in_flight.values():
                    if waiting.due <= now:
                        waiting.due = now + _RETRY_UNCONNECTED_S
                return

    def _send(self, entry: _InFlight, now: float) -> bool:
        assert self._dealer is not None
        frames = encode_result(entry.result, boot_id=self.context.boot_id, encoding=self.config.encoding)
        try:
            self._dealer.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:  # not connected (IMMEDIATE) or the MES's queue is full: no back-off growth
            return False
        self.counters["sent" if entry.sends == 0 else "resent"] += 1
        if entry.sends > 0:
            entry.backoff = min(entry.backoff * 2, self.config.resend_max_s)
        entry.sends += 1
        entry.due = now + entry.backoff
        return True

    def _read_acks(self) -> None:
        assert self._dealer is not None
        acked_any = False
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                if frames[0] != b"ack":
                    raise ValueError(f"unexpected frame {frames[0][:20]!r}")
                acks = json.loads(frames[1])["acks"]
            except (IndexError, ValueError, KeyError, TypeError) as exc:
                log.warning("mes delivery %s: unreadable answer from the MES ignored: %s", self.name, exc)
                continue
            for seq, result_id, status in acks:
                entry = self._in_flight.get(seq)
                if entry is None or entry.result.result_id != result_id:
                    self.counters["stray_acks"] += 1  # ack of a resend already acknowledged
                    continue
                del self._in_flight[seq]
                acked_any = True
                self.counters["delivered"] += 1
                if status == "duplicate":
                    self.counters["duplicates"] += 1
                elif status == "rejected":
                    self.counters["rejected"] += 1
                    log.error("MES rejected result %s (seq %s): kept in its quarantine", result_id, seq)
        if acked_any:
            # Results go in flight in seq order, so all below the oldest one still in flight are acked.
            self.cursor = (next(iter(self._in_flight)) - 1) if self._in_flight else self._next_seq

    def _persist_cursor(self, force: bool = False) -> None:
        if self.cursor <= self._persisted_cursor:
            return
        now = time.monotonic()
        idle = not self._in_flight  # nothing more is coming soon: write now
        if force or idle or now - self._persisted_at >= self.config.cursor_flush_s:
            assert self._journal is not None
            self._journal.set_cursor(self.name, self.cursor)
            self._persisted_cursor, self._persisted_at = self.cursor, now

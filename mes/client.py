"""`StreamClient`: subscribe to an agent's live stream and get every result once, in order, with no gap.

It does the bookkeeping a subscriber needs on top of the best-effort PUB stream:

1. subscribe first (so nothing published from now on is missed by the socket),
2. then ask the agent's ROUTER for a **snapshot** (last status and result per line) or, when you give
   `since_seq` (the last seq you processed, persisted on your side), a **replay** of everything after it,
3. then follow the live stream: a message whose `prev_seq` is not the last seq seen for its line means
   something was missed (subscriber too slow, network, agent restart): the client asks for a replay of
   exactly the missing range and delivers it before the live message. A message already seen is skipped.
   A heartbeat whose seq is ahead of the last one seen triggers the same catch-up.

Example (the README's client-side example):

    from mes.client import StreamClient

    last_done = load_my_checkpoint()          # None the very first time
    with StreamClient("tcp://agent-pc:5556", "tcp://agent-pc:5557", since_seq=last_done) as client:
        for event in client.events():
            if event.kind == "result":
                save_to_my_mes(event.result)   # each result exactly once, per line in seq order
                save_my_checkpoint(event.result.seq)

With CURVE, pass `security=ClientSecurity(curve=CurveClientConfig(secret_key_file=...,
server_public_key_file=...))`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from contract.result import InspectionResult
from contract.zmq_security import ClientSecurity, apply_curve_client
from contract.zmq_wire import WireError, WireMessage, decode, topic_prefix


class JournalBehindError(RuntimeError):
    """The agent's journal is behind what this client already processed: it was reset or replaced.

    Seqs restart from 1 and every new result would look like a duplicate, so the client stops instead of
    silently skipping them. Only a person can decide what comes next: `since_seq=0` replays everything
    the new journal holds (safe only if your side deduplicates by `result_id`); `since_seq=None` (a
    snapshot) takes only what comes from now on. The error is raised only after the ROUTER has confirmed
    that the journal really ends below what was processed (heartbeats queued during a long replay carry
    older seqs and are not evidence)."""


_RESET_ADVICE = (
    "decide deliberately: restart with since_seq=None to take only new results, or since_seq=0 to take "
    "everything the new journal holds (only if your side deduplicates by result_id)"
)


@dataclass(frozen=True)
class StreamEvent:
    """One thing delivered to the application."""

    kind: str  # "result" | "status" | "heartbeat"
    line: str
    header: dict[str, Any]
    result: InspectionResult | None = None
    payload: dict[str, Any] | None = None
    #: True when it came from a snapshot or replay rather than the live stream
    is_historical: bool = False


@dataclass
class ClientCounters:
    live_results: int = 0
    replayed_results: int = 0
    duplicates_skipped: int = 0
    gaps_filled: int = 0
    requests: int = 0
    bad_messages: int = 0
    #: heartbeats older than what a replay had already delivered (checked with the ROUTER, ignored)
    stale_heartbeats: int = 0


class StreamClient:
    """Subscriber with snapshot/replay catch-up; not thread-safe (use it from one thread)."""

    def __init__(
        self,
        pub_endpoint: str,
        router_endpoint: str,
        *,
        site: str | None = None,
        lines: list[str] | None = None,
        since_seq: int | None = None,
        security: ClientSecurity | None = None,
        include_heartbeats: bool = False,
        request_timeout_s: float = 5.0,
        rcvhwm: int = 100_000,
    ) -> None:
        if lines and site is None:
            raise ValueError("give `site` when filtering by `lines` (topics are insp.v1/<site>/<line>/...)")
        self.pub_endpoint = pub_endpoint
        self.router_endpoint = router_endpoint
        self.site = site
        self.lines = list(lines) if lines else None
        self.since_seq = since_seq
        self.security = security or ClientSecurity(security="plain")
        self.include_heartbeats = include_heartbeats
        self.request_timeout_s = request_timeout_s
        self.counters = ClientCounters()
        #: line -> seq of the last result delivered for it
        self.last_seq: dict[str, int] = {}
        self._start_seq = 0  # position for lines not seen yet (from the snapshot / replay)
        # line -> the highest heartbeat seq the ROUTER confirmed as stale (queued before a replay ended)
        self._stale_heartbeat: dict[str, int] = {}
        self._ready: deque[StreamEvent] = deque()
        self._req_ids = itertools.count(1)
        self._zctx = zmq.Context()
        self._sub = self._zctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = rcvhwm
        self._dealer = self._zctx.socket(zmq.DEALER)
        self._dealer.linger = 0
        apply_curve_client(self._sub, self.security)
        apply_curve_client(self._dealer, self.security)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> StreamClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Subscribe, then catch up (snapshot, or replay since `since_seq`)."""
        for prefix in self._prefixes():
            self._sub.subscribe(prefix.encode())
        self._sub.connect(self.pub_endpoint)
        self._dealer.connect(self.router_endpoint)
        if self.since_seq is None:
            self._load_snapshot()
        else:
            self._start_seq = self.since_seq
            self._catch_up_all(self.since_seq)
        self._started = True

    def close(self) -> None:
        self._sub.close(0)
        self._dealer.close(0)
        self._zctx.term()

    def _prefixes(self) -> list[str]:
        if self.lines:
            return [topic_prefix(self.site, line) for line in self.lines]
        return [topic_prefix(self.site)]

    def _wanted(self, site: str | None, line: str) -> bool:
        return (self.site is None or site == self.site) and (self.lines is None or line in self.lines)

    # -- receiving -----------------------------------------------------------------------------
    def events(self, timeout: float | None = None) -> Iterator[StreamEvent]:
        """Yield events forever, or until nothing arrived for `timeout` seconds."""
        while True:
            event = self.recv(timeout)
            if event is None:
                return
            yield event

    def recv(self, timeout: float | None = None) -> StreamEvent | None:
        """The next event, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sub.poll(wait_ms):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            frames = self._sub.recv_multipart()
            try:
                message = decode(frames)
            except WireError:  # not ours (another publisher on the port?): skip it, count it
                self.counters.bad_messages += 1
                continue
            self._on_live(message)
        return self._ready.popleft()

    def _on_live(self, message: WireMessage) -> None:
        header = message.header
        line = str(header.get("line"))
        if not self._wanted(header.get("site"), line):
            return
        last = self.last_seq.get(line, self._start_seq)
        if message.kind == "result":
            seq = int(header["seq"])
            if seq <= last:
                self.counters.duplicates_skipped += 1
                return
            if header.get("prev_seq") != last:
                self._fill(line, last, seq - 1)
            self.counters.live_results += 1
            self._deliver_result(message, historical=False)
        elif message.kind == "heartbeat":
            seq = header.get("seq")
            if seq is not None and seq < self.last_seq.get(line, 0):
                self._check_reset(line, int(seq))
                return  # a stale heartbeat, sent before what a replay already delivered
            if seq is not None and seq > last:
                self._fill(line, last, int(seq))
            if self.include_heartbeats:
                self._ready.append(StreamEvent("heartbeat", line, header, payload=message.payload()))
        else:
            self._ready.append(StreamEvent(message.kind, line, header, payload=message.payload(),
                                           is_historical=bool(header.get("is_historical"))))

    def _deliver_result(self, message: WireMessage, *, historical: bool) -> None:
        result = message.result()
        assert result.seq is not None
        if result.seq <= self.last_seq.get(result.line, self._start_seq):
            self.counters.duplicates_skipped += 1
            return
        self.last_seq[result.line] = result.seq
        self._ready.append(StreamEvent("result", result.line, message.header, result=result,
                                       is_historical=historical))

    def _check_reset(self, line: str, heartbeat_seq: int) -> None:
        """A heartbeat below what was delivered: stale (sent before a replay caught up), or the journal was
        reset. Ask the ROUTER where the journal ends; raise only if it is really behind."""
        if heartbeat_seq <= self._stale_heartbeat.get(line, -1):
            return  # an even older heartbeat than one already found stale
        processed = self.last_seq[line]
        _messages, end = self._request({"op": "replay", "since": processed, "line": line, "limit": 1})
        if int(end["last_seq"]) < processed:
            raise JournalBehindError(
                f"line {line}: the agent's journal ends at seq {end['last_seq']} but this client already "
                f"processed {processed}: the journal was reset or replaced; {_RESET_ADVICE}"
            )
        self._stale_heartbeat[line] = heartbeat_seq
        self.counters.stale_heartbeats += 1
        for message in _messages:  # results that arrived meanwhile: delivered in order, not lost
            self._deliver_historical(message)

    # -- catching up through the ROUTER ----------------------------------------------------------
    def _fill(self, line: str, after: int, until: int) -> None:
        """Replay this line's results with after < seq <= until, delivering them in order."""
        before = self.counters.replayed_results
        since = after
        while True:
            messages, end = self._request({"op": "replay", "since": since, "until": until, "line": line})
            for message in messages:
                self._deliver_historical(message)
            if not end["more"]:
                break
            since = int(end["covered_to"])
        self.counters.gaps_filled += int(self.counters.replayed_results > before)

    def _catch_up_all(self, since: int) -> None:
        lines = self.lines or [None]
        covered = since
        for line in lines:
            position = since
            while True:
                request: dict[str, Any] = {"op": "replay", "since": position}
                if line is not None:
                    request["line"] = line
                messages, end = self._request(request)
                if int(end["last_seq"]) < since:
                    raise JournalBehindError(
                        f"the agent's journal ends at seq {end['last_seq']} but this client already "
                        f"processed up to {since}: the journal was reset or replaced; {_RESET_ADVICE}"
                    )
                for message in messages:
                    self._deliver_historical(message)
                position = int(end["covered_to"])
                if not end["more"]:
                    break
            covered = max(covered, position)
        # Lines with nothing replayed start from where the replay ended, not from `since`.
        self._start_seq = covered

    def _load_snapshot(self) -> None:
        wanted = self.lines or [None]
        last_seq = 0
        for line in wanted:
            request: dict[str, Any] = {"op": "snapshot"}
            if line is not None:
                request["line"] = line
            messages, end = self._request(request)
            last_seq = max(last_seq, int(end["last_seq"]))
            for message in messages:
                if message.kind == "result":
                    self._deliver_historical(message)
                elif self._wanted(message.header.get("site"), str(message.header.get("line"))):
                    self._ready.append(StreamEvent(message.kind, str(message.header.get("line")),
                                                   message.header, payload=message.payload(),
                                                   is_historical=True))
            for line_name, seq in end["lines"].items():
                if seq is not None:
                    self.last_seq[line_name] = max(self.last_seq.get(line_name, 0), int(seq))
        self._start_seq = last_seq

    def _deliver_historical(self, message: WireMessage) -> None:
        if not self._wanted(message.header.get("site"), str(message.header.get("line"))):
            return
        before = len(self._ready)
        self._deliver_result(message, historical=True)
        self.counters.replayed_results += len(self._ready) - before

    def _request(self, request: dict[str, Any]) -> tuple[list[WireMessage], dict[str, Any]]:
        """Send one request; collect its result messages until its `*_end` (or raise on error/timeout)."""
        req_id = next(self._req_ids)
        self.counters.requests += 1
        self._dealer.send(json.dumps({**request, "req_id": req_id}).encode())
        messages: list[WireMessage] = []
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._dealer.poll(int(remaining * 1000)):
                raise TimeoutError(
                    f"no answer to {request['op']} from {self.router_endpoint} "
                    f"within {self.request_timeout_s} s"
                )
            frames = self._dealer.recv_multipart()
            if len(frames) == 3:
                messages.append(decode(frames))
                deadline = time.monotonic() + self.request_timeout_s  # a long replay is still progressing
                continue
            kind, body = frames[0].decode(), json.loads(frames[1])
            if body.get("req_id") != req_id:
                messages.clear()  # the tail of an earlier, timed-out request
                continue
            if kind == "error":
                raise RuntimeError(f"{self.router_endpoint} refused {request}: {body['error']}")
            return messages, body

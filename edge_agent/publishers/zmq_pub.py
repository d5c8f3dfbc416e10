"""ZeroMQ live stream (XPUB) plus a ROUTER service for snapshot, replay and triggers.

Live stream: every journaled result goes out on `insp.v1/<site>/<line>/result` as `[topic, header, body]`
(see `contract.zmq_wire`), line states on `.../status`, and a `.../heartbeat` per line every second
carrying the seq of the line's last result that left the queue (sent, or dropped), so a quiet subscriber
still notices what it missed. Heartbeats and statuses never announce a result still queued behind them:
the sender thread, which sends them, is the one that records what went out.

Nothing here can slow inference: `notify()` appends to a bounded in-memory queue and returns; a sender
thread encodes and sends without blocking. A subscriber that does not keep up fills its high-water mark
and messages are then **dropped and counted** (`stats()["dropped"]`). The socket is an XPUB with
`XPUB_NODROP`, so libzmq reports a full subscriber instead of dropping silently; the price is that the
message is dropped for every subscriber at that moment. Subscribers never lose data for good: each header
carries `seq` and `prev_seq` (previous result of the same line), and a subscriber with a gap asks the
ROUTER for a replay from the journal (`mes.client.StreamClient` does all of that).

ROUTER requests (a DEALER sends one JSON frame; answers are result messages `[topic, header, body]`
with `is_historical: true` followed by one control message `[kind, JSON]`):

- `{"op": "replay", "since": N, "line": "l1"?, "until": M?, "limit": 500?, "req_id": ..}` → the results
  with N < seq <= M, then `replay_end` `{"covered_to", "more", "count", "last_seq", "req_id"}`.
  `covered_to` is the highest seq the answer accounts for: ask again from there while `more` is true.
- `{"op": "snapshot", "line": "l1"?}` → per known line its last status and last result, then
  `snapshot_end` `{"last_seq", "lines": {line: seq}, "boot_id", "req_id"}`.
- `{"op": "trigger", "line": "l1", "part_id": "P-1", ...}` (only with `allow_trigger: true`) → one
  inspection through `LineRuntime.trigger()`; never dropped: the answer is the journaled result then
  `trigger_reply` `{"ok", "result_id", "seq", "verdict", "error", "req_id"}`.

Example (plain TCP on free ports):
    >>> import tempfile, pathlib
    >>> from edge_agent.journal import ResultJournal
    >>> from edge_agent.publishers.base import PublisherContext
    >>> journal = ResultJournal(pathlib.Path(tempfile.mkdtemp()) / "j.sqlite")
    >>> config = ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*", router_endpoint="tcp://127.0.0.1:*",
    ...                             security="plain")
    >>> publisher = ZmqPublisher(config, PublisherContext(site="s", boot_id="b", journal=journal))
    >>> publisher.start(journal)
    >>> publisher.pub_endpoint.startswith("tcp://127.0.0.1:")
    True
    >>> publisher.stop()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Literal

import zmq
from pydantic import Field

from contract.result import InspectionResult
from contract.zmq_security import ConnectionGuard, CurveServer, ServerSecurity, make_curve_server
from contract.zmq_wire import Encoding, encode_control, encode_event, encode_result
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import Publisher, PublisherContext

log = logging.getLogger(__name__)


class _ClientGone(Exception):
    """A ROUTER client disconnected or stopped reading in the middle of an answer."""


class ZmqPublisherConfig(ServerSecurity):
    """`publishers: - type: zmq` in the site file: live stream + snapshot/replay service."""

    type: Literal["zmq"] = "zmq"
    name: str = Field("zmq", description="instance name (metrics, logs)")
    pub_endpoint: str = Field(
        "tcp://127.0.0.1:5556", description="XPUB live stream; tcp://host:* binds a free port"
    )
    router_endpoint: str | None = Field(
        "tcp://127.0.0.1:5557", description="ROUTER for snapshot/replay/trigger requests; null: none"
    )
    encoding: Encoding = Field("json", description="body encoding: json or msgpack (headers are JSON)")
    send_hwm: int = Field(10_000, ge=1, description="messages queued per subscriber before drops")
    queue_size: int = Field(10_000, ge=1, description="results between notify() and the sender before drops")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="one heartbeat per line this often")
    replay_max_batch: int = Field(
        1000, ge=1, le=100_000, description="most results in one replay answer (the client asks again)"
    )
    client_send_timeout_s: float = Field(
        5.0, gt=0, description="a ROUTER client that stops reading mid-answer is given up after this"
    )
    allow_trigger: bool = Field(
        False, description="serve {op: trigger} requests (one inspection each) for triggered lines"
    )


class ZmqPublisher(Publisher):
    """Best-effort live stream + journal-backed snapshot/replay; see the module docstring."""

    guaranteed = False
    config_model = ZmqPublisherConfig

    def __init__(self, config: ZmqPublisherConfig, context: PublisherContext) -> None:
        self.config = config
        self.context = context
        self.name = config.name
        self.pub_endpoint: str | None = None
        self.router_endpoint: str | None = None
        # notify() side: deque.append/popleft are atomic, so no lock on the hot path
        self._queue: deque[tuple[float, str, Any]] = deque()
        self._wake = threading.Event()
        self._drop_lock = threading.Lock()  # notify() runs on every line's thread; only drops take it
        self._stopping = threading.Event()
        self._prev_seq: dict[str, int | None] = {}  # line -> seq of its last result notified this boot
        # line -> seq of its last result the sender has sent (or dropped): what heartbeats and statuses
        # announce, so they never name a result still queued behind them (sender thread only)
        self._sent_seq: dict[str, int | None] = {}
        self._dropped_seq: dict[str, int] = {}  # line -> last seq dropped by notify() (queue full)
        self._last_status: dict[str, dict[str, Any]] = {}
        self._trigger_replies: deque[tuple[bytes, Any, Future]] = deque()
        self._threads: list[threading.Thread] = []
        self._zctx: zmq.Context | None = None
        self._curve: CurveServer | None = None
        self._xpub_guard: ConnectionGuard | None = None  # CURVE: removed keys lose their live connection
        self._router_guard: ConnectionGuard | None = None
        self._xpub: zmq.Socket | None = None
        self._router: zmq.Socket | None = None
        self._journal: ResultJournal | None = None
        self._reader: ResultJournal | None = None
        self.counters = {
            "sent": 0,  # results (status/heartbeat messages are counted apart)
            "dropped_queue": 0,
            "dropped_hwm": 0,
            "events_sent": 0,
            "events_dropped": 0,
            "subscriptions": 0,
            "requests": 0,
            "replayed": 0,
            "triggers": 0,
            "bad_requests": 0,
            "abandoned": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, journal: ResultJournal) -> None:
        self._journal = journal
        # Replays read through their own SQLite connection so they never hold the writer's lock.
        self._reader = ResultJournal(journal.path)
        for line in self.context.lines:
            newest = self._reader.query(line=line, newest_first=True, limit=1)
            self._prev_seq[line] = newest[0].seq if newest else None
        self._sent_seq = dict(self._prev_seq)

        self._zctx = zmq.Context()
        try:
            self._curve = make_curve_server(self._zctx, self.config)
            self._xpub = self._bind(zmq.XPUB, self.config.pub_endpoint, "pub_endpoint")
            self._xpub.setsockopt(zmq.XPUB_NODROP, 1)  # full subscriber -> EAGAIN we can count
            self.pub_endpoint = self._xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            if self._curve is not None:
                # every subscriber's subscription reaches us (its key and connection), not only the first
                self._xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
                self._xpub_guard = self._curve.guard(self._xpub, f"{self.name} PUB")
            if self.config.router_endpoint is not None:
                self._router = self._bind(zmq.ROUTER, self.config.router_endpoint, "router_endpoint")
                self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown peer -> error, not silence
                # A whole replay page fits in the client's pipe; a client that stops reading mid-answer
                # is given up after client_send_timeout_s instead of holding the service for everyone.
                self._router.sndhwm = 2 * self.config.replay_max_batch + 100
                self._router.sndtimeo = int(self.config.client_send_timeout_s * 1000)
                self.router_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
                if self._curve is not None:
                    self._router_guard = self._curve.guard(self._router, f"{self.name} ROUTER")
        except Exception:
            self._close_sockets()
            self._reader.close()
            self._reader = None
            raise

        self._threads = [threading.Thread(target=self._send_loop, name=f"{self.name}-pub", daemon=True)]
        if self._router is not None:
            self._threads.append(
                threading.Thread(target=self._router_loop, name=f"{self.name}-router", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        log.info("zmq publisher %s: PUB %s, ROUTER %s", self.name, self.pub_endpoint, self.router_endpoint)

    def _bind(self, kind: int, endpoint: str, key: str) -> zmq.Socket:
        assert self._zctx is not None
        sock = self._zctx.socket(kind)
        sock.linger = 500
        if kind == zmq.XPUB:
            sock.sndhwm = self.config.send_hwm
        if self._curve is not None:
            self._curve.apply(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise RuntimeError(f"publisher {self.name!r}: cannot bind {key} {endpoint!r}: {exc}") from exc
        return sock

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._close_sockets()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _close_sockets(self) -> None:
        self._xpub_guard = self._router_guard = None  # closed with the CurveServer below
        for sock in (self._xpub, self._router):
            if sock is not None:
                sock.close()
        self._xpub = self._router = None
        if self._curve is not None:
            self._curve.stop()
            self._curve = None
        if self._zctx is not None:
            self._zctx.term()
            self._zctx = None

    # -- inputs from the daemon (must never block) ---------------------------------------------
    def notify(self, result: InspectionResult) -> None:
        # The seq chain is kept here, before any drop, so a dropped result shows up as a gap.
        prev = self._prev_seq.get(result.line)
        self._prev_seq[result.line] = result.seq
        if not self._enqueue("result", (result, prev)) and result.seq is not None:
            with self._drop_lock:  # announced once everything queued before it has gone out
                self._dropped_seq[result.line] = result.seq

    def publish_status(self, line: str, status: dict[str, Any]) -> None:
        self._last_status[line] = status
        self._prev_seq.setdefault(line, None)
        self._enqueue("status", (line, status))

    def _enqueue(self, kind: str, item: Any) -> bool:
        if len(self._queue) >= self.config.queue_size:
            with self._drop_lock:
                self.counters["dropped_queue"] += 1
            return False
        self._queue.append((time.monotonic(), kind, item))
        self._wake.set()
        return True

    def stats(self) -> dict[str, float]:
        try:
            oldest = time.monotonic() - self._queue[0][0]
        except IndexError:
            oldest = 0.0
        c = self.counters
        return {
            "sent": c["sent"],
            "dropped": c["dropped_queue"] + c["dropped_hwm"],
            "dropped_queue": c["dropped_queue"],
            "dropped_hwm": c["dropped_hwm"],
            "backlog": len(self._queue),
            "oldest_undelivered_s": oldest,
            "events_sent": c["events_sent"],
            "events_dropped": c["events_dropped"],
            "subscriptions": c["subscriptions"],
            "requests": c["requests"],
            "replayed": c["replayed"],
            "triggers": c["triggers"],
            "abandoned_answers": c["abandoned"],
            "denied_clients": self._curve.denied if self._curve is not None else 0,
            "dropped_clients": self._curve.dropped if self._curve is not None else 0,
        }

    # -- sender thread: queue -> XPUB ------------------------------------------------------------
    def _send_loop(self) -> None:
        next_heartbeat = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, next_heartbeat - time.monotonic()))
            self._wake.clear()  # clear before draining: a notify() after this sets it again
            self._drain_queue()
            self._read_subscriptions()
            if time.monotonic() >= next_heartbeat:
                self._send_heartbeats()
                next_heartbeat = time.monotonic() + self.config.heartbeat_interval_s
        self._drain_queue()

    def _drain_queue(self) -> None:
        assert self._xpub is not None
        boot_id, encoding = self.context.boot_id, self.config.encoding
        with self._drop_lock:  # drops before this moment: everything queued before them is sent below
            dropped, self._dropped_seq = self._dropped_seq, {}
        while self._queue:
            _, kind, item = self._queue.popleft()
            if kind == "result":
                result, prev = item
                frames = encode_result(result, boot_id=boot_id, prev_seq=prev, encoding=encoding)
                self._send(frames, "sent", "dropped_hwm")
                self._sent_seq[result.line] = result.seq
            else:
                line, status = item
                frames = encode_event(
                    "status", status, site=self.context.site, line=line, boot_id=boot_id,
                    seq=self._sent_seq.get(line), encoding=encoding,
                )
                self._send(frames, "events_sent", "events_dropped")
        for line, seq in dropped.items():
            self._sent_seq[line] = max(seq, self._sent_seq.get(line) or 0)

    def _send(self, frames: list[bytes], sent_counter: str, dropped_counter: str) -> None:
        assert self._xpub is not None
        try:
            self._xpub.send_multipart(frames, flags=zmq.NOBLOCK)  # copying small frames is cheaper
            self.counters[sent_counter] += 1
        except zmq.Again:  # a subscriber's queue is full (XPUB_NODROP)
            self.counters[dropped_counter] += 1

    def _read_subscriptions(self) -> None:
        assert self._xpub is not None
        if self._xpub_guard is not None:
            self._xpub_guard.check()
        while True:
            try:
                frame = self._xpub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if self._xpub_guard is not None:
                self._xpub_guard.note(frame)
            event = frame.bytes
            if event[:1] == b"\x01":
                self.counters["subscriptions"] += 1
            elif event[:1] == b"\x00":
                self.counters["subscriptions"] -= 1

    def _send_heartbeats(self) -> None:
        for line in list(self._prev_seq):
            payload = {"last_seq": self._sent_seq.get(line), "time": time.time()}
            if line in self.context.lines:
                payload["state"] = getattr(self.context.lines[line], "state", None)
            self._send(
                encode_event(
                    "heartbeat", payload, site=self.context.site, line=line, boot_id=self.context.boot_id,
                    seq=payload["last_seq"], encoding=self.config.encoding,
                ),
                "events_sent", "events_dropped",
            )

    # -- ROUTER thread: snapshot / replay / trigger ----------------------------------------------
    def _router_loop(self) -> None:
        assert self._router is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        while not self._stopping.is_set():
            ready = dict(poller.poll(20))
            self._send_trigger_replies()
            if self._router_guard is not None:
                self._router_guard.check()
            if self._router in ready:
                for _ in range(100):  # bounded, so trigger replies are not starved
                    try:
                        frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if self._router_guard is not None:
                        self._router_guard.note(frames[-1])
                    identity, *request = [f.bytes for f in frames]
                    try:
                        self._handle_request(identity, request)
                    except _ClientGone as exc:  # stop answering it; the client asks again when back
                        self.counters["abandoned"] += 1
                        log.warning("router %s: answer abandoned, client gone or not reading: %s",
                                    self.name, exc)

    def _reply(self, identity: bytes, frames: list[bytes]) -> None:
        assert self._router is not None
        try:
            self._router.send_multipart([identity, *frames])
        except zmq.ZMQError as exc:  # client gone (ROUTER_MANDATORY) or not reading (SNDTIMEO)
            raise _ClientGone(str(exc)) from exc

    def _error(self, identity: bytes, req_id: Any, message: str) -> None:
        self.counters["bad_requests"] += 1
        self._reply(identity, encode_control("error", {"error": message, "req_id": req_id}))

    def _handle_request(self, identity: bytes, frames: list[bytes]) -> None:
        self.counters["requests"] += 1
        try:
            request = json.loads(frames[-1]) if frames else None
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._error(identity, None, "a request is one JSON object frame, e.g. {\"op\": \"snapshot\"}")
            return
        req_id = request.get("req_id")
        op = request.get("op")
        try:
            if op == "replay":
                self._replay(identity, request, req_id)
            elif op == "snapshot":
                self._snapshot(identity, request, req_id)
            elif op == "trigger":
                self._trigger(identity, request, req_id)
            else:
                self._error(identity, req_id, f"unknown op {op!r}: expected replay, snapshot or trigger")
        except (TypeError, ValueError, KeyError) as exc:
            self._error(identity, req_id, f"bad {op} request: {exc}")

    def _replay(self, identity: bytes, request: dict[str, Any], req_id: Any) -> None:
        assert self._reader is not None
        since = int(request.get("since", 0))
        until = request.get("until")
        until = int(until) if until is not None else None
        line = request.get("line")
        limit = min(int(request.get("limit", self.config.replay_max_batch)), self.config.replay_max_batch)
        if since < 0 or limit < 1 or (until is not None and until < since):
            raise ValueError("need since >= 0, limit >= 1 and until >= since")
        last_seq = self._reader.last_seq()  # read first: rows appended later are either returned or > it
        rows = self._reader.since(since, limit=limit, line=line)
        more = len(rows) == limit
        if until is not None:
            more = more and rows[-1].seq is not None and rows[-1].seq < until
            rows = [r for r in rows if r.seq is not None and r.seq <= until]
        for result in rows:
            self._reply(identity, encode_result(
                result, boot_id=self.context.boot_id, is_historical=True, encoding=self.config.encoding))
        if more:
            covered_to = rows[-1].seq
        else:
            covered_to = max([last_seq, since, *(r.seq or 0 for r in rows)])
            if until is not None:
                covered_to = min(covered_to, until)
        self.counters["replayed"] += len(rows)
        self._reply(identity, encode_control("replay_end", {
            "covered_to": covered_to, "more": more, "count": len(rows), "last_seq": last_seq,
            "req_id": req_id,
        }))

    def _snapshot(self, identity: bytes, request: dict[str, Any], req_id: Any) -> None:
        assert self._reader is not None
        wanted = request.get("line")
        last_seq = self._reader.last_seq()
        lines = sorted(set(self.context.lines) | set(self._prev_seq) | set(self._last_status))
        positions: dict[str, int | None] = {}
        for line in lines:
            if wanted is not None and line != wanted:
                continue
            status = self._last_status.get(line)
            if status is None and line in self.context.lines and hasattr(self.context.lines[line], "status"):
                status = self.context.lines[line].status()
            newest = self._reader.query(line=line, newest_first=True, limit=1)
            positions[line] = newest[0].seq if newest else None
            if status is not None:
                self._reply(identity, encode_event(
                    "status", status, site=self.context.site, line=line, boot_id=self.context.boot_id,
                    seq=positions[line], is_historical=True, encoding=self.config.encoding))
            if newest:
                self._reply(identity, encode_result(newest[0], boot_id=self.context.boot_id,
                                                    is_historical=True, encoding=self.config.encoding))
        self._reply(identity, encode_control("snapshot_end", {
            "last_seq": last_seq, "lines": positions, "boot_id": self.context.boot_id, "req_id": req_id,
        }))

    def _trigger(self, identity: bytes, request: dict[str, Any], req_id: Any) -> None:
        if not self.config.allow_trigger:
            self._error(identity, req_id,
                        f"publisher {self.name!r} does not serve triggers (allow_trigger: false)")
            return
        line_name = request.get("line")
        line = self.context.lines.get(line_name) if isinstance(line_name, str) else None
        if line is None:
            self._error(identity, req_id, f"unknown line {line_name!r}; lines: {sorted(self.context.lines)}")
            return
        kwargs = {k: request.get(k) for k in ("meas_id", "recipe", "product_id", "job_id")}
        try:
            future = line.trigger(request.get("part_id"), **kwargs)
        except Exception as exc:  # a refused trigger (unknown recipe, paused line) is answered, not lost
            self._error(identity, req_id, f"line {line_name!r} refused the trigger: {exc}")
            return
        self.counters["triggers"] += 1
        # The callback runs on the line's thread: only hand the future over, the ROUTER thread answers.
        future.add_done_callback(lambda f: self._trigger_replies.append((identity, req_id, f)))

    def _send_trigger_replies(self) -> None:
        while self._trigger_replies:
            identity, req_id, future = self._trigger_replies.popleft()
            try:
                self._send_trigger_reply(identity, req_id, future)
            except _ClientGone as exc:  # the result is journaled: the client finds it by replay
                log.warning("router %s: trigger reply (req_id %s) not delivered: %s", self.name, req_id, exc)

    def _send_trigger_reply(self, identity: bytes, req_id: Any, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._reply(identity, encode_control("trigger_reply", {
                "ok": False, "error": str(error), "req_id": req_id,
                "result_id": None, "seq": None, "verdict": None}))
            return
        result: InspectionResult = future.result()
        if result.seq is not None:
            self._reply(identity, encode_result(
                result, boot_id=self.context.boot_id, is_historical=False, encoding=self.config.encoding))
        self._reply(identity, encode_control("trigger_reply", {
            "ok": True, "error": None, "req_id": req_id,
            "result_id": result.result_id, "seq": result.seq, "verdict": result.verdict}))

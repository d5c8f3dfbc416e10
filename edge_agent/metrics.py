"""Health and Prometheus metrics over HTTP: `/healthz` (JSON, 200 when every line runs) and `/metrics`.

Counters and histograms are updated as results are journaled; gauges (fps, queue depths, camera states,
journal and publisher backlogs) are read from the live objects when Prometheus scrapes, so nothing on
the inspection path waits for the metrics.

Example:
    >>> m = AgentMetrics()
    >>> server = MetricsServer(m, host="127.0.0.1", port=0, health=lambda: (True, {"ok": True}))
    >>> server.start(); server.port > 0
    True
    >>> import urllib.request
    >>> b"edge_inspect_results_total" in urllib.request.urlopen(server.url + "/metrics").read()
    True
    >>> server.stop()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from contract.result import InspectionResult
from edge_agent.thread_cpu import thread_cpu_seconds

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

# latencies from 1 ms to 5 s: inference on CPU ranges from a few ms to hundreds
_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class AgentMetrics:
    """The agent's Prometheus registry (one per agent, so tests can run several side by side)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.results = Counter(
            "edge_inspect_results", "Journaled results", ["line", "verdict"], registry=self.registry
        )
        self.ng_by_class = Counter(
            "edge_inspect_ng_parts_by_class",
            "NG parts by defect class that made them NG",
            ["line", "class_name"],
            registry=self.registry,
        )
        self.defects = Counter(
            "edge_inspect_defects",
            "Defects that counted for the verdict",
            ["line", "class_name"],
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "edge_inspect_stage_latency_seconds",
            "Latency per stage (capture, preprocess, inference, postprocess, rules, total, journal)",
            ["line", "stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def observe(self, result: InspectionResult, journal_ms: float | None = None) -> None:
        self.results.labels(result.line, result.verdict).inc()
        ng_classes = set()
        for defect in result.defects:
            if defect.counts_for_verdict:
                self.defects.labels(result.line, defect.class_name).inc()
                ng_classes.add(defect.class_name)
        if result.verdict == "NG":
            for cls in ng_classes or {"_no_frame"}:
                self.ng_by_class.labels(result.line, cls).inc()
        for stage, ms in result.timings_ms.items():
            self.stage_latency.labels(result.line, stage).observe(ms / 1000)
        if journal_ms is not None:
            self.stage_latency.labels(result.line, "journal").observe(journal_ms / 1000)

    def attach(self, agent: Agent) -> None:
        """Read live gauges from `agent` at scrape time."""
        self.registry.register(_AgentCollector(agent))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily: the set of lines/cameras/publishers may change on reload

    def collect(self) -> Iterable[Any]:
        agent = self.agent
        fps = GaugeMetricFamily("edge_inspect_line_fps", "Inspections per second (last 5 s)", labels=["line"])
        up = GaugeMetricFamily(
            "edge_inspect_line_state", "1 for the line's current state", labels=["line", "state"]
        )
        depth = GaugeMetricFamily(
            "edge_inspect_queue_depth", "Items waiting per queue", labels=["line", "queue"]
        )
        dropped = CounterMetricFamily(
            "edge_inspect_dropped_frames",
            "Frames skipped (free-run: latest frame wins)",
            labels=["line", "camera"],
        )
        reconnects = CounterMetricFamily(
            "edge_inspect_camera_reconnects", "Camera reconnections after a loss", labels=["line", "camera"]
        )
        connected = GaugeMetricFamily(
            "edge_inspect_camera_connected", "1 if the camera delivers frames", labels=["line", "camera"]
        )
        errors = CounterMetricFamily(
            "edge_inspect_inspection_errors", "Inspections that failed", labels=["line"]
        )
        skipped = CounterMetricFamily(
            "edge_inspect_skipped_files",
            "Files a file source could not read (truncated, empty, not an image)",
            labels=["line", "camera"],
        )
        transport = CounterMetricFamily(
            "edge_inspect_camera_transport",
            "Camera transport counters since the agent started (GigE Vision: received/missing/resent "
            "packets, resend requests, incomplete frames, software triggers)",
            labels=["line", "camera", "stat"],
        )
        for line in list(agent.lines.values()):
            st = line.status()
            fps.add_metric([line.name], st["fps"])
            for state in ("starting", "running", "paused", "degraded", "error", "stopped"):
                up.add_metric([line.name, state], 1.0 if st["state"] == state else 0.0)
            for q, n in st["queues"].items():
                depth.add_metric([line.name, q], n)
            errors.add_metric([line.name], st["counts"]["errors"] + st["counts"]["trigger_failures"])
            for cam in st["cameras"]:
                dropped.add_metric([line.name, cam["name"]], cam["dropped"])
                reconnects.add_metric([line.name, cam["name"]], cam["reconnects"])
                skipped.add_metric([line.name, cam["name"]], cam.get("skipped", 0))
                connected.add_metric([line.name, cam["name"]], 1.0 if cam["state"] == "connected" else 0.0)
                for stat, value in sorted(cam.get("transport", {}).items()):
                    transport.add_metric([line.name, cam["name"], stat], value)
        yield from (fps, up, depth, dropped, reconnects, connected, errors, skipped, transport)

        runtime = GaugeMetricFamily(
            "edge_inspect_model_runtime_info",
            "1 for the runtime each line's model runs on, and how it was chosen (config, forced, auto)",
            labels=["line", "runtime", "backend", "device", "precision", "chosen_by"],
        )
        for line in list(agent.lines.values()):
            chosen = line.status().get("runtime")
            if chosen:
                keys = ("runtime", "backend", "device", "precision", "chosen_by")
                runtime.add_metric([line.name, *(str(chosen[k]) for k in keys)], 1.0)
        yield runtime

        cpu = CounterMetricFamily(
            "edge_inspect_thread_cpu_seconds",
            "CPU seconds per thread of the agent (native: ONNX Runtime's and ZeroMQ's own threads)",
            labels=["thread"],
        )
        for name, seconds in sorted(thread_cpu_seconds().items()):
            cpu.add_metric([name], seconds)
        yield cpu

        journal_seq = GaugeMetricFamily("edge_inspect_journal_last_seq", "Last journaled sequence number")
        journal_seq.add_metric([], agent.journal.last_seq() if agent.journal else 0)
        yield journal_seq

        backlog = GaugeMetricFamily(
            "edge_inspect_publisher_backlog", "Results not yet delivered by a publisher", labels=["publisher"]
        )
        stat = GaugeMetricFamily(
            "edge_inspect_publisher_stat",
            "Publisher counters (sent, dropped, ...)",
            labels=["publisher", "stat"],
        )
        for name, values in agent.publisher_stats().items():
            waiting = float(values.get("backlog", 0.0)) + float(values.get("feed_backlog", 0.0))
            backlog.add_metric([name], waiting)
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    stat.add_metric([name, key], float(value))
        yield backlog
        yield stat

        console = getattr(agent, "console", None)
        if console is not None:  # reviews are made on the console; its hub keeps their counts
            yield from _review_metrics(console.hub, list(agent.lines))

        if agent.archive is not None:
            s = agent.archive.stats
            arch = GaugeMetricFamily("edge_inspect_archive", "NG archive counters", labels=["stat"])
            for key in ("written", "skipped_queue_full", "skipped_disk", "write_errors", "deleted_for_quota"):
                arch.add_metric([key], getattr(s, key))
            arch.add_metric(["bytes_used"], s.bytes_used)
            arch.add_metric(["backlog"], agent.archive.backlog())
            arch.add_metric(["degraded"], 1.0 if s.degraded else 0.0)
            yield arch

        trimmer = getattr(agent, "heap_trimmer", None)
        if trimmer is not None and trimmer.available:
            heap = GaugeMetricFamily(
                "edge_inspect_heap_trim",
                "C heap pages given back to the system (memory.trim_every_s)",
                labels=["stat"],
            )
            heap.add_metric(["trims"], trimmer.trims)
            heap.add_metric(["released_bytes"], trimmer.released_bytes)
            heap.add_metric(["last_ms"], trimmer.last_ms)
            yield heap

        capture = getattr(agent, "capture", None)
        if capture is not None:
            cap = GaugeMetricFamily(
                "edge_inspect_capture", "uncertain/reviewed parts kept for labelling", labels=["stat"]
            )
            for key, value in capture.counts.items():  # uncertain, review, skipped
                cap.add_metric([key], float(value))
            cap.add_metric(["bytes_used"], capture.stats.bytes_used)
            cap.add_metric(["deleted_for_quota"], capture.stats.deleted_for_quota)
            cap.add_metric(["backlog"], capture.backlog())
            yield cap


def _review_metrics(hub: Any, lines: list[str]) -> Iterable[Any]:
    reviewed = GaugeMetricFamily(
        "edge_inspect_reviewed_results", "Reviewed results by current decision", labels=["line", "decision"]
    )
    false_reject = GaugeMetricFamily(
        "edge_inspect_false_reject_rate", "False rejects / reviewed NG results", labels=["line"]
    )
    escape = GaugeMetricFamily(
        "edge_inspect_escape_rate", "Escapes found by review / OK results in the journal", labels=["line"]
    )
    for line in sorted(set(lines) | set(hub.review_counts)):
        rates = hub.review_rates(line)
        for decision, n in rates["counts"].items():
            reviewed.add_metric([line, decision], n)
        if rates["false_reject_rate"] is not None:
            false_reject.add_metric([line], rates["false_reject_rate"])
        if rates["escape_rate"] is not None:
            escape.add_metric([line], rates["escape_rate"])
    yield from (reviewed, false_reject, escape)


HealthFn = Callable[[], tuple[bool, dict[str, Any]]]


class MetricsServer:
    """A tiny threaded HTTP server: `/metrics` (Prometheus text) and `/healthz` (JSON)."""

    def __init__(self, metrics: AgentMetrics, host: str, port: int, health: HealthFn) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status, ctype = outer.metrics.render(), 200, CONTENT_TYPE_LATEST
                elif path in ("/healthz", "/health"):
                    healthy, detail = outer.health()
                    body = json.dumps(detail, default=str).encode()
                    status, ctype = (200 if healthy else 503), "application/json"
                else:
                    body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes every few s: keep logs quiet
                log.debug("metrics http: " + format, *args)

        self._server = ThreadingHTTPServer((self.host, self._requested_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""`Agent`: the daemon behind `edge-inspect run`: journal, lines, publishers, archive, metrics, hot reload.

Start order: journal → lines (built, not started) → publishers (they get the lines) → metrics → lines
start. Stop order (SIGTERM/SIGINT or `--for`): lines stop taking frames and finish in-flight parts (all
journaled), publishers flush and close, archive flushes, metrics server closes, journal closes.

Example:
    >>> from edge_agent.config import load_agent_config
    >>> agent = Agent(load_agent_config("configs/agent.yaml"))         # doctest: +SKIP
    >>> agent.run(for_seconds=10)                                       # doctest: +SKIP
    0
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from contract.result import InspectionResult
from contract.yamlconf import ConfigError, ConfigIssue
from edge_agent.archive import Archive
from edge_agent.capture import CaptureArchive
from edge_agent.config import AgentConfig, LineConfig, LoadedLine, load_line
from edge_agent.heap_trim import HeapTrimmer, limit_malloc_arenas
from edge_agent.inference_budget import InferenceBudget, resolve_concurrent
from edge_agent.inspector import InspectorLoadError
from edge_agent.journal import ResultJournal
from edge_agent.line import LineRuntime
from edge_agent.metrics import AgentMetrics, MetricsServer
from edge_agent.outcome import Outcome
from edge_agent.publishers.base import Publisher, PublisherContext
from edge_agent.publishers.feed import PublisherFeed
from vision.providers import physical_cores

log = logging.getLogger(__name__)

ResultCallback = Callable[[InspectionResult], None]
EventCallback = Callable[[str, str, dict[str, Any]], None]  # (line, event, payload)


class AgentStartError(Exception):
    """The agent cannot start (a publisher cannot bind its port, the journal cannot open...)."""


@dataclass
class _Watched:
    """A file the reload watcher follows: its last seen (mtime, size), and whether it has settled."""

    signature: tuple[float, int] | None
    pending: tuple[float, int] | None = None


def _signature(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


class Agent:
    """Runs every line of a site. Thread-safe enough for publishers to call lines from their threads."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_result: ResultCallback | None = None,
        on_event: EventCallback | None = None,
        accept_new_journal: bool = False,
    ) -> None:
        self.config = config
        self.accept_new_journal = accept_new_journal  # a journal that replaced this site's one is accepted
        self.site = config.site.site
        self.boot_id = uuid.uuid4().hex
        self.on_result = on_result
        self.on_event = on_event
        self.journal: ResultJournal | None = None
        self.lines: dict[str, LineRuntime] = {}
        self.budget: InferenceBudget | None = None
        self.publishers: list[Publisher] = []
        self.feeds: list[PublisherFeed] = []  # one per publisher: a blocking publisher cannot stall a line
        self.archive: Archive | None = None
        self.capture: CaptureArchive | None = None  # uncertain / reviewed parts for labelling
        self.metrics = AgentMetrics()
        self.heap_trimmer = HeapTrimmer(config.site.memory.trim_every_s)
        self.metrics_server: MetricsServer | None = None
        self.console: Any = None  # edge_agent.console.server.Console when the site file enables it
        self.reload_log: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self._line_files: dict[str, LoadedLine] = {}
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        # programme hub (site file `hub:`): line -> verified model file from the hub, run instead of its own
        self.hub_link: Any = None
        self.model_overrides: dict[str, Path] = {}
        self._reload_lock = threading.Lock()  # hot reload and hub model switches, one at a time

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        from edge_agent.publishers.registry import build_publisher

        site = self.config.site
        self.started_at = time.monotonic()
        limit_malloc_arenas(site.memory.malloc_arenas)  # before the lines' threads allocate
        try:
            self.journal = ResultJournal(
                site.journal.path, durability=site.journal.durability, accept_new=self.accept_new_journal
            )
        except Exception as exc:
            raise AgentStartError(f"journal {site.journal.path}: cannot open: {exc}") from exc
        self.archive = Archive(site.archive)
        try:
            self.archive.start()
        except OSError as exc:  # a broken archive disk degrades archiving, never inspection
            log.error("archive %s: %s; archiving is off", site.archive.path, exc)
            self.archive = None
        if site.capture.enabled:
            self.capture = CaptureArchive(site.capture)
            try:
                self.capture.start()
            except OSError as exc:  # like the archive: capturing degrades, inspection goes on
                log.error("capture %s: %s; capturing is off", site.capture.path, exc)
                self.capture = None

        if site.hub is not None:
            from edge_agent.hub_link import HubLink

            self.hub_link = HubLink(self, site.hub)
            self.model_overrides = self.hub_link.prepare()

        enabled = [loaded for loaded in self.config.lines if loaded.config.enabled]
        threads = site.inference.threads or physical_cores()
        free_running = any(loaded.config.trigger.type == "free_run" for loaded in enabled)
        concurrent = resolve_concurrent(site.inference.concurrent, threads, free_running)
        self.budget = InferenceBudget(threads, concurrent, len(enabled))
        log.info("inference budget: %s", self.budget.describe())
        # The agent's parallelism is its own threads (cameras, concurrent inferences); OpenCV's thread pool
        # on top splits each small resize/LUT across cores that are already busy: 0.26-0.38 ms CPU per part
        # in its threads (`native`) on the 2-core bench, 0.03-0.06 without it.
        cv2.setNumThreads(1)
        for loaded in self.config.lines:
            if not loaded.config.enabled:
                log.info("line %s is disabled in %s", loaded.config.name, loaded.file)
                continue
            line = LineRuntime(
                self._with_model_override(loaded.config),
                site=self.site,
                journal=self.journal,
                sink=self._on_line_result,
                boot_id=self.boot_id,
                budget=self.budget,
            )
            line.add_listener(self._line_listener(line))
            self.lines[line.name] = line
            self._line_files[line.name] = loaded

        context = PublisherContext(
            site=self.site,
            boot_id=self.boot_id,
            journal=self.journal,
            lines=self.lines,
            archive_dir=self.archive.root if self.archive is not None else None,
        )
        for entry in self.config.publishers:
            try:
                publisher = build_publisher(entry.type, entry.config, context)
                publisher.start(self.journal)
            except Exception as exc:
                self._stop_publishers()
                where = f"{self.config.site_file}: publishers[{entry.index}] (type {entry.type})"
                raise AgentStartError(f"{where}: cannot start: {exc}") from exc
            self.publishers.append(publisher)
            feed = PublisherFeed(publisher)
            feed.start()
            self.feeds.append(feed)

        if site.metrics.enabled:
            self.metrics.attach(self)
            self.metrics_server = MetricsServer(
                self.metrics, site.metrics.host, site.metrics.port, self.health
            )
            try:
                self.metrics_server.start()
            except OSError as exc:
                self._stop_publishers()
                raise AgentStartError(
                    f"{self.config.site_file}: metrics: cannot listen on "
                    f"{site.metrics.host}:{site.metrics.port}: {exc.strerror or exc}"
                ) from exc

        if site.console.enabled:
            self._start_console()

        for line in self.lines.values():
            line.start()  # a line whose model fails to load reports "error"; the others run
        self._refuse_failed_lines()

        self._spawn(self._retention_loop, "journal-retention")
        self.heap_trimmer.start()
        if self.hub_link is not None:
            self.hub_link.start()
        if site.reload.enabled:
            self._snapshot_watched()
            self._spawn(self._reload_loop, "hot-reload")

    def _refuse_failed_lines(self) -> None:
        """A line that cannot load at start stops the start (as `config check` would fail), unless the site
        says `on_line_load_failure: run_others` and some other line runs."""
        failed = {n: line.status()["last_error"] for n, line in self.lines.items() if line.state == "error"}
        if not failed:
            return
        reasons = "; ".join(f"line {name}: {error}" for name, error in failed.items())
        running = len(self.lines) - len(failed)
        if self.config.site.on_line_load_failure == "run_others" and running:
            log.error("%s; running the other %d line(s) (on_line_load_failure: run_others)", reasons, running)
            return
        self.stop()
        hint = " (to start the others anyway: on_line_load_failure: run_others)" if running else ""
        raise AgentStartError(f"{reasons}{hint}")

    def _start_console(self) -> None:
        from edge_agent.console.server import Console  # the web stack only when a console is wanted

        console_config = self.config.site.console
        self.console = Console(self, console_config)
        try:
            self.console.start()
        except OSError as exc:
            self.console = None
            self._stop_publishers()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            raise AgentStartError(
                f"{self.config.site_file}: console: cannot listen on "
                f"{console_config.host}:{console_config.port}: {exc.strerror or exc}"
            ) from exc

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking frames, finish and journal in-flight parts, flush publishers, close everything."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self.hub_link is not None:
            self.hub_link.stop()
        for line in list(self.lines.values()):
            line.stop(timeout)
        self._stop_publishers(timeout)
        if self.archive is not None:
            self.archive.stop(timeout)
        if self.capture is not None:
            self.capture.stop(timeout)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.console is not None:
            self.console.stop()
        for t in self._threads:
            t.join(timeout)
        self.heap_trimmer.stop()
        if self.journal is not None:
            self.journal.close()

    def _stop_publishers(self, timeout: float = 5.0) -> None:
        for feed in self.feeds:  # deliver what the lines produced before stopping, then close
            feed.stop(timeout)
        self.feeds = []
        for publisher in reversed(self.publishers):
            try:
                publisher.stop(timeout)
            except Exception:
                log.exception("publisher %s: stop failed", publisher.name)
        self.publishers = []

    def run(
        self,
        for_seconds: float | None = None,
        install_signals: bool = True,
        on_started: Callable[[Agent], None] | None = None,
    ) -> int:
        """Start, run until SIGTERM/SIGINT or `for_seconds`, stop cleanly. Returns the exit code (0)."""
        previous: dict[int, Any] = {}
        signalled: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            # No locks in a signal handler: Event.set() takes one, and a second SIGTERM arriving while
            # the first handler holds it deadlocks the main thread (seen under `timeout make demo`).
            signalled.append(signum)

        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            if on_started is not None:
                on_started(self)
            deadline = None if for_seconds is None else time.monotonic() + for_seconds
            while not self._stop.is_set() and not signalled:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                time.sleep(0.2 if remaining is None else min(0.2, remaining))  # a signal cuts it short
        finally:
            self._stop.set()
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    # -- results -----------------------------------------------------------------------------------
    def _on_line_result(self, line: LineRuntime, result: InspectionResult, outcome: Outcome | None) -> None:
        """Runs on the line's journal thread right after the commit: fan out without blocking."""
        self.metrics.observe(result)
        for feed in self.feeds:
            feed.notify(result)  # never blocks; the feed thread calls publisher.notify()
        if outcome is not None and self.archive is not None:
            self.archive.submit(outcome)
        if outcome is not None and self.capture is not None:
            self.capture.submit(outcome)
        if self.console is not None:
            self.console.offer(line.name, result, outcome)  # keeps references only; never encodes here
        if self.on_result is not None:
            self.on_result(result)

    def _line_listener(self, line: LineRuntime) -> Callable[[str, dict[str, Any]], None]:
        def listener(event: str, payload: dict[str, Any]) -> None:
            status = payload if event == "state" else line.status()
            for feed in self.feeds:
                feed.publish_status(line.name, status)
            if self.on_event is not None:
                self.on_event(line.name, event, payload)

        return listener

    # -- health ------------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): healthy when every line is running (or paused on purpose)."""
        lines = {name: line.status() for name, line in self.lines.items()}
        healthy = bool(lines) and all(s["state"] in ("running", "paused") for s in lines.values())
        detail: dict[str, Any] = {
            "status": "ok" if healthy else "degraded",
            "site": self.site,
            "boot_id": self.boot_id,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
            "journal_last_seq": self.journal.last_seq() if self.journal else None,
            "lines": {
                n: {k: s[k] for k in ("state", "fps", "recipe", "counts", "last_error", "cameras")}
                for n, s in lines.items()
            },
            "publishers": self.publisher_stats(),
        }
        if self.archive is not None:
            detail["archive"] = {
                "degraded": self.archive.stats.degraded,
                "last_error": self.archive.last_error,
            }
        return healthy, detail

    def publisher_stats(self) -> dict[str, dict[str, float]]:
        """Per publisher: its own stats() plus the agent's feed counters (feed_backlog, feed_dropped)."""
        out = {}
        for feed in list(self.feeds):
            out[feed.publisher.name] = {**_safe_stats(feed.publisher), **feed.stats()}
        return out

    # -- journal retention -------------------------------------------------------------------------
    def _retention_loop(self) -> None:
        retention = self.config.site.journal.retention
        first = True
        while first or not self._stop.wait(retention.check_every_s):
            first = False  # once at start (a journal may have outgrown a lowered limit), then periodically
            try:
                assert self.journal is not None
                deleted = self.journal.enforce_retention(
                    max_age_s=retention.max_age_days * 86400 if retention.max_age_days else None,
                    max_rows=retention.max_rows,
                    max_bytes=int(retention.max_mb * 1e6) if retention.max_mb else None,
                    # never delete what a guaranteed output (acked MES delivery) has not delivered yet
                    keep_after_cursors=[f.publisher.name for f in self.feeds if f.publisher.guaranteed],
                )
                if deleted:
                    log.info("journal retention: deleted %d old results", deleted)
            except Exception:
                log.exception("journal retention failed")

    # -- hot reload --------------------------------------------------------------------------------
    def _files_of(self, loaded: LoadedLine) -> dict[str, Path | None]:
        return {
            "line": loaded.file,
            "model": loaded.config.model.path,
            "reference": loaded.config.model.reference_image,
            "anomaly_model": loaded.config.anomaly.path if loaded.config.anomaly else None,
        }

    def _snapshot_watched(self) -> None:
        for name, loaded in self._line_files.items():
            for kind, path in self._files_of(loaded).items():
                self._watched[(name, kind)] = _Watched(_signature(path))

    def _reload_loop(self) -> None:
        poll = self.config.site.reload.poll_s
        while not self._stop.wait(poll):
            for name in list(self._line_files):
                try:
                    self._check_line(name)
                except Exception:
                    log.exception("hot reload of line %s failed", name)

    def _check_line(self, name: str) -> None:
        loaded = self._line_files[name]
        changed = False
        for kind, path in self._files_of(loaded).items():
            watched = self._watched.setdefault((name, kind), _Watched(_signature(path)))
            now = _signature(path)
            if now == watched.signature:
                watched.pending = None
                continue
            # act only once the file has stopped changing for one poll (a copy may be in progress)
            if watched.pending != now:
                watched.pending = now
                continue
            changed = True
        if changed:
            self.reload_line(name)

    def reload_line(self, name: str) -> bool:
        """Re-read line `name`'s file and model; swap them in only if they validate. True if swapped."""
        loaded = self._line_files[name]
        line = self.lines[name]
        try:
            new = load_line(loaded.file)
            if new.config.name != name:
                raise ConfigError(
                    [new.doc.issue(("name",), f"renaming line {name!r} needs an agent restart")]
                )
            with self._reload_lock:
                line.reload(self._with_model_override(new.config))
        except Exception as exc:  # ConfigError, InspectorLoadError or a surprise: not retried until changed
            if not isinstance(exc, (ConfigError, InspectorLoadError)):
                exc = ConfigError([ConfigIssue(loaded.file, None, None, (), f"cannot reload: {exc!r}")])
            entry = {"line": name, "ok": False, "error": str(exc), "at": time.time()}
            log.error("line %s: reload rejected, the running version stays: %s", name, exc)
            if isinstance(exc, ConfigError):
                line.last_reload = {"ok": False, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": str(exc)}
                if self.on_event is not None:
                    self.on_event(name, "reload_failed", {"error": str(exc)})
            self.reload_log.append(entry)
            self._mark_seen(name, loaded)
            return False
        self._line_files[name] = new
        self._mark_seen(name, new)
        self.reload_log.append(
            {"line": name, "ok": True, "model_version": line.model_version, "at": time.time()}
        )
        log.info("line %s: reloaded (model %s)", name, line.model_version)
        return True

    def loaded_line(self, name: str) -> LoadedLine:
        """The line's file and config as last loaded (after hot reloads: the running version)."""
        return self._line_files[name]

    # -- models from the programme hub -----------------------------------------------------------
    def _with_model_override(self, config: LineConfig) -> LineConfig:
        path = self.model_overrides.get(config.name)
        if path is None:
            return config
        return config.model_copy(update={"model": config.model.model_copy(update={"path": path})})

    def switch_model(self, name: str, path: Path | None) -> None:
        """Run the (already verified) model file `path` on line `name`, or its own model for None.

        Validated like a hot reload (loads, warms up, runs the reference image, knows the recipes'
        classes); on failure the running model stays and `InspectorLoadError` is raised."""
        line = self.lines[name]
        with self._reload_lock:
            previous = self.model_overrides.get(name)
            if path is None:
                self.model_overrides.pop(name, None)
            else:
                self.model_overrides[name] = path
            try:
                line.reload(self._with_model_override(self._line_files[name].config))
            except InspectorLoadError:
                if previous is None:
                    self.model_overrides.pop(name, None)
                else:
                    self.model_overrides[name] = previous
                raise
        self.reload_log.append(
            {"line": name, "ok": True, "model_version": line.model_version, "at": time.time(), "hub": True}
        )

    def _mark_seen(self, name: str, loaded: LoadedLine) -> None:
        for kind, path in self._files_of(loaded).items():
            self._watched[(name, kind)] = _Watched(_signature(path))


def _safe_stats(publisher: Publisher) -> dict[str, float]:
    """A publisher's own counters; a broken stats() must not break health or metrics."""
    try:
        return publisher.stats()
    except Exception as exc:
        return {"error": str(exc)}  # type: ignore[dict-item]

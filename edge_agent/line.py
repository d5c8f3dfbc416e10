"""`LineRuntime`: one running inspection line: camera workers → inspector → journal → publishers.

Threads per line (so one line's trouble never stops another):

- one **camera worker** per camera: opens its source, reads frames, re-opens a lost source with capped
  exponential back-off. Live cameras keep only the newest frame (older unread ones are counted as
  dropped); file sources hand over one frame at a time (nothing skipped, the reader waits).
- the **inspector** thread: in free-run takes the newest frame of every camera (up to `max_fps`); when
  triggered takes one trigger at a time from an unbounded queue (never dropped). ONNX Runtime releases the
  GIL, so inference overlaps capture and publishing.
- the **journal** thread: commits results (batched, one transaction), then tells publishers, listeners and
  the archive. The queue between inspector and journal is bounded: if the disk stalls, inference waits
  rather than losing results.

Public API used by publishers (OPC UA methods, ZeroMQ triggers) through `PublisherContext.lines[name]`:
`state`, `mode`, `recipes`, `active_recipe`, `model_version`, `set_recipe()`, `trigger()`, `pause()`,
`resume()`, `add_listener()`, `status()`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contract.result import InspectionResult
from edge_agent.config import CameraConfig, FreeRunTrigger, LineConfig
from edge_agent.inference_budget import InferenceBudget
from edge_agent.inspector import Inspector, InspectorLoadError
from edge_agent.journal import ResultJournal
from edge_agent.outcome import Outcome
from edge_agent.sources import Frame, Source, SourceError, build_source

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]


class LineError(Exception):
    """A request the line cannot honour (unknown recipe, stopped line); the message says why."""


# -- camera worker -------------------------------------------------------------------------------------


class CameraWorker:
    """Reads one camera on its own thread; see the module docstring for live vs file sources."""

    def __init__(self, line: str, config: CameraConfig, on_change: Callable[[], None]) -> None:
        self.line = line
        self.config = config
        self.name: str = config.name
        self._on_change = on_change
        self._stop = threading.Event()
        self.source: Source = build_source(config.source, config.name, self._stop)
        self.live = self.source.live
        self.state = "connecting"  # connecting | connected | reconnecting | ended | stopped
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.failures = 0
        self.last_error: str | None = None
        self.retry_in_s: float | None = None
        # live: newest frame slot; files: a hand-over queue of one
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._latest_taken = True
        self._handover: queue.Queue[Frame] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name=f"{line}/{self.name}/capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        self._set_state("stopped")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_change()

    def _run(self) -> None:
        delay = self.config.reconnect_initial_s
        while not self._stop.is_set():
            try:
                self.source.open()
            except SourceError as exc:
                self.failures += 1
                self.last_error = str(exc)
                self.retry_in_s = delay
                self._set_state("reconnecting")
                log.warning("%s/%s: %s; retrying in %.1f s", self.line, self.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            except Exception as exc:  # an unexpected driver error is still a camera failure, not a crash
                self.failures += 1
                self.last_error = f"{self.source.describe()}: {exc!r}"
                self._set_state("reconnecting")
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            if self.state == "reconnecting":
                self.reconnects += 1
            self.retry_in_s = None
            self._set_state("connected")
            delay = self.config.reconnect_initial_s
            ended = self._read_until_lost()
            self.source.close()
            if ended:
                self._set_state("ended")
                return

    def _read_until_lost(self) -> bool:
        """Read frames until stop (False), loss (False, state reconnecting) or end of stream (True)."""
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except SourceError as exc:
                self.failures += 1
                self.last_error = str(exc)
                self._set_state("reconnecting")
                log.warning("%s/%s: camera lost: %s", self.line, self.name, exc)
                return False
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{self.source.describe()}: {exc!r}"
                self._set_state("reconnecting")
                return False
            if frame is None:
                return not self._stop.is_set()
            self.frames += 1
            if self.live:
                with self._cond:
                    if not self._latest_taken:
                        self.dropped += 1  # latest frame wins
                    self._latest, self._latest_taken = frame, False
                    self._cond.notify_all()
            else:
                while not self._stop.is_set():
                    try:
                        self._handover.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        return False

    def take(self, newer_than: float | None, timeout: float) -> Frame | None:
        """The next frame: live: the newest one ready after `newer_than` (monotonic); files: the next file.
        None after `timeout` seconds or when stopping."""
        if not self.live:
            try:
                frame = self._handover.get(timeout=timeout)
            except queue.Empty:
                return None
            # a file has no clock of its own: its frame is "ready" when the line asks for it
            frame.t_ready = time.monotonic()
            return frame
        deadline = time.monotonic() + timeout
        with self._cond:
            f = self._latest
            fresh = f is not None and (newer_than is None or f.t_ready > newer_than)
            ready = fresh and not self._latest_taken
        if not ready:  # a camera that takes pictures on command (software trigger) takes one now
            self.source.request_frame()
        with self._cond:
            while not self._stop.is_set():
                f = self._latest
                if (
                    f is not None
                    and not self._latest_taken
                    and (newer_than is None or f.t_ready > newer_than)
                ):
                    self._latest_taken = True
                    return f
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
        return None

    def backlog(self) -> int:
        if self.live:
            return 0 if self._latest_taken else 1
        return self._handover.qsize()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source.describe(),
            "state": self.state,
            "frames": self.frames,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "last_error": self.last_error,
            "retry_in_s": self.retry_in_s,
            # files a file source could not read (truncated, empty, not an image): logged once each
            "skipped": int(getattr(self.source, "skipped", 0)),
            "last_skip_error": getattr(self.source, "last_skip_error", None),
            # transport counters (GigE Vision: packets missing / resent, incomplete frames)
            "transport": self.source.stats(),
        }


# -- the line ------------------------------------------------------------------------------------------


@dataclass
class _TriggerRequest:
    future: concurrent.futures.Future
    t: float
    part_id: str | None
    recipe: str | None
    extra: dict[str, Any]


@dataclass
class _Pending:
    outcome: Outcome | None
    result: InspectionResult
    future: concurrent.futures.Future | None
    t_done: float = field(default_factory=time.monotonic)


@dataclass
class _InFlight:
    """A part handed to an inference worker; settled (journal-queued) in the order parts were taken."""

    done: concurrent.futures.Future  # resolves to the Outcome, or raises the inspection error
    part_id: str
    recipe: str
    extra: dict[str, Any]
    future: concurrent.futures.Future | None


#: called by the journal thread after each commit: (line, stored result, outcome or None)
ResultSink = Callable[["LineRuntime", InspectionResult, Outcome | None], None]


class LineRuntime:
    """One running line. Build, then `start()`; thread-safe public API (see module docstring)."""

    def __init__(
        self,
        config: LineConfig,
        *,
        site: str,
        journal: ResultJournal,
        sink: ResultSink | None = None,
        inspector: Inspector | None = None,
        boot_id: str = "",
        budget: InferenceBudget | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.site = site
        self.journal = journal
        self._sink = sink
        self._inspector = inspector
        self._budget = budget
        self._boot = boot_id[:6] or "boot"
        self.active_recipe: str = config.active_recipe or next(iter(config.recipes))
        self._state = "starting"
        self._fatal: str | None = None
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._cameras: list[CameraWorker] = []
        self._triggers: queue.Queue[_TriggerRequest] = queue.Queue()  # unbounded: triggers are never dropped
        self._results: queue.Queue[_Pending] = queue.Queue(maxsize=config.result_queue)
        self._part_counter = itertools.count(1)
        # ids of the continuous job started by resume() (OPC UA StartContinuous), given to free-run results
        self._continuous: dict[str, str] = {}
        self._continuous_part: tuple[str, itertools.count] | None = None
        self._inspect_thread: threading.Thread | None = None
        self._journal_thread: threading.Thread | None = None
        self._done_times: deque[float] = deque(maxlen=256)
        self._inspecting = False  # a part between "frames taken" and "result queued"
        # With an inference budget of k concurrent runs, k parts of this line can be in inference at once
        # (each ORT call on threads/k threads), so no core idles while the next frame's work runs.
        self._workers = budget.concurrent if budget is not None else 1
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: deque[_InFlight] = deque()
        self.counts = {"inspected": 0, "ok": 0, "ng": 0, "errors": 0, "triggers": 0, "trigger_failures": 0}
        self.last_error: str | None = None
        self.last_reload: dict[str, Any] | None = None
        self.last_result: InspectionResult | None = None

    # -- public API ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.config.trigger.type

    @property
    def recipes(self) -> list[str]:
        return list(self.config.recipes)

    @property
    def model_version(self) -> str:
        return self._inspector.model_info.version if self._inspector else ""

    @property
    def class_names(self) -> list[str]:
        """The model's class names (empty until it is loaded): the Sparkplug births list one metric each."""
        return list(self._inspector.model.names.values()) if self._inspector else []

    @property
    def state(self) -> str:
        if self._fatal is not None:
            return "error"
        if self._stop.is_set() or self._state == "stopped":
            return "stopped"
        if self._state == "starting":
            return "starting"
        if self._paused.is_set():
            return "paused"
        states = [c.state for c in self._cameras]
        if states and all(s == "ended" for s in states) and self._drained():
            return "stopped"  # file sources read once and every part journaled: nothing more to do
        if "reconnecting" in states:
            return "degraded"  # a camera was lost (or never opened): retried with back-off
        if "connecting" in states:
            return "starting"
        return "running"

    def _drained(self) -> bool:
        """No frame waiting, none being inspected, every result journaled."""
        return (
            not any(c.backlog() for c in self._cameras)
            and not self._inspecting
            and not self._inflight
            and self._results.unfinished_tasks == 0
        )

    def set_recipe(self, name: str) -> None:
        if name not in self.config.recipes:
            raise KeyError(f"line {self.name!r}: unknown recipe {name!r}; recipes: {', '.join(self.recipes)}")
        with self._lock:
            old, self.active_recipe = self.active_recipe, name
        if old != name:
            self._emit("recipe", {"recipe": name, "previous": old})

    def trigger(
        self,
        part_id: str | None = None,
        *,
        meas_id: str | None = None,
        recipe: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> concurrent.futures.Future:
        """Queue one inspection; the future resolves to the journaled `InspectionResult`.

        Triggers are never dropped: a part that cannot be inspected (no frame in time, inference error)
        resolves to an NG result whose reason says why. Raises at once for an unknown recipe, a line in
        free-run, or a stopped line."""
        if self.mode != "triggered":
            raise LineError(f"line {self.name!r} runs free_run; triggers need `trigger: {{type: triggered}}`")
        if recipe is not None and recipe not in self.config.recipes:
            raise KeyError(
                f"line {self.name!r}: unknown recipe {recipe!r}; recipes: {', '.join(self.recipes)}"
            )
        if self._stop.is_set():
            raise LineError(f"line {self.name!r} is stopped")
        future: concurrent.futures.Future = concurrent.futures.Future()
        extra = {"meas_id": meas_id, "product_id": product_id, "job_id": job_id}
        with self._lock:  # trigger() is called from many threads (OPC UA, ZeroMQ, PLC)
            self.counts["triggers"] += 1
        self._triggers.put(_TriggerRequest(future, time.monotonic(), part_id, recipe, extra))
        return future

    def pause(self) -> None:
        if not self._paused.is_set():
            self._paused.set()
            self._emit_state()

    def resume(
        self,
        *,
        meas_id: str | None = None,
        part_id: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        """Go on inspecting. In free-run, the ids given (OPC UA StartContinuous) go into every result until
        the next resume: `meas_id`, `product_id`, `job_id` as they are, `part_id` as the prefix of each
        part's id (`<part_id>-000001`, ...)."""
        job = {"meas_id": meas_id, "product_id": product_id, "job_id": job_id}
        with self._lock:
            self._continuous = {k: v for k, v in job.items() if v}
            self._continuous_part = (part_id, itertools.count(1)) if part_id else None
        if self._paused.is_set():
            self._paused.clear()
            self._emit_state()

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        # a copy first (one C call under the GIL): the journal thread appends while this runs, and iterating
        # the deque itself then raised "deque mutated during iteration" (it ended the console's live stream)
        recent = [t for t in list(self._done_times) if now - t <= 5.0]
        fps = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) > 1 and recent[-1] > recent[0]
            else 0.0
        )
        inspector = self._inspector
        return {
            "line": self.name,
            "state": self.state,
            "mode": self.mode,
            "fps": round(fps, 2),
            "recipe": self.active_recipe,
            "recipes": self.recipes,
            "model": inspector.model_info.model_dump() if inspector else None,
            "providers": list(inspector.model.providers) if inspector else [],
            # backend/device/precision and how it was chosen (config, forced, auto): edge_agent.runtime_choice
            "runtime": getattr(inspector.model, "runtime_choice", None) if inspector else None,
            "cameras": [c.status() for c in self._cameras],
            "counts": dict(self.counts),
            "queues": {"triggers": self._triggers.qsize(), "results": self._results.qsize()},
            "last_seq": self.last_result.seq if self.last_result else None,
            "last_error": self._fatal or self.last_error,
            "last_reload": self.last_reload,
        }

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model (unless given), start camera, inspector and journal threads. A model that does
        not load puts the line in state "error" (other lines are unaffected)."""
        # cameras open and decode their first frame while the model loads: a shorter start
        self._start_cameras()
        if self._inspector is None:
            try:
                self._inspector = Inspector.load(self.config, self.site, self._budget)
                self._fit_sources()
            except InspectorLoadError as exc:
                self._fatal = str(exc)
                log.error("line %s: %s", self.name, exc)
                for cam in self._cameras:
                    cam.stop()
                self._emit_state()
                return
        self._ensure_threads()
        self._state = "running"
        self._emit_state()

    def _ensure_threads(self) -> None:
        """Start the inspector and journal threads, or restart one that crashed."""
        if self._workers > 1 and self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._workers, thread_name_prefix=f"{self.name}/infer"
            )
        if self._inspect_thread is None or not self._inspect_thread.is_alive():
            self._inspect_thread = threading.Thread(
                target=self._guard(self._inspect_loop), name=f"{self.name}/inspect", daemon=True
            )
            self._inspect_thread.start()
        if self._journal_thread is None or not self._journal_thread.is_alive():
            self._journal_thread = threading.Thread(
                target=self._guard(self._journal_loop), name=f"{self.name}/journal", daemon=True
            )
            self._journal_thread.start()

    def _start_cameras(self) -> None:
        self._cameras = [CameraWorker(self.name, cam, self._emit_state) for cam in self.config.cameras]
        self._fit_sources()
        for cam in self._cameras:
            cam.start()

    def _fit_sources(self) -> None:
        """Tell the cameras' sources the input size of the model they feed: they may decode frames down
        to it (a frame decoded before this is full size, and one decoded for an earlier model still maps
        its boxes back to its file's pixels)."""
        fit = self._inspector.decode_fit if self._inspector is not None else None
        for cam in self._cameras:
            cam.source.fit = fit

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking frames and triggers, finish in-flight work, journal it, join the threads."""
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for cam in self._cameras:
            cam.stop(max(0.1, deadline - time.monotonic()))
        for t in (self._inspect_thread, self._journal_thread):
            if t is not None:
                t.join(max(0.1, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        # triggers still queued get an answer, never silence
        while True:
            try:
                req = self._triggers.get_nowait()
            except queue.Empty:
                break
            if not req.future.done():
                req.future.set_exception(LineError(f"line {self.name!r} stopped before the trigger ran"))
        self._state = "stopped"
        self._emit_state()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a crashed line reports "error"; the agent and other lines go on
                self._fatal = f"{threading.current_thread().name} crashed: {exc!r}"
                log.exception("line %s: %s", self.name, self._fatal)
                self._emit_state()

        return run

    # -- hot reload -------------------------------------------------------------------------------
    def reload(self, config: LineConfig) -> None:
        """Validate `config` (model loads, warms up, runs the reference image) and swap it in.

        On failure the running configuration stays and `InspectorLoadError` is raised (and reported in
        `status()["last_reload"]`). Changed cameras are restarted; the trigger mode cannot change at
        run time (restart the agent)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        if config.trigger.type != self.config.trigger.type:
            msg = (
                f"trigger type changed ({self.config.trigger.type} -> {config.trigger.type}): restart needed"
            )
            self.last_reload = {"ok": False, "at": stamp, "error": msg}
            self._emit("reload_failed", {"error": msg})
            raise InspectorLoadError(msg)
        try:
            inspector = Inspector.load(config, self.site, self._budget)
        except InspectorLoadError as exc:
            self.last_reload = {"ok": False, "at": stamp, "error": str(exc)}
            self._emit("reload_failed", {"error": str(exc)})
            raise
        cameras_changed = [c.model_dump() for c in config.cameras] != [
            c.model_dump() for c in self.config.cameras
        ]
        # a line that never started (its model did not load) has no running cameras: start them now
        never_ran = self._inspect_thread is None
        with self._lock:
            old_cameras = self._cameras if cameras_changed and not never_ran else []
            self.config = config
            self._inspector = inspector
            self._fatal = None
            if self.active_recipe not in config.recipes:
                self.active_recipe = config.active_recipe or next(iter(config.recipes))
            if cameras_changed or never_ran:
                self._start_cameras()
            else:
                self._fit_sources()
        for cam in old_cameras:
            cam.stop()
        if not self._stop.is_set():
            self._ensure_threads()  # first start, or restart after a crash
            self._state = "running"
        self.last_reload = {"ok": True, "at": stamp, "model_version": inspector.model_info.version}
        self._emit(
            "reloaded", {"model": inspector.model_info.model_dump(), "cameras_restarted": cameras_changed}
        )
        self._emit_state()

    # -- inspector thread --------------------------------------------------------------------------
    def _gather(self, newer_than: dict[str, float], timeout: float) -> dict[str, Frame] | str:
        """One frame per camera, or the reason there is none."""
        frames: dict[str, Frame] = {}
        deadline = time.monotonic() + timeout
        for cam in list(self._cameras):
            frame = cam.take(newer_than.get(cam.name), max(0.0, deadline - time.monotonic()))
            if frame is None:
                state = cam.state if cam.state != "connected" else "no new frame"
                return f"camera {cam.name}: no frame within {timeout:g} s ({state})"
            frames[cam.name] = frame
        return frames

    def _next_part_id(self) -> str:
        return f"{self.name}-{self._boot}-{next(self._part_counter):06d}"

    def _inspect_loop(self) -> None:
        last_ready: dict[str, float] = {}
        next_slot = time.monotonic()
        while not self._stop.is_set():
            if self._paused.is_set():
                self._settle(0)  # the parts taken before the pause are journaled now, not at resume
                self._stop.wait(0.05)
                continue
            if isinstance(self.config.trigger, FreeRunTrigger):
                if self.config.trigger.max_fps:
                    self._stop.wait(max(0.0, next_slot - time.monotonic()))
                    next_slot = max(next_slot + 1.0 / self.config.trigger.max_fps, time.monotonic())
                if self.state == "stopped":
                    self._stop.wait(0.1)
                    continue
                self._inspecting = True
                try:
                    frames = self._gather(last_ready, timeout=0.5)
                    if isinstance(frames, str):
                        self._settle(0)  # no new frame: let the parts in inference through
                        continue  # camera states already tell why; free-run just waits
                    last_ready.update({cam: f.t_ready for cam, f in frames.items()})
                    with self._lock:
                        job, prefix = dict(self._continuous), self._continuous_part
                    part_id = f"{prefix[0]}-{next(prefix[1]):06d}" if prefix else self._next_part_id()
                    self._inspect_and_queue(frames, part_id, self.active_recipe, "free_run", job, None)
                finally:
                    self._inspecting = False
            else:
                try:
                    req = self._triggers.get(timeout=0.1)
                except queue.Empty:
                    self._settle(0)
                    continue
                if req.future.set_running_or_notify_cancel() is False:
                    continue
                recipe = req.recipe or self.active_recipe
                part_id = req.part_id or self._next_part_id()
                fresh = self.config.trigger.fresh_frame
                after = {c.name: req.t for c in self._cameras} if fresh else {}
                frames = self._gather(after, timeout=self.config.trigger.frame_timeout_s)
                if isinstance(frames, str):
                    self.counts["trigger_failures"] += 1
                    self._settle(0)  # parts triggered earlier are journaled first
                    self._queue_failure(frames, part_id, recipe, req.extra, req.future)
                    continue
                self._inspect_and_queue(frames, part_id, recipe, "triggered", req.extra, req.future)
        self._settle(0)  # stopping: every part taken is journaled

    def _inspect_and_queue(
        self,
        frames: dict[str, Frame],
        part_id: str,
        recipe: str,
        trigger: str,
        extra: dict[str, Any],
        future: concurrent.futures.Future | None,
    ) -> None:
        inspector = self._inspector
        assert inspector is not None
        inspect = functools.partial(
            inspector.inspect, frames, recipe, part_id=part_id, trigger=trigger, extra=extra  # type: ignore[arg-type]
        )
        if self._pool is None:  # one part at a time, on this thread
            done: concurrent.futures.Future = concurrent.futures.Future()
            try:
                done.set_result(inspect())
            except Exception as exc:
                done.set_exception(exc)
            self._finish(_InFlight(done, part_id, recipe, extra, future))
            return
        self._inflight.append(_InFlight(self._pool.submit(inspect), part_id, recipe, extra, future))
        self._settle(self._workers - 1)

    def _settle(self, limit: int) -> None:
        """Queue the results of finished parts in the order they were taken; while more than `limit` parts
        are in inference, wait for any one of them (not the oldest: a worker that finished first takes the
        next part at once instead of idling behind a slower one). Finished parts waiting behind an unfinished
        older one are bounded too (`limit + workers`), so a stuck part cannot pile results up."""
        while True:
            while self._inflight and self._inflight[0].done.done():
                # queued, then dropped from the deque: the part is always in one place or the other
                self._finish(self._inflight[0])
                self._inflight.popleft()
            running = [p.done for p in self._inflight if not p.done.done()]
            if len(running) <= limit and len(self._inflight) <= limit + self._workers:
                return
            concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)

    def _finish(self, part: _InFlight) -> None:
        try:
            outcome = part.done.result()
        except Exception as exc:
            self.counts["errors"] += 1
            self.last_error = f"inspection failed: {exc}"
            log.warning("line %s: part %s: %s", self.name, part.part_id, self.last_error)
            if part.future is not None:  # a triggered part is never lost: it gets an NG saying why
                self._queue_failure(self.last_error, part.part_id, part.recipe, part.extra, part.future)
            return
        self._put_result(_Pending(outcome, outcome.result, part.future))

    def _queue_failure(
        self, reason: str, part_id: str, recipe: str, extra: dict[str, Any], future: concurrent.futures.Future
    ) -> None:
        assert self._inspector is not None
        result = self._inspector.failure(
            reason, recipe=recipe, part_id=part_id, trigger="triggered", extra=extra
        )
        self._put_result(_Pending(None, result, future))

    def _put_result(self, pending: _Pending) -> None:
        # Bounded and blocking: if journaling stalls, inference waits instead of losing results.
        self._results.put(pending)

    # -- journal thread ---------------------------------------------------------------------------
    def _journal_loop(self) -> None:
        inspector_thread = self._inspect_thread
        assert inspector_thread is not None
        while True:
            try:
                first = self._results.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set() and not inspector_thread.is_alive():
                    return  # drained and nothing more can come
                continue
            batch = [first]
            while len(batch) < 64:
                try:
                    batch.append(self._results.get_nowait())
                except queue.Empty:
                    break
            try:
                stored = self.journal.append_many([p.result for p in batch])
            except Exception as exc:
                # the journal is the source of truth: without it nothing may be published
                self.last_error = f"journal write failed: {exc}"
                log.error("line %s: %s", self.name, self.last_error)
                for p in batch:
                    if p.future is not None and not p.future.done():
                        p.future.set_exception(exc)
                raise
            for pending, result in zip(batch, stored, strict=True):
                self._after_commit(pending, result)
                self._results.task_done()

    def _after_commit(self, pending: _Pending, result: InspectionResult) -> None:
        self.counts["inspected"] += 1
        self.counts["ok" if result.verdict == "OK" else "ng"] += 1
        self._done_times.append(time.monotonic())
        self.last_result = result
        outcome = pending.outcome
        if outcome is not None:
            outcome.result = result
        if self._sink is not None:
            try:
                self._sink(self, result, outcome)
            except Exception:
                log.exception("line %s: result sink failed", self.name)
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(result)

    # -- listeners --------------------------------------------------------------------------------
    _last_emitted_state: str | None = None

    def _emit_state(self) -> None:
        state = self.state
        if state != self._last_emitted_state:
            self._last_emitted_state = state
            self._emit("state", self.status())

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        for callback in list(self._listeners):
            try:
                callback(event, payload)
            except Exception:
                log.exception("line %s: listener failed on %s", self.name, event)

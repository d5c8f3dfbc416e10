"""NG archive: the raw and annotated image of every NG part, a sampled share of OK parts, in a disk quota.

Writing happens on its own thread behind a bounded queue: a slow or full disk degrades archiving
(images are skipped and counted), never inspection. Beyond `quota_mb` the oldest images are deleted;
below `min_free_mb` of free disk nothing is written.

Layout: `<archive>/<line>/<YYYY-MM-DD>/<seq>_<part_id>_<verdict>_<camera>[_annotated].<ext>`
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import queue
import random
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import ArchiveConfig
from edge_agent.inspector import Outcome
from edge_agent.result import InspectionResult

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def archived_image(root: Path, result: InspectionResult, camera: str, annotated: bool = False) -> Path | None:
    """The archived image of `result` from `camera` (the layout above), or None; never outside `root`."""
    if result.seq is None:
        return None
    root = Path(root).resolve()
    folder = root / _UNSAFE.sub("_", result.line) / result.timestamp.strftime("%Y-%m-%d")
    part, cam = _UNSAFE.sub("_", result.part_id), _UNSAFE.sub("_", camera)
    stem = f"{result.seq:010d}_{part}_{result.verdict}_{cam}{'_annotated' if annotated else ''}"
    for ext in (".jpg", ".png"):
        path = (folder / f"{stem}{ext}").resolve()
        if not path.is_relative_to(root):
            return None
        if path.is_file():
            return path
    return None


@dataclass
class ArchiveStats:
    written: int = 0
    skipped_queue_full: int = 0
    skipped_disk: int = 0
    write_errors: int = 0
    deleted_for_quota: int = 0
    bytes_used: int = 0
    degraded: bool = False


def _verdict_banner(image: np.ndarray, result: InspectionResult) -> np.ndarray:
    """Write the verdict and the first reason across the top of an annotated image."""
    text = f"{result.verdict} {result.part_id}" + (f": {result.reasons[0]}" if result.reasons else "")
    scale = max(0.4, image.shape[1] / 1000)
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    colour = (40, 40, 220) if result.verdict == "NG" else (40, 160, 40)  # BGR: red / green
    cv2.rectangle(image, (0, 0), (image.shape[1], th + base + 6), colour, -1)
    cv2.putText(image, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class Archive:
    def __init__(self, config: ArchiveConfig, seed: int | None = None) -> None:
        self.config = config
        self.root = Path(config.path)
        self.stats = ArchiveStats()
        self._rng = random.Random(seed)
        self._queue: queue.Queue[Outcome | None] = queue.Queue(maxsize=config.queue)
        self._thread: threading.Thread | None = None
        self._files: list[tuple[float, str, int]] = []  # (mtime, path, size): a heap, oldest first
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.root.rglob("*"):
            if p.is_file():
                st = p.stat()
                self._files.append((st.st_mtime, str(p), st.st_size))
                self.stats.bytes_used += st.st_size
        heapq.heapify(self._files)
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("archive: queue still full at shutdown; %d images not written", self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    # -- feeding (from a line's journal thread; never blocks) --------------------------------------
    def wants(self, verdict: str) -> bool:
        if not self.config.enabled:
            return False
        return verdict == "NG" or (
            self.config.ok_sample_rate > 0 and self._rng.random() < self.config.ok_sample_rate
        )

    def submit(self, outcome: Outcome) -> bool:
        """Queue a journaled part's images if the archive wants them; False if skipped."""
        if self._thread is None or not self.wants(outcome.result.verdict):
            return False
        try:
            self._queue.put_nowait(outcome)
        except queue.Full:
            self.stats.skipped_queue_full += 1
            return False
        return True

    def backlog(self) -> int:
        return self._queue.qsize()

    # -- writing -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            outcome = self._queue.get()
            if outcome is None:
                return
            try:
                self._write(outcome)
            except Exception as exc:  # never let one bad image end archiving
                self.stats.write_errors += 1
                self.stats.degraded = True
                self.last_error = str(exc)
                log.warning("archive: %s", exc)

    def _free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e6

    def _write(self, outcome: Outcome) -> None:
        from vision.draw import annotate

        if self._free_mb() < self.config.min_free_mb:
            self.stats.skipped_disk += 1
            self.stats.degraded = True
            self.last_error = f"{self.root}: less than {self.config.min_free_mb} MB free; archiving paused"
            return
        result = outcome.result
        day = result.timestamp.strftime("%Y-%m-%d")
        folder = self.root / _UNSAFE.sub("_", result.line) / day
        folder.mkdir(parents=True, exist_ok=True)
        ext = "." + self.config.format
        params = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality] if ext == ".jpg" else []
        stem = f"{result.seq:010d}_{_UNSAFE.sub('_', result.part_id)}_{result.verdict}"
        for cam, frame in outcome.frames.items():
            images = [("", frame.image)]
            if self.config.annotated:
                det = outcome.detections.get(cam)
                if det is not None:
                    images.append(("_annotated", _verdict_banner(annotate(frame.image, det), result)))
            for suffix, image in images:
                path = folder / f"{stem}_{_UNSAFE.sub('_', cam)}{suffix}{ext}"
                ok, buf = cv2.imencode(ext, image, params)
                if not ok:
                    raise OSError(f"{path}: image encoding failed")
                try:
                    path.write_bytes(buf.tobytes())
                except OSError as exc:  # disk full / read-only: degrade, keep inspecting
                    self.stats.write_errors += 1
                    self.stats.degraded = True
                    self.last_error = f"{path}: {exc.strerror or exc}"
                    path.unlink(missing_ok=True)
                    return
                size = len(buf)
                heapq.heappush(self._files, (path.stat().st_mtime, str(path), size))
                self.stats.bytes_used += size
                self.stats.written += 1
        self.stats.degraded = False
        self._enforce_quota()

    def _enforce_quota(self) -> None:
        quota = self.config.quota_mb * 1e6
        while self.stats.bytes_used > quota and self._files:
            _mtime, path, size = heapq.heappop(self._files)
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
            self.stats.bytes_used -= size
            self.stats.deleted_for_quota += 1

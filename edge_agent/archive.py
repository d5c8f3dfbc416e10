"""NG archive: the image of every NG part and of a sampled share of OK parts, in a disk quota.

The raw image is the camera's own file where there is one (a JPEG or PNG that decodes to exactly the
pixels the model saw: kept byte for byte, no second encoding), otherwise the frame encoded as configured.
An annotated copy (boxes, masks, verdict banner) is written at inspection time only with
`archive.annotated: true`; without it `render_annotated` draws one from the raw image and the journaled
result when somebody asks (console, hub), so the line's CPU goes to inspection, not to pictures.

Writing happens on its own thread behind a bounded queue: a slow or full disk degrades archiving
(images are skipped and counted, the first failure and the recovery are logged), never inspection. Beyond
`quota_mb` the oldest images are deleted, oldest day folder first, down to 95 % of the quota (so the
folder is listed once per 5 % of the quota, not once per image), on a thread of their own so that a pass
over a day folder of tens of thousands of images never holds up writing; the quota is enforced at start
and at stop too.
Below `min_free_mb` of free disk nothing is written.

Memory stays flat however many images are kept: the archive remembers bytes per day folder, not a
record per file (one per file grew the agent by ~0.5 MB/min at 20 NG parts/s).

Layout: `<archive>/<line>/<YYYY-MM-DD>/<seq>_<part_id>_<verdict>_<camera>[_annotated].<ext>`; a line with
an anomaly model also keeps each archived camera's anomaly map, `<...>_<camera>_anomaly.png` (8-bit,
`vision.draw.encode_anomaly_map`: 127.5 = the pixel threshold of the result), from which the heat
overlay is drawn again.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import random
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from contract.archive_layout import camera_file, part_location
from contract.result import InspectionResult
from edge_agent.config import ArchiveConfig
from edge_agent.outcome import Outcome

log = logging.getLogger(__name__)

_PARTIAL = ".part"  # suffix of an image being written (hidden name, renamed when whole)

def archived_image(
    root: Path, result: InspectionResult, camera: str, annotated: bool = False, *, anomaly_map: bool = False
) -> Path | None:
    """The archived image of `result` from `camera` (the layout above), or with `anomaly_map` its kept
    anomaly map, or None; never outside `root`."""
    if result.seq is None:
        return None
    root = Path(root).resolve()
    day = result.timestamp.strftime("%Y-%m-%d")
    folder, stem = part_location(root, result.line, day, result.seq, result.part_id, result.verdict)
    suffix = "_anomaly" if anomaly_map else "_annotated" if annotated else ""
    for ext in (".png",) if anomaly_map else (".jpg", ".png"):
        path = (folder / camera_file(stem, camera, ext, suffix)).resolve()
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


def draw_annotated(path: Path, result: InspectionResult, camera: str) -> np.ndarray | None:
    """`camera`'s archived raw image at `path` with `result`'s boxes, labels and verdict banner drawn now,
    over the heat of its anomaly map where one was kept beside it (masks are only in copies written at
    inspection time); None if the file cannot be read."""
    from vision.detections import Detections
    from vision.draw import annotate, decode_anomaly_map, heat_overlay

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    score = next((a for a in result.anomaly if a.camera == camera), None)
    kept = path.with_name(f"{path.stem}_anomaly.png")
    if score is not None and kept.is_file():
        encoded = cv2.imread(str(kept), cv2.IMREAD_GRAYSCALE)
        if encoded is not None:
            amap = decode_anomaly_map(encoded, score.pixel_threshold)
            image = heat_overlay(image, amap, score.pixel_threshold)
    defects = [d for d in result.defects if d.camera == camera]
    detections = Detections(
        xyxy=np.array([d.xyxy for d in defects], np.float32).reshape(-1, 4),
        confidence=np.array([d.confidence for d in defects], np.float32),
        class_id=np.array([d.class_id for d in defects], np.int64),
        names={d.class_id: d.class_name for d in defects},
    )
    return _verdict_banner(annotate(image, detections), result)


def render_annotated(path: Path, result: InspectionResult, camera: str) -> bytes | None:
    """`draw_annotated` as a JPEG file's bytes."""
    image = draw_annotated(path, result, camera)
    ok, buf = cv2.imencode(".jpg", image) if image is not None else (False, None)
    return buf.tobytes() if ok else None


def annotated_file(root: Path, result: InspectionResult, camera: str) -> tuple[bytes, str] | None:
    """(bytes, file name) of `camera`'s annotated picture of `result`: the copy written at inspection time
    (`archive.annotated: true`) if the archive keeps one, else drawn now from the raw image; None when
    neither can be had."""
    written = archived_image(root, result, camera, annotated=True)
    if written is not None:
        return written.read_bytes(), written.name
    raw = archived_image(root, result, camera)
    data = render_annotated(raw, result, camera) if raw is not None else None
    return (data, f"{raw.stem}_annotated.jpg") if data is not None and raw is not None else None


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
        self._ok_credit = self._rng.random()  # OK sampling: where in the first interval it starts
        self._queue: queue.Queue[Outcome | None] = queue.Queue(maxsize=config.queue)
        self._thread: threading.Thread | None = None
        # bytes kept per day folder (<line>/<day>): a handful of entries, whatever the number of images
        self._folder_bytes: dict[Path, int] = {}
        self._files = 0  # files kept, all folders: the mean size tells the quota how many to take at once
        # the quota's deletions run on their own thread, so a pass over a big day folder never holds up
        # writing (it did: the queue of 64 parts filled, +20 MiB, and NG images were skipped). The lock
        # guards the counts only, never a file operation: held across each stat+unlink, the quota thread
        # took it back at once after each file and starved the writer for the whole pass. `_writing` is
        # the file being written and not yet counted, which the quota thread leaves alone.
        self._lock = threading.Lock()
        self._writing: Path | None = None
        self._over_quota = threading.Event()
        self._stopping = False
        self._quota_thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for line_dir in _subfolders(self.root):
            for day_dir in _subfolders(line_dir):
                files, size = _count_and_tidy(day_dir)
                self._files += files
                self._folder_bytes[day_dir] = size
                self.stats.bytes_used += size
        self._enforce_quota()  # a lowered quota takes effect now, not at the first NG part
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()
        self._quota_thread = threading.Thread(target=self._run_quota, name="archive-quota", daemon=True)
        self._quota_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("archive: queue still full at shutdown; %d images not written", self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None
        self._stopping = True
        self._over_quota.set()
        if self._quota_thread is not None:
            self._quota_thread.join(timeout)
            self._quota_thread = None
        self._enforce_quota()  # what the last images added

    # -- feeding (from a line's journal thread; never blocks) --------------------------------------
    def wants(self, verdict: str) -> bool:
        """Every NG part; of OK parts, evenly `ok_sample_rate` (0.01: exactly one in every 100 from a
        random start), so an escape found later has recent OK images beside it, never a long gap."""
        if not self.config.enabled:
            return False
        if verdict == "NG":
            return True
        rate = self.config.ok_sample_rate
        if rate <= 0:
            return False
        self._ok_credit += rate
        if self._ok_credit >= 1.0 - 1e-9:
            self._ok_credit -= 1.0
            return True
        return False

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
                self._degrade(str(exc))

    def _run_quota(self) -> None:
        while not self._stopping:
            self._over_quota.wait()
            self._over_quota.clear()
            if self._stopping:
                return
            try:
                self._enforce_quota()
            except Exception as exc:  # never let one bad pass end the quota
                self._degrade(f"quota: {exc}")

    def _free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e6

    def _write(self, outcome: Outcome) -> None:
        from vision.draw import annotate, encode_anomaly_map, heat_overlay

        if self._free_mb() < self.config.min_free_mb:
            self.stats.skipped_disk += 1
            self._degrade(f"{self.root}: less than {self.config.min_free_mb} MB free; archiving paused")
            return
        result = outcome.result
        day = result.timestamp.strftime("%Y-%m-%d")
        folder, stem = part_location(self.root, result.line, day, result.seq, result.part_id, result.verdict)
        ext = "." + self.config.format
        params = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality] if ext == ".jpg" else []
        for cam, frame in outcome.frames.items():
            kept = frame.file.data if frame.file is not None and frame.file.ext == ext else None
            # at the file's size, where the journaled boxes are: a frame decoded smaller is decoded again
            # (once, whether for the raw picture, the annotated one or both)
            pixels = frame.full_image() if kept is None or self.config.annotated else frame.image
            images: list[tuple[str, bytes | np.ndarray]] = [("", kept if kept is not None else pixels)]
            anomaly = outcome.anomaly.get(cam)
            if anomaly is not None:  # the map, 8-bit: the heat overlay can be drawn again from it
                images.append(("_anomaly", encode_anomaly_map(anomaly.map, anomaly.pixel_threshold)))
            if self.config.annotated:
                det = outcome.detections.get(cam)
                if det is not None:
                    base = pixels
                    if anomaly is not None:
                        base = heat_overlay(pixels, anomaly.map, anomaly.pixel_threshold)
                    images.append(("_annotated", _verdict_banner(annotate(base, det), result)))
            for suffix, image in images:
                image_ext = ".png" if suffix == "_anomaly" else ext
                path = folder / camera_file(stem, cam, image_ext, suffix)
                if isinstance(image, bytes):  # the camera's own file: kept as it came
                    data = image
                else:
                    ok, buf = cv2.imencode(image_ext, image, params if image_ext == ext else [])
                    if not ok:
                        raise OSError(f"{path}: image encoding failed")
                    data = buf.tobytes()
                with self._lock:
                    self._writing = path
                # written under a hidden name and renamed: a reader (console, hub, test) that finds the
                # file finds it whole, never a JPEG or map still being written
                partial = path.with_name(f".{path.name}{_PARTIAL}")
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    partial.write_bytes(data)
                    os.replace(partial, path)
                except OSError as exc:  # disk full / read-only: degrade, keep inspecting
                    self.stats.write_errors += 1
                    with contextlib.suppress(OSError):
                        partial.unlink(missing_ok=True)
                    self._writing = None
                    self._degrade(f"{path}: {exc.strerror or exc}")
                    return
                size = len(data)
                with self._lock:
                    self._writing = None
                    self._folder_bytes[folder] = self._folder_bytes.get(folder, 0) + size
                    self.stats.bytes_used += size
                    self.stats.written += 1
                    self._files += 1
        if self.stats.degraded:
            log.info("archive %s: writing again (%d images lost meanwhile in all)", self.root, self._lost())
        self.stats.degraded = False
        if self.stats.bytes_used > self.config.quota_mb * 1e6:
            self._over_quota.set()

    def _lost(self) -> int:
        return self.stats.write_errors + self.stats.skipped_disk

    def _degrade(self, reason: str) -> None:
        """Count-only from the second failure on: a full disk at 20 parts/s must not flood the log."""
        if not self.stats.degraded:
            log.error("archive: %s (further failures are counted, not logged, until writing works)", reason)
        self.stats.degraded = True
        self.last_error = reason

    def _enforce_quota(self) -> None:
        """Beyond the quota: delete the oldest images (oldest day folder, lowest seq first) down to 95 %."""
        quota = self.config.quota_mb * 1e6
        if self.stats.bytes_used <= quota:
            return
        target = quota * 0.95
        with self._lock:
            folders = list(self._folder_bytes)
        # folder names are <line>/<YYYY-MM-DD>: the oldest day first, whatever the line
        for folder in sorted(folders, key=lambda f: (f.name, f.parent.name)):
            if self.stats.bytes_used <= target:
                break
            emptied = self._delete_oldest(folder, target)
            if emptied is None:
                return
            if emptied:
                with self._lock:
                    writing_here = self._writing is not None and self._writing.parent == folder
                    if self._folder_bytes.get(folder, 0) <= 0 and not writing_here:  # nothing new in it
                        self._folder_bytes.pop(folder, None)
                        with contextlib.suppress(OSError):
                            folder.rmdir()  # an emptied day folder goes too

    def _delete_oldest(self, folder: Path, target: float) -> bool | None:
        """Delete `folder`'s oldest files until the archive is at `target` bytes: True if that emptied
        the folder, None if a delete failed. A day folder can hold tens of thousands of images: only the
        oldest few that the excess needs (from the mean file size, with a margin) are held at once, never
        a list of every name (29,325 names and their sorted copy at each deletion made a sawtooth)."""
        while self.stats.bytes_used > target:
            mean = max(1, self.stats.bytes_used // max(1, self._files))
            wanted = int((self.stats.bytes_used - target) / mean * 1.25) + 16
            # <seq:010d>_...: name order is age order
            oldest = heapq.nsmallest(wanted, _iter_file_names(folder))
            for name in oldest:
                if self.stats.bytes_used <= target:
                    return False
                path = folder / name
                if path == self._writing:  # being written, not counted yet: the newest, not to delete
                    return False
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self._degrade(f"{path}: cannot delete for the quota: {exc.strerror or exc}")
                    return None
                with self._lock:
                    self.stats.bytes_used -= size
                    self._folder_bytes[folder] = self._folder_bytes.get(folder, 0) - size
                    self.stats.deleted_for_quota += 1
                    self._files -= 1
            if len(oldest) < wanted:  # that was every file the folder had
                return True
        return False


def _subfolders(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _iter_file_names(folder: Path) -> Iterator[str]:
    """The names of `folder`'s images, one at a time (a day folder may hold tens of thousands); an image
    being written (a hidden partial file) is not one yet."""
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                    yield e.name
    except OSError:
        return


def _count_and_tidy(folder: Path) -> tuple[int, int]:
    """The images in `folder` and their bytes, in one pass over a folder that may hold tens of thousands,
    holding no list of them; a partial file (left by a stop in mid-write, never a whole image) is deleted."""
    files = size = 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                with contextlib.suppress(OSError):
                    if e.name.startswith("."):  # not an image (as for the quota, which never deletes it)
                        if e.name.endswith(_PARTIAL):
                            os.unlink(e.path)
                    elif e.is_file(follow_symlinks=False):
                        size += e.stat().st_size
                        files += 1
    except OSError:
        pass
    return files, size

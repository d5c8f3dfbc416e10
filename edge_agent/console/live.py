"""What the console knows about the running lines without asking the journal: the newest frames and
results, this shift's counts, yield over time and NG by class.

`ConsoleHub.offer()` is the agent's hook, called on a line's journal thread right after each commit. It
only keeps references and bumps counters (no encoding, no I/O, no lock shared with a browser), so the
console never slows a line. Frames are JPEG-encoded only when a browser asks for one (`frame_jpeg`), once
per frame however many browsers watch it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contract.result import InspectionResult

if TYPE_CHECKING:
    from vision.anomaly import Anomaly

#: width of one bar of the yield-over-time chart
BUCKET_S = 300
#: frames kept per line, so a browser asking for the frame of a result it was just told about finds it
FRAMES_KEPT = 4
#: longest side of a live frame as sent to browsers (boxes are drawn by the page at full resolution)
LIVE_MAX_SIDE = 1280


def _live_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(h, w) of a frame of `shape` as sent to browsers: at most LIVE_MAX_SIDE on its longest side."""
    h, w = shape[:2]
    scale = LIVE_MAX_SIDE / max(h, w)
    return (h, w) if scale >= 1 else (round(h * scale), round(w * scale))


def _live_size(image: np.ndarray) -> np.ndarray:
    """`image` as sent to browsers (`_live_shape`)."""
    import cv2

    h, w = _live_shape(image.shape)
    if (h, w) == image.shape[:2]:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def shift_start(now: datetime, starts: list[str]) -> datetime:
    """The local time the current shift began, for shift boundaries like ['06:00', '14:00', '22:00']."""
    candidates = []
    for day in (now.date() - timedelta(days=1), now.date()):
        for s in starts:
            hh, mm = (int(v) for v in s.split(":"))
            candidates.append(datetime(day.year, day.month, day.day, hh, mm))
    return max(c for c in candidates if c <= now)


def summary_of(result: InspectionResult) -> dict[str, Any]:
    """The few fields a list of recent results shows."""
    return {
        "seq": result.seq,
        "part_id": result.part_id,
        "verdict": result.verdict,
        "reason": result.reasons[0] if result.reasons else "",
        "time": result.timestamp.astimezone().strftime("%H:%M:%S"),
        "classes": sorted({d.class_name for d in result.defects if d.counts_for_verdict}),
    }


@dataclass
class ShiftCounts:
    start: float  # epoch seconds
    ok: int = 0
    ng: int = 0
    ng_by_class: Counter = field(default_factory=Counter)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket start (epoch) -> [ok, ng]

    def add(self, verdict: str, ts: float, classes: set[str], n: int = 1) -> None:
        if verdict == "OK":
            self.ok += n
        else:
            self.ng += n
            for c in classes or {"(no frame / error)"}:
                self.ng_by_class[c] += n
        bucket = self.buckets.setdefault(int(ts // BUCKET_S * BUCKET_S), [0, 0])
        bucket[0 if verdict == "OK" else 1] += n

    def to_dict(self) -> dict[str, Any]:
        total = self.ok + self.ng
        return {
            "since": datetime.fromtimestamp(self.start).strftime("%H:%M"),
            "parts": total,
            "ok": self.ok,
            "ng": self.ng,
            "yield": round(self.ok / total, 4) if total else None,
            "ng_by_class": dict(self.ng_by_class.most_common()),
            "yield_over_time": [
                {"t": datetime.fromtimestamp(t).strftime("%H:%M"), "ok": v[0], "ng": v[1]}
                for t, v in sorted(self.buckets.items())
            ],
        }


@dataclass
class LiveFrame:
    seq: int
    result: InspectionResult
    images: dict[str, np.ndarray]
    anomaly: dict[str, Anomaly] = field(default_factory=dict)  # camera: its anomaly output (anomaly lines)


class LineFeed:
    """One line's live state, written by its journal thread, read by the console's threads."""

    def __init__(self, name: str, shift: ShiftCounts) -> None:
        self.name = name
        self.frames: deque[LiveFrame] = deque(maxlen=FRAMES_KEPT)
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.latest: InspectionResult | None = None
        self.shift = shift
        self.totals: Counter = Counter()  # every result of this line in the journal, by verdict
        self._jpeg_lock = threading.Lock()
        self._jpeg_cache: dict[tuple[int, str], bytes] = {}

    def frame(self, seq: int | None) -> LiveFrame | None:
        frames = list(self.frames)
        if not frames:
            return None
        if seq is not None:
            for f in reversed(frames):
                if f.seq == seq:
                    return f
        return frames[-1]


class ConsoleHub:
    """The live side of the console; see the module docstring."""

    def __init__(self, journal_path: Path, line_names: list[str], shift_starts: list[str]) -> None:
        self.journal_path = Path(journal_path)
        self.shift_starts = shift_starts
        start = shift_start(datetime.now(), shift_starts)
        self._next_shift = self._following_shift(start)
        self.lines: dict[str, LineFeed] = {n: LineFeed(n, ShiftCounts(start.timestamp())) for n in line_names}
        self.version = 0  # bumps on every result: SSE streams compare it
        self.frames_encoded = 0
        self.watchers = 0
        self.seeded = threading.Event()
        self.review_counts: dict[str, dict[str, int]] = {}
        self._seed_upto = self._last_seq()
        self._result_json: tuple[InspectionResult, str] | None = None

    # -- the hook (journal thread; must stay cheap) -------------------------------------------------
    def offer(
        self,
        line: str,
        result: InspectionResult,
        images: dict[str, np.ndarray] | None,
        anomaly: dict[str, Anomaly] | None = None,
    ) -> None:
        feed = self.lines.get(line)
        if feed is None:
            feed = self.lines[line] = LineFeed(line, ShiftCounts(self._current_shift_start()))
        ts = result.timestamp.timestamp()
        if ts >= self._next_shift:
            self._roll_shift()
        classes = {d.class_name for d in result.defects if d.counts_for_verdict}
        feed.shift.add(result.verdict, ts, classes)
        feed.totals[result.verdict] += 1
        feed.recent.appendleft(summary_of(result))
        feed.latest = result
        if images and result.seq is not None:
            feed.frames.append(LiveFrame(result.seq, result, images, anomaly or {}))
        self.version += 1

    def result_json(self, result: InspectionResult) -> str:
        """The result's JSON, built once however many live streams send it."""
        cached = self._result_json
        if cached is not None and cached[0] is result:
            return cached[1]
        text = result.to_json()
        self._result_json = (result, text)
        return text

    # -- frames (console threads) -------------------------------------------------------------------
    def cached_jpeg(self, line: str, camera: str, seq: int | None) -> tuple[int, bytes] | None:
        """The JPEG of a kept frame if it has been encoded already (no lock, no encoding)."""
        feed = self.lines.get(line)
        frame = feed.frame(seq) if feed is not None else None
        if frame is None:
            return None
        data = feed._jpeg_cache.get((frame.seq, camera))
        return (frame.seq, data) if data is not None else None

    def frame_jpeg(self, line: str, camera: str, seq: int | None, quality: int) -> tuple[int, bytes] | None:
        """The JPEG of a recent frame (the one of result `seq` if still kept, else the newest)."""
        import cv2

        def encode(frame: LiveFrame) -> bytes | None:
            params = [cv2.IMWRITE_JPEG_QUALITY, quality]
            ok, buf = cv2.imencode(".jpg", _live_size(frame.images[camera]), params)
            return buf.tobytes() if ok else None

        return self._encoded(line, seq, camera, lambda f: camera in f.images, encode)

    def full_size_jpeg(self, line: str, camera: str, quality: int) -> bytes | None:
        """The newest kept frame of `camera` at the size the rules judge it in (its result's frame size:
        a file decoded smaller, `scaled_decode`, is scaled back up), so the setup page can take the ROI's
        pixels from the picture's own size. Encoded per request, not cached: only the setup page asks."""
        import cv2

        feed = self.lines.get(line)
        frame = feed.frame(None) if feed is not None else None
        if frame is None or camera not in frame.images:
            return None
        image = frame.images[camera]
        info = next((f for f in frame.result.frames if f.camera == camera), None)
        if info is not None and image.shape[:2] != (info.height, info.width):
            image = cv2.resize(image, (info.width, info.height), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return buf.tobytes() if ok else None

    def heat_png(self, line: str, camera: str, seq: int | None) -> tuple[int, bytes] | None:
        """A recent frame's anomaly map as a translucent heat PNG (`vision.draw.heat_rgba`) at the live
        frame's size, to lay over it; None when that frame has no anomaly map of `camera`."""
        import cv2

        from vision.draw import heat_rgba

        def encode(frame: LiveFrame) -> bytes | None:
            anomaly = frame.anomaly[camera]
            amap = anomaly.map_at(_live_shape(frame.images[camera].shape))
            ok, buf = cv2.imencode(".png", heat_rgba(amap, anomaly.pixel_threshold))
            return buf.tobytes() if ok else None

        has = lambda f: camera in f.anomaly and camera in f.images  # noqa: E731
        return self._encoded(line, seq, f"{camera}#heat", has, encode)

    def _encoded(
        self,
        line: str,
        seq: int | None,
        key_name: str,
        has: Callable[[LiveFrame], bool],
        encode: Callable[[LiveFrame], bytes | None],
    ) -> tuple[int, bytes] | None:
        """One encoding per kept frame and picture however many browsers ask (cached while it is kept)."""
        feed = self.lines.get(line)
        if feed is None:
            return None
        frame = feed.frame(seq)
        if frame is None or not has(frame):
            return None
        key = (frame.seq, key_name)
        with feed._jpeg_lock:
            cached = feed._jpeg_cache.get(key)
            if cached is None:
                cached = encode(frame)
                if cached is None:
                    return None
                self.frames_encoded += 1
                kept = {f.seq for f in feed.frames}
                for k in [k for k in feed._jpeg_cache if k[0] not in kept]:
                    del feed._jpeg_cache[k]
                feed._jpeg_cache[key] = cached
        return frame.seq, cached

    # -- shift bookkeeping ----------------------------------------------------------------------------
    def handover(self, line: str) -> dict[str, Any]:
        """Hand the shift over on `line`: its counters start again from now; returns the counts handed
        over (the caller writes them to the audit log). The next scheduled shift start resets as usual."""
        feed = self._feed(line)
        ended = feed.shift.to_dict()
        feed.shift = ShiftCounts(time.time())
        self.version += 1
        return ended

    def _current_shift_start(self) -> float:
        return shift_start(datetime.now(), self.shift_starts).timestamp()

    def _following_shift(self, start: datetime) -> float:
        probe = start + timedelta(minutes=1)
        while shift_start(probe, self.shift_starts) == start:
            probe += timedelta(minutes=1)
        return shift_start(probe, self.shift_starts).timestamp()

    def _roll_shift(self) -> None:
        start = shift_start(datetime.now(), self.shift_starts)
        self._next_shift = self._following_shift(start)
        for feed in self.lines.values():
            feed.shift = ShiftCounts(start.timestamp())

    # -- seeding from the journal (once, on a background thread) ---------------------------------------
    def _connect(self) -> sqlite3.Connection | None:
        if not self.journal_path.exists():
            return None
        return sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, timeout=30)

    def _last_seq(self) -> int:
        db = self._connect()
        if db is None:
            return 0
        try:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='results'").fetchone()
            return int(row[0]) if row else 0
        except sqlite3.Error:
            return 0
        finally:
            db.close()

    def seed(self) -> None:
        """Counts of this shift, totals and the recent results from what the journal held at start."""
        try:
            from edge_agent.console.web import TEMPLATES

            for name in TEMPLATES.env.list_templates():  # compiled now, not on the first visitor's request
                TEMPLATES.env.get_template(name)
            self._seed()
        finally:
            self.seeded.set()

    def _seed(self) -> None:
        db = self._connect()
        if db is None:
            return
        upto = self._seed_upto
        try:
            for line, verdict, n in db.execute(
                "SELECT line, verdict, COUNT(*) FROM results WHERE seq <= ? GROUP BY line, verdict", (upto,)
            ):
                self._feed(line).totals[verdict] += n
            start = min(f.shift.start for f in self.lines.values()) if self.lines else time.time()
            for line, bucket, verdict, n in db.execute(
                "SELECT line, CAST(ts / ? AS INTEGER) * ?, verdict, COUNT(*) FROM results "
                "WHERE ts >= ? AND seq <= ? GROUP BY 1, 2, 3",
                (BUCKET_S, BUCKET_S, start, upto),
            ):
                shift = self._feed(line).shift
                if verdict == "OK":
                    shift.ok += n
                else:
                    shift.ng += n
                b = shift.buckets.setdefault(int(bucket), [0, 0])
                b[0 if verdict == "OK" else 1] += n
            for line, cls, n in db.execute(
                "SELECT r.line, json_extract(d.value, '$.class'), COUNT(DISTINCT r.seq) "
                "FROM results r, json_each(r.body, '$.defects') d WHERE r.ts >= ? AND r.seq <= ? "
                "AND r.verdict = 'NG' AND json_extract(d.value, '$.counts_for_verdict') GROUP BY 1, 2",
                (start, upto),
            ):
                self._feed(line).shift.ng_by_class[cls] += n
            for feed in list(self.lines.values()):
                rows = db.execute(
                    "SELECT body FROM results WHERE line = ? AND seq <= ? ORDER BY seq DESC LIMIT 50",
                    (feed.name, upto),
                ).fetchall()
                for (body,) in reversed(rows):
                    result = InspectionResult.from_json(body)
                    feed.recent.appendleft(summary_of(result))  # offers since start stay in front
                    if feed.latest is None:
                        feed.latest = result
                recent = list(feed.recent)
                recent.sort(key=lambda r: r["seq"] or 0, reverse=True)
                feed.recent = deque(recent[:50], maxlen=50)
            self.review_counts = _review_counts(db)
        except sqlite3.Error:
            pass  # an old journal without reviews yet: counts stay what the offers bring
        finally:
            db.close()

    def _feed(self, line: str) -> LineFeed:
        if line not in self.lines:
            self.lines[line] = LineFeed(line, ShiftCounts(self._current_shift_start()))
        return self.lines[line]

    def note_review(self, line: str, previous: str | None, decision: str) -> None:
        counts = self.review_counts.setdefault(line, {})
        if previous:
            counts[previous] = max(0, counts.get(previous, 0) - 1)
        counts[decision] = counts.get(decision, 0) + 1

    def review_rates(self, line: str) -> dict[str, Any]:
        """False-reject rate (false rejects / reviewed NG parts) and escape rate (escapes / OK parts)."""
        counts = self.review_counts.get(line, {})
        feed = self.lines.get(line)
        ok_total = feed.totals.get("OK", 0) if feed else 0
        reviewed_ng = counts.get("false_reject", 0) + counts.get("confirmed_ng", 0)
        return {
            "counts": dict(counts),
            "false_reject_rate": round(counts.get("false_reject", 0) / reviewed_ng, 4)
            if reviewed_ng
            else None,
            "escape_rate": round(counts.get("escape", 0) / ok_total, 6) if ok_total else None,
            "reviewed_ng": reviewed_ng,
            "ok_parts": ok_total,
        }


def _review_counts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line, decision, n in db.execute(
        "SELECT line, decision, COUNT(*) FROM reviews WHERE id IN "
        "(SELECT MAX(id) FROM reviews GROUP BY result_seq) GROUP BY line, decision"
    ):
        out.setdefault(line, {})[decision] = int(n)
    return out

"""The console's reading side: result queries on its own read-only SQLite connections (so a browser
never holds the journal's lock the lines write under) and image files found in the NG archive.

No route takes a file path: images are looked up by result seq and camera name inside the archive
folder, and every path is checked to lie inside it before it is opened.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from contract.result import InspectionResult
from edge_agent.archive import annotated_file, archived_image, draw_annotated

SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BadQuery(ValueError):
    """A filter the console cannot use; the message says which and why."""


@dataclass
class ResultFilter:
    line: str | None = None
    verdict: str | None = None
    class_name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None
    reviewed: str | None = None  # a decision, "any", "none" or "uncertain" (not reviewed, unsure model)
    limit: int = 48
    band: tuple[float, float] = (0.25, 0.6)  # "uncertain": a detection's confidence lies in this band

    def validate(self) -> ResultFilter:
        if self.line is not None and not SAFE_NAME.match(self.line):
            raise BadQuery(f"line {self.line!r}: only letters, digits, '_', '.', '-'")
        if self.verdict not in (None, "OK", "NG"):
            raise BadQuery(f"verdict {self.verdict!r}: OK or NG")
        if self.class_name is not None and len(self.class_name) > 64:
            raise BadQuery("class name: at most 64 characters")
        if self.reviewed not in (
            None,
            "any",
            "none",
            "uncertain",
            "confirmed_ng",
            "false_reject",
            "escape",
            "confirmed_ok",
        ):
            raise BadQuery(f"reviewed {self.reviewed!r}: any, none or a decision")
        if not 1 <= self.limit <= 500:
            raise BadQuery("limit: 1 to 500")
        if self.since and self.until and self.since > self.until:
            raise BadQuery("'from' is after 'to'")
        return self


class JournalReader:
    """Read-only access to the journal file, one connection per console thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._classes: dict[str | None, tuple[float, list[str]]] = {}

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            self._local.db = db
        return db

    def get(self, seq: int) -> InspectionResult | None:
        row = self._db().execute("SELECT body FROM results WHERE seq = ?", (seq,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def results(self, f: ResultFilter) -> list[InspectionResult]:
        """Newest first, at most `f.limit`; page on with `before_seq` = the last seq shown."""
        clauses, args = [], []
        for col, op, val in (
            ("line", "=", f.line),
            ("verdict", "=", f.verdict),
            ("ts", ">=", f.since.timestamp() if f.since else None),
            ("ts", "<=", f.until.timestamp() if f.until else None),
            ("seq", "<", f.before_seq),
        ):
            if val is not None:
                clauses.append(f"{col} {op} ?")
                args.append(val)
        if f.class_name:
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(results.body, '$.defects') d "
                "WHERE json_extract(d.value, '$.class') = ? "
                "AND json_extract(d.value, '$.counts_for_verdict'))"
            )
            args.append(f.class_name)
        if f.reviewed in ("none", "uncertain"):
            clauses.append("NOT EXISTS (SELECT 1 FROM reviews v WHERE v.result_seq = results.seq)")
        if f.reviewed == "uncertain":  # the review queue: parts the model was unsure about
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(results.body, '$.defects') d "
                "WHERE json_extract(d.value, '$.confidence') BETWEEN ? AND ?)"
            )
            args.extend(f.band)
        elif f.reviewed == "any":
            clauses.append("EXISTS (SELECT 1 FROM reviews v WHERE v.result_seq = results.seq)")
        elif f.reviewed and f.reviewed not in ("none", "uncertain"):
            clauses.append(
                "(SELECT decision FROM reviews v WHERE v.result_seq = results.seq "
                "ORDER BY id DESC LIMIT 1) = ?"
            )
            args.append(f.reviewed)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = (
            self._db()
            .execute(f"SELECT body FROM results {where} ORDER BY seq DESC LIMIT ?", [*args, f.limit])
            .fetchall()
        )
        return [InspectionResult.from_json(r[0]) for r in rows]

    def decisions(self, seqs: list[int]) -> dict[int, str]:
        """Current review decision of each of `seqs` that has one."""
        if not seqs:
            return {}
        marks = ",".join("?" * len(seqs))
        rows = self._db().execute(
            f"SELECT result_seq, decision FROM reviews WHERE id IN (SELECT MAX(id) FROM reviews "
            f"WHERE result_seq IN ({marks}) GROUP BY result_seq)",
            seqs,
        )
        return {int(s): d for s, d in rows}

    def recent_for_recipe(self, line: str, recipe: str, limit: int) -> list[InspectionResult]:
        rows = (
            self._db()
            .execute(
                "SELECT body FROM results WHERE line = ? ORDER BY seq DESC LIMIT ?",
                (line, limit * 4),
            )
            .fetchall()
        )
        out = [r for r in (InspectionResult.from_json(b[0]) for b in rows) if r.recipe == recipe]
        return out[:limit]

    def classes_seen(self, line: str | None) -> list[str]:
        """Defect classes of the newest results (the gallery's class filter); cached for a minute."""
        cached = self._classes.get(line)
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1]
        where, args = ("WHERE line = ?", [line]) if line else ("", [])
        rows = self._db().execute(
            "SELECT DISTINCT json_extract(d.value, '$.class') FROM "
            f"(SELECT body FROM results {where} ORDER BY seq DESC LIMIT 500) r, "
            "json_each(r.body, '$.defects') d",
            args,
        )
        out = sorted(str(r[0]) for r in rows if r[0])
        self._classes[line] = (time.monotonic(), out)
        return out


def reviewed_result(result: InspectionResult, review: dict) -> InspectionResult:
    """`result` as its review says it is: the reviewer's boxes as its defects, the decision as its reason."""
    from contract.result import Defect
    from edge_agent.reviews import DECISIONS

    defects = [
        Defect(
            camera=b["camera"],
            class_name=b["class"],
            class_id=int(b["class_id"]),
            confidence=1.0,
            xyxy=b["xyxy"],
            area_px=(b["xyxy"][2] - b["xyxy"][0]) * (b["xyxy"][3] - b["xyxy"][1]),
        )
        for b in review.get("boxes") or []
    ]
    reason = "reviewed: " + DECISIONS.get(review["decision"], review["decision"])
    if review.get("not_localised"):
        reason += ", not localised"
    return result.model_copy(update={"defects": defects, "reasons": [reason]})


class ArchiveFiles:
    """Find the archived images of a result; never opens anything outside the archive folder."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root).resolve() if root else None
        self._thumbs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def image(self, result: InspectionResult, camera: str, annotated: bool) -> Path | None:
        if self.root is None or not SAFE_NAME.match(camera):
            return None
        return archived_image(self.root, result, camera, annotated)

    def anomaly_map(self, result: InspectionResult, camera: str) -> Path | None:
        """The anomaly map the archive kept beside the result's image of `camera` (anomaly lines)."""
        if self.root is None or not SAFE_NAME.match(camera):
            return None
        return archived_image(self.root, result, camera, anomaly_map=True)

    def heat(self, result: InspectionResult, camera: str) -> bytes | None:
        """The kept anomaly map of `camera` as a translucent heat PNG (`vision.draw.heat_rgba`)."""
        import cv2

        from vision.draw import decode_anomaly_map, heat_rgba

        path = self.anomaly_map(result, camera)
        score = next((a for a in result.anomaly if a.camera == camera), None)
        encoded = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path is not None else None
        if encoded is None or score is None:
            return None
        threshold = score.pixel_threshold
        ok, buf = cv2.imencode(".png", heat_rgba(decode_anomaly_map(encoded, threshold), threshold))
        return buf.tobytes() if ok else None

    def has_images(self, result: InspectionResult) -> bool:
        return any(self.image(result, f.camera, False) for f in result.frames)

    def annotated(self, result: InspectionResult, camera: str) -> tuple[bytes, str] | None:
        """The annotated picture and its file name (see `edge_agent.archive.annotated_file`)."""
        if self.root is None or not SAFE_NAME.match(camera):
            return None
        return annotated_file(self.root, result, camera)

    def thumbnail(
        self, result: InspectionResult, camera: str, width: int = 320, review: dict | None = None
    ) -> bytes | None:
        """A small JPEG of the annotated picture (of the raw one if that cannot be drawn), cached. With
        the result's current `review`, its boxes are drawn (not the model's) and its decision named."""
        import cv2
        import numpy as np

        written = self.image(result, camera, True)
        raw = self.image(result, camera, False)
        if raw is None and written is None:
            return None
        if review is not None and raw is not None:
            result, written = reviewed_result(result, review), None  # the written copy has the model's boxes
        key = (str(raw or written), width, review["id"] if review else None)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        # the written copy decoded, or the boxes drawn on the raw pixels: no JPEG round trip in between
        image = draw_annotated(raw, result, camera) if written is None and raw is not None else None
        if image is None:
            data = np.fromfile(str(written or raw), dtype=np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            return None
        h, w = image.shape[:2]
        if w > width:
            image = cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        out = buf.tobytes()
        with self._lock:
            self._thumbs[key] = out
            while len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return out

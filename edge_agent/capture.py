"""Capture of what the model is unsure about, for labelling: its own archive, folder and quota.

A part is captured when its best detection confidence (over all cameras) lies in the configured band
(`capture.band`, e.g. 0.25-0.6: found, but not sure), on a line with an anomaly model when its image
score is near the threshold (`capture.anomaly_band`, score / threshold, e.g. 0.8-1.25), or when a
reviewer marked it (`submit_reviewed`, from the console with the part's archived images). The writer is
the NG archive's (`edge_agent.archive.Archive`: its own thread, bounded queue, quota, free-disk floor),
so capturing never slows inspection.

Beside each part's raw images (no annotated copies) a sidecar says why it was kept and what the model saw;
`edge-inspect dataset from-archive` reads these into a labelling batch with the model's boxes as
pre-annotations (it parses the files, it does not import this package). Layout:

    <capture>/<line>/<YYYY-MM-DD>/<seq>_<part_id>_<verdict>_<camera>.<png|jpg>
    <capture>/<line>/<YYYY-MM-DD>/<seq>_<part_id>_<verdict>.capture.json

Sidecar: {"capture_version": 1, "classes": the model's class names, "reason": "uncertain"|"review",
"best_confidence", "seq", "part_id",
"line", "site", "recipe", "verdict", "timestamp", "model": {"name", "version"}, "note",
"cameras": {camera: {"file", "width", "height", "detections": [{"class", "confidence", "xyxy"}]}}}
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from contract.archive_layout import camera_file, part_location
from contract.result import InspectionResult
from edge_agent.archive import Archive
from edge_agent.config import ArchiveConfig, CaptureConfig
from edge_agent.outcome import Outcome
from edge_agent.sources.base import Frame
from vision.detections import Detections

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".capture.json"
CAPTURE_VERSION = 1


def best_confidence(detections: dict[str, Detections]) -> float:
    """The highest confidence of any detection of the part (0 when the model found nothing); anomaly
    regions are left out (their confidence is a score in the anomaly model's units, not a probability)."""
    best = 0.0
    for d in detections.values():
        found = d.confidence[[n != "anomaly" for n in d.class_names]] if len(d) else d.confidence
        if len(found):
            best = max(best, float(found.max()))
    return best


def anomaly_ratio(outcome: Outcome) -> float | None:
    """The part's highest image score over its image threshold (1 = on the threshold); None without an
    anomaly model."""
    ratios = [a.score / a.image_threshold for a in outcome.anomaly.values() if a.image_threshold > 0]
    return max(ratios, default=None)


def _archive_config(config: CaptureConfig) -> ArchiveConfig:
    return ArchiveConfig(
        enabled=config.enabled,
        path=config.path,
        ok_sample_rate=1.0,  # the selection is ours (band / review); the archive writes what it is given
        annotated=False,  # labellers need the raw pixels; boxes travel in the sidecar
        format=config.format,
        jpeg_quality=config.jpeg_quality,
        quota_mb=config.quota_mb,
        min_free_mb=config.min_free_mb,
        queue=config.queue,
    )


class CaptureArchive(Archive):
    """The NG archive's writer with another selection and a sidecar per part."""

    def __init__(self, config: CaptureConfig, seed: int | None = None) -> None:
        super().__init__(_archive_config(config), seed)
        self.capture = config
        self.counts = {"uncertain": 0, "review": 0, "skipped": 0}
        self._why: dict[str, tuple[str, str]] = {}  # result_id -> (reason, note) until written
        self._deleted_seen = 0

    # -- selection (journal thread; never blocks) ----------------------------------------------------
    def wants(self, verdict: str) -> bool:
        return self.config.enabled  # every part handed to the writer was chosen by `reason`

    def reason(self, outcome: Outcome) -> str | None:
        """ "uncertain" when the part's best confidence is in the band, or its anomaly score near the
        threshold (`anomaly_band`), and it is sampled; else None."""
        low, high = self.capture.band
        ratio = anomaly_ratio(outcome)
        near = ratio is not None and self.capture.anomaly_band[0] <= ratio < self.capture.anomaly_band[1]
        if not near and not low <= best_confidence(outcome.detections) < high:
            return None
        if self.capture.sample_rate < 1 and self._rng.random() >= self.capture.sample_rate:
            return None
        return "uncertain"

    def submit(self, outcome: Outcome, reason: str | None = None, note: str = "") -> bool:
        """Queue the part if it is to be captured (`reason` given, or its confidence is in the band)."""
        reason = reason or self.reason(outcome)
        if reason is None:
            return False
        self._why[outcome.result.result_id] = (reason, note)
        if not super().submit(outcome):
            self._why.pop(outcome.result.result_id, None)
            self.counts["skipped"] += 1
            return False
        return True

    def submit_reviewed(
        self, result: InspectionResult, images: dict[str, np.ndarray], note: str = ""
    ) -> bool:
        """Capture a part a reviewer marked (false reject, escape, unsure), from its journaled result and
        its images (e.g. read back from the NG archive): the result's defects become the pre-annotations."""
        if not self.capture.reviewed:
            return False
        names: dict[int, str] = {d.class_id: d.class_name for d in result.defects}
        detections = {}
        for cam in images:
            own = [d for d in result.defects if d.camera == cam]
            detections[cam] = Detections(
                xyxy=np.array([d.xyxy for d in own], dtype=np.float32).reshape(-1, 4),
                confidence=np.array([d.confidence for d in own], dtype=np.float32),
                class_id=np.array([d.class_id for d in own], dtype=np.int64),
                names=names,
            )
        frames = {
            cam: Frame(image=img, camera=cam, source_ref="review", index=0) for cam, img in images.items()
        }
        counted = {cam: np.ones(len(d), dtype=bool) for cam, d in detections.items()}
        return self.submit(Outcome(result, frames, detections, counted), reason="review", note=note)

    def submit_reviewed_from_archive(
        self, result: InspectionResult, archive_root: Path, note: str = ""
    ) -> bool:
        """`submit_reviewed` with the part's raw images read back from the NG archive (the console's review
        hook: `agent.capture.submit_reviewed_from_archive(result, site.archive.path, note)`). False when
        the archive no longer has them."""
        import cv2

        from edge_agent.archive import archived_image

        images = {}
        for frame in result.frames:
            path = archived_image(archive_root, result, frame.camera)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
            if image is not None:
                images[frame.camera] = image
        return bool(images) and self.submit_reviewed(result, images, note)

    # -- writing (archive thread) --------------------------------------------------------------------
    def _write(self, outcome: Outcome) -> None:
        written_before = self.stats.written
        super()._write(outcome)
        reason, note = self._why.pop(outcome.result.result_id, ("uncertain", ""))
        if self.stats.written == written_before:  # disk full / below the free-space floor: no sidecar
            return
        path = self._write_sidecar(outcome, reason, note)
        self.counts[reason] = self.counts.get(reason, 0) + 1
        log.debug("capture: %s (%s)", path, reason)
        if self.stats.deleted_for_quota != self._deleted_seen:
            self._deleted_seen = self.stats.deleted_for_quota
            self._sweep_orphans()

    def _part_stem(self, result: InspectionResult) -> tuple[Path, str]:
        day = result.timestamp.strftime("%Y-%m-%d")
        return part_location(self.root, result.line, day, result.seq, result.part_id, result.verdict)

    def _write_sidecar(self, outcome: Outcome, reason: str, note: str) -> Path:
        result = outcome.result
        folder, stem = self._part_stem(result)
        ext = "." + self.config.format
        cameras: dict[str, Any] = {}
        for cam, frame in outcome.frames.items():
            det = outcome.detections.get(cam)
            h, w = frame.shape
            cameras[cam] = {
                "file": camera_file(stem, cam, ext),
                "width": int(w),
                "height": int(h),
                "detections": det.to_records() if det is not None else [],
            }
        names: dict[int, str] = {}
        for det in outcome.detections.values():
            names.update(det.names or {})
        sidecar = {
            "capture_version": CAPTURE_VERSION,
            "classes": [names[k] for k in sorted(names)],
            "reason": reason,
            "note": note,
            "best_confidence": round(best_confidence(outcome.detections), 4),
            "seq": result.seq,
            "part_id": result.part_id,
            "line": result.line,
            "site": result.site,
            "recipe": result.recipe,
            "verdict": result.verdict,
            "timestamp": result.timestamp.isoformat(),
            "model": {"name": result.model.name, "version": result.model.version},
            "cameras": cameras,
        }
        path = folder / f"{stem}{SIDECAR_SUFFIX}"
        path.write_text(json.dumps(sidecar, indent=1) + "\n")
        return path

    def _sweep_orphans(self) -> None:
        """Delete sidecars whose images the quota removed (oldest days first; stop at a day still used)."""
        for day in sorted(p for line in self.root.iterdir() if line.is_dir() for p in line.iterdir()):
            kept_any = False
            for sidecar in sorted(day.glob(f"*{SIDECAR_SUFFIX}")):
                files = []
                with contextlib.suppress(OSError, ValueError):
                    files = [c["file"] for c in json.loads(sidecar.read_text())["cameras"].values()]
                if any((day / f).exists() for f in files):
                    kept_any = True
                else:
                    sidecar.unlink(missing_ok=True)
            if kept_any:
                return

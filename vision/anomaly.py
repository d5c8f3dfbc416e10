"""Anomaly models: trained on good parts only, they score how much an image (and each pixel) differs.

The ONNX layout is anomalib's export, so our models and anomalib's load the same way (docs/anomaly.md):
input `input`, float32 NCHW RGB in [0, 1] at a fixed H×W (the image is resized to it, no letterbox; any
normalisation is inside the graph); outputs `pred_score` (N,) or (N, 1), the image score, and
`anomaly_map` (N, 1, H, W) or (N, H, W), the per-pixel score. `pred_label` / `pred_mask` are ignored.

`AnomalyModel.predict` returns a `Prediction` like every model kind: its `detections` are the *regions*,
connected areas of the map above the pixel threshold (found at the model's resolution; box in image
pixels, confidence = the region's peak score, class "anomaly", `data["area_px"]` its area in image
pixels), so recipes judge them with ROI, size and count rules as detections; `prediction.anomaly` holds
the image score, the map (`.map` at the image's size) and the thresholds. Load it through
`vision.load_model`, which picks the kind from the file.

Example (a region above the pixel threshold):
    >>> import numpy as np
    >>> amap = np.zeros((40, 60), np.float32)
    >>> amap[10:14, 20:30] = 0.8
    >>> amap[12, 25] = 0.95
    >>> regions = anomaly_regions(amap, pixel_threshold=0.5)
    >>> regions.xyxy.tolist(), regions.confidence.tolist(), regions.data["area_px"].tolist()
    ([[20.0, 10.0, 30.0, 14.0]], [0.949999988079071], [40.0])
    >>> regions.class_names
    ['anomaly']
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from vision.detections import Detections
from vision.digest import file_sha256
from vision.errors import ModelLoadError
from vision.images import to_bgr8
from vision.model import Prediction, _literal, _parse_imgsz, set_stage_timings
from vision.preprocess import anomaly_input_tensor
from vision.providers import Optimization
from vision.session import open_session, runtime_of

log = logging.getLogger(__name__)

ANOMALY_CLASS = "anomaly"
SCORE_OUTPUT = "pred_score"
MAP_OUTPUT = "anomaly_map"
LABEL_OUTPUT = "pred_label"  # anomalib: present when its post-processor (normalisation) is in the graph
#: metadata key our own exports carry; anomalib exports are recognised by their output names
KIND_KEY = "edge_inspect_kind"
#: `load_model` options that only an anomaly model has
ANOMALY_ONLY_OPTIONS = ("image_threshold", "pixel_threshold", "min_region_area", "max_regions")
#: anomalib's post-processor maps both thresholds to 0.5 in the scores it exports (`1 - sensitivity`,
#: sensitivity 0.5 by default; its labels are `score > 0.5`, ours `score >= threshold`)
ANOMALIB_NORMALISED_THRESHOLD = 0.5

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def is_anomaly_session(session: ort.InferenceSession) -> bool:
    """Whether an opened ONNX model is an anomaly model: our metadata says so, or its outputs are
    anomalib's (`pred_score` and `anomaly_map`)."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(KIND_KEY) == "anomaly":
        return True
    names = {o.name for o in session.get_outputs()}
    return {SCORE_OUTPUT, MAP_OUTPUT} <= names


@dataclass(frozen=True)
class Anomaly:
    """One image's anomaly output: the image score, the map, and the thresholds (all in the model's score
    units). `raw_map` is the model's map at its input resolution; `map` is it at the image's size
    (`shape`), resized (bilinear) the first time somebody asks: a line that only judges never pays for
    it, the archive and the console do for the parts they keep or show.

    >>> a = Anomaly(0.83, np.zeros((8, 8), np.float32), 0.61, pixel_threshold=0.5, shape=(16, 32))
    >>> a.anomalous, a.reason(), a.map.shape
    (True, 'anomaly score 0.83 ≥ 0.61', (16, 32))
    """

    score: float
    raw_map: np.ndarray  # float32 (h, w), the model's input resolution
    image_threshold: float
    pixel_threshold: float
    shape: tuple[int, int] | None = None  # (H, W) of the image; None: the map's own

    @cached_property
    def map(self) -> np.ndarray:
        """float32 (H, W): the map at the image's size."""
        return self.map_at(self.shape or self.raw_map.shape)

    def map_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The map resized (bilinear) to `shape` (h, w), e.g. a live view's size."""
        h, w = shape
        if self.raw_map.shape == (h, w):
            return self.raw_map
        return cv2.resize(self.raw_map, (w, h), interpolation=cv2.INTER_LINEAR)

    @property
    def anomalous(self) -> bool:
        return self.score >= self.image_threshold

    def reason(self) -> str:
        """The verdict reason the image score gives, e.g. 'anomaly score 0.83 ≥ 0.61' (or '<')."""
        sign = "≥" if self.anomalous else "<"
        return f"anomaly score {_fmt(self.score)} {sign} {_fmt(self.image_threshold)}"


def _fmt(value: float) -> str:
    """Scores in the model's units: 2 decimals for ordinary scales, 3 significant digits otherwise."""
    if value != 0 and (abs(value) < 0.1 or abs(value) >= 1000):
        return f"{value:.3g}"
    return f"{value:.2f}"


def anomaly_regions(
    amap: np.ndarray,
    pixel_threshold: float,
    *,
    min_area: float = 1,
    max_regions: int = 100,
    connectivity: int = 8,
) -> Detections:
    """Connected areas of `amap` (H, W) at or above `pixel_threshold`, as `Detections`: xyxy (in the map's
    pixels, right/bottom edge exclusive), confidence = the region's peak score, class 0 "anomaly",
    `data["area_px"]` = its pixel count. Regions smaller than `min_area` pixels are dropped; at most
    `max_regions`, highest peak first.

    >>> m = np.zeros((20, 20), np.float32); m[2:4, 2:4] = 1.0; m[10:18, 10:12] = 0.7
    >>> r = anomaly_regions(m, 0.5)
    >>> r.confidence.tolist(), r.data["area_px"].tolist()
    ([1.0, 0.699999988079071], [4.0, 16.0])
    >>> len(anomaly_regions(m, 0.5, min_area=5))
    1
    """
    names = {0: ANOMALY_CLASS}
    above = np.ascontiguousarray(amap >= pixel_threshold, dtype=np.uint8)
    if not above.any():
        return Detections.empty(names, data={"area_px": np.zeros((0,), np.float32)})
    count, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=connectivity)
    peaks = np.full(count, -np.inf, np.float32)
    inside = labels > 0
    np.maximum.at(peaks, labels[inside], amap[inside].astype(np.float32))
    ids = np.arange(1, count)
    ids = ids[stats[ids, cv2.CC_STAT_AREA] >= min_area]
    ids = ids[np.argsort(-peaks[ids], kind="stable")][:max_regions]
    x, y = stats[ids, cv2.CC_STAT_LEFT], stats[ids, cv2.CC_STAT_TOP]
    w, h = stats[ids, cv2.CC_STAT_WIDTH], stats[ids, cv2.CC_STAT_HEIGHT]
    return Detections(
        xyxy=np.stack([x, y, x + w, y + h], axis=1).astype(np.float32).reshape(-1, 4),
        confidence=peaks[ids].astype(np.float32),
        class_id=np.zeros(len(ids), np.int64),
        names=names,
        data={"area_px": stats[ids, cv2.CC_STAT_AREA].astype(np.float32)},
    )


def _float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def read_card(path: Path) -> dict[str, Any] | None:
    """The model card `model.json` beside an anomaly model's file, if there is one for an anomaly model."""
    card_path = path.parent / "model.json"
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{card_path}: unreadable model card ({exc})") from exc
    return card if isinstance(card, dict) and card.get("task") == "anomaly" else None


class AnomalyModel:
    """An anomaly model loaded once; `predict` many times (thread-safe as ORT sessions are).

    The same interface as `vision.Model` where it makes sense (`path`, `task` = "anomaly", `names`,
    `imgsz`, `version`, `sha256`, `providers`, `dynamic_batch`, `warmup`, `predict`, `predict_batch`,
    `info`), so the agent runs every kind the same way.

    Thresholds, first found wins: the arguments; the model card `model.json` beside the file
    (`"thresholds": {"image": x, "pixel": y}`); the ONNX metadata `image_threshold` / `pixel_threshold`;
    for an anomalib export with its post-processor in the graph (it has a `pred_label` output) and none of
    those, 0.5 (the post-processor normalises scores so that its thresholds are 0.5).

    Args:
        path: the .onnx file. providers, threads, optimization, spinning, gate: as `vision.Model`.
        imgsz: only for a file whose input size is neither fixed nor in its metadata.
        image_threshold, pixel_threshold: override the model's own.
        min_region_area: regions of fewer pixels (at the image's size) are dropped.
        max_regions: the most regions kept per image (highest peaks).
        session: an ORT session already opened on `path` (by `load_model`).
    """

    task = "anomaly"
    names: dict[int, str] = {0: ANOMALY_CLASS}  # noqa: RUF012 (read-only by convention, as Model.names)

    def __init__(
        self,
        path: str | Path,
        *,
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        optimization: Optimization = "all",
        spinning: bool = True,
        gate: AbstractContextManager | None = None,
        imgsz: int | tuple[int, int] | None = None,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        min_region_area: int = 1,
        max_regions: int = 100,
        session: ort.InferenceSession | None = None,
    ) -> None:
        self.path = Path(path)
        self.gate: AbstractContextManager = gate if gate is not None else nullcontext()
        self.session = session or open_session(self.path, providers, threads, optimization, spinning)
        self.runtime = runtime_of(self.session)  # what `info()` reports, as `Model` does
        self.providers: list[str] = self.session.get_providers()
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = read_card(self.path)
        self.min_region_area, self.max_regions = int(min_region_area), int(max_regions)

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type not in _ORT_DTYPES:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ModelLoadError(f"{self.path}: an anomaly model needs one float NCHW image input: {found}")
        inp = inputs[0]
        self.input_name, self.input_dtype = inp.name, _ORT_DTYPES[inp.type]
        self.dynamic_batch = not isinstance(inp.shape[0], int)
        self.imgsz = self._resolve_imgsz(inp.shape, imgsz)
        outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in (SCORE_OUTPUT, MAP_OUTPUT) if n not in outputs]
        if missing:
            raise ModelLoadError(
                f"{self.path}: an anomaly model needs outputs {SCORE_OUTPUT!r} and {MAP_OUTPUT!r}; "
                f"it has {outputs}"
            )
        self.output_names = [SCORE_OUTPUT, MAP_OUTPUT]
        self.anomalib = self.metadata.get(KIND_KEY) != "anomaly"
        # anomalib exports `pred_label` only with its post-processor in the graph, which normalises scores
        self.normalised = self.anomalib and LABEL_OUTPUT in outputs
        thresholds = self._resolve_thresholds(image_threshold, pixel_threshold)
        self.image_threshold, self.pixel_threshold = thresholds
        self.sha256 = file_sha256(self.path)
        card_version = (self.card or {}).get("version")
        self.version = str(
            card_version or self.metadata.get("version") or self.metadata.get("model_version")
            or f"sha256:{self.sha256[:12]}"
        )

    # -- metadata --------------------------------------------------------------------------------
    def _resolve_imgsz(self, shape: list, given: int | tuple[int, int] | None) -> tuple[int, int]:
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            fixed = (shape[2], shape[3])
            if given is not None and _parse_imgsz(given) != fixed:
                raise ModelLoadError(f"{self.path}: imgsz {given} is not its fixed input size {list(fixed)}")
            return fixed
        size = given if given is not None else _literal(self.metadata.get("imgsz"))
        if size is None:
            raise ModelLoadError(f"{self.path}: a dynamic input size and no `imgsz` metadata; pass imgsz=")
        return _parse_imgsz(size)

    def _resolve_thresholds(self, image: float | None, pixel: float | None) -> tuple[float, float]:
        card = (self.card or {}).get("thresholds") or {}
        sources: list[tuple[str, Mapping[str, Any]]] = [
            ("the arguments", {"image": image, "pixel": pixel}),
            (f"{self.path.parent / 'model.json'}", card),
            ("its metadata", {"image": self.metadata.get("image_threshold"),
                              "pixel": self.metadata.get("pixel_threshold")}),
        ]
        found: dict[str, float] = {}
        for key in ("image", "pixel"):
            for where, values in sources:
                value = values.get(key)
                if value is None:
                    continue
                number = _float(value)
                if number is None:
                    raise ModelLoadError(f"{self.path}: {key} threshold {value!r} ({where}) is not a number")
                found[key] = number
                break
        if self.normalised:  # anomalib's post-processor puts both thresholds at 0.5 in the exported scores
            found.setdefault("image", ANOMALIB_NORMALISED_THRESHOLD)
            found.setdefault("pixel", ANOMALIB_NORMALISED_THRESHOLD)
        if "image" not in found:
            raise ModelLoadError(
                f"{self.path}: no image threshold (model card `thresholds.image`, metadata "
                "`image_threshold`; an anomalib export without its post-processor: give `image_threshold`)"
            )
        found.setdefault("pixel", found["image"])
        return found["image"], found["pixel"]

    def info(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "task": self.task,
            "names": self.names,
            "imgsz": list(self.imgsz),
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.pixel_threshold,
            "format": "anomalib" if self.anomalib else "edge-inspect",
            "dynamic_batch": self.dynamic_batch,
            "providers": self.providers,
            "runtime": str(self.runtime),
            "version": self.version,
            "sha256": self.sha256,
        }

    # -- inference --------------------------------------------------------------------------------
    def warmup(self, runs: int = 2) -> None:
        blank = np.full((*self.imgsz, 3), 114, np.uint8)
        for _ in range(runs):
            self.predict(blank)

    def run(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ONNX Runtime call on an NCHW tensor: (scores (N,), maps (N, H, W)) as float32."""
        with self.gate:
            feed = {self.input_name: tensor.astype(self.input_dtype, copy=False)}
            score, amap = self.session.run(self.output_names, feed)
        n = tensor.shape[0]
        score = np.asarray(score, np.float32).reshape(n, -1)[:, 0]
        amap = np.asarray(amap, np.float32)
        if amap.ndim == 4:
            amap = amap[:, 0]
        return score, amap

    def predict(
        self,
        image: np.ndarray,
        conf: float | None = None,
        iou: float | None = None,
        tile: tuple[int, int] | None = None,
        tile_overlap: float = 0.2,
    ) -> Prediction:
        """Score one BGR image (grey, RGBA, 16-bit are converted). `conf`/`iou` are detection thresholds
        and are ignored; tiling is not supported (the model sees the whole image at its input size)."""
        if tile is not None and tuple(tile) != (1, 1):
            raise ValueError("tiling applies to detection and segmentation models, not anomaly models")
        return self.predict_batch([image])[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], conf: float | None = None, iou: float | None = None
    ) -> list[Prediction]:
        """Several frames; one ORT call when the model has a dynamic batch axis."""
        t0 = time.perf_counter()
        frames = [to_bgr8(im) for im in images]
        tensor = anomaly_input_tensor(frames, self.imgsz)
        t1 = time.perf_counter()
        if self.dynamic_batch or len(frames) == 1:
            scores, maps = self.run(tensor)
        else:
            parts = [self.run(tensor[i : i + 1]) for i in range(len(frames))]
            scores = np.concatenate([p[0] for p in parts])
            maps = np.concatenate([p[1] for p in parts])
        t2 = time.perf_counter()
        results = [
            self._decode(float(s), m, f.shape[:2]) for s, m, f in zip(scores, maps, frames, strict=True)
        ]
        set_stage_timings(results, (t0, t1, t2, time.perf_counter()))
        return results

    def _decode(self, score: float, amap: np.ndarray, shape: tuple[int, int]) -> Prediction:
        # regions are found at the model's resolution (the map has no finer detail) and scaled to the
        # image: a 1280x1024 frame costs no full-size resize, threshold and labelling per part
        (h, w), (mh, mw) = shape, amap.shape
        sx, sy = w / mw, h / mh
        min_area = self.min_region_area / (sx * sy)  # the setting is in image pixels
        regions = anomaly_regions(amap, self.pixel_threshold, min_area=min_area, max_regions=self.max_regions)
        if (sx, sy) != (1.0, 1.0):
            regions = regions.scaled(sx, sy)
        amap = np.ascontiguousarray(amap)
        anomaly = Anomaly(score, amap, self.image_threshold, self.pixel_threshold, (h, w))
        return Prediction(regions, (h, w), anomaly=anomaly)


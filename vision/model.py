"""`Model`: an ONNX model exported by Ultralytics (or compatible), run with ONNX Runtime.

Example (with any detection model exported by Ultralytics):
    >>> from vision import Model, read_image                         # doctest: +SKIP
    >>> model = Model("models/demo/model.onnx")                       # doctest: +SKIP
    >>> pred = model.predict(read_image("images/sample_000.png"))     # doctest: +SKIP
    >>> pred.detections.xyxy, pred.detections.class_names             # doctest: +SKIP
"""

from __future__ import annotations

import ast
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from vision.detections import Detections
from vision.digest import file_sha256
from vision.errors import ModelLoadError
from vision.images import to_bgr8
from vision.postprocess import MAX_DET, decode_end2end_head, decode_nms_head, masks_to_original, nms
from vision.preprocess import Letterbox, classify_crop, letterbox_tensor, to_input_tensor
from vision.providers import Optimization
from vision.session import open_session, runtime_of
from vision.tiling import tile_windows

if TYPE_CHECKING:
    from vision.anomaly import Anomaly
    from vision.openvino_session import OpenVINOSession

log = logging.getLogger(__name__)

TASKS = ("detect", "segment", "classify")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class Prediction:
    """One image's result."""

    detections: Detections
    shape: tuple[int, int]  # (h, w) of the input image
    timing_ms: dict[str, float] = field(default_factory=dict)
    probs: np.ndarray | None = None  # classification only
    anomaly: Anomaly | None = None  # anomaly models: score, map, thresholds (`detections` are the regions)

    @property
    def top1(self) -> int | None:
        return None if self.probs is None else int(np.argmax(self.probs))


STAGES = ("preprocess", "inference", "postprocess")


def set_stage_timings(predictions: Sequence[Prediction], marks: Sequence[float]) -> None:
    """Give every prediction of one batch its stage times per frame (ms), from the `time.perf_counter()`
    marks taken before pre-processing, inference and post-processing and after them."""
    n = max(len(predictions), 1)
    timing = {stage: (end - start) * 1000 / n for stage, start, end in zip(STAGES, marks, marks[1:])}
    for p in predictions:
        p.timing_ms = dict(timing)


def _literal(value: object) -> object:
    """Metadata values are Python literals written as strings (Ultralytics' export); None if unreadable."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None


def _parse_names(value: str | Mapping | Sequence | None) -> dict[int, str] | None:
    value = _literal(value)  # type: ignore[assignment]
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {int(k): str(v) for k, v in value.items()}
    return {i: str(v) for i, v in enumerate(value)}


def _parse_imgsz(value: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    value = _literal(value)  # type: ignore[assignment]
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    seq = list(value)  # type: ignore[arg-type]
    return (int(seq[0]), int(seq[-1]))


class Model:
    """Load once, predict many times. Thread-safe for concurrent `predict` calls (ORT sessions are).

    Args:
        path: the .onnx file.
        providers: "auto" (best installed, logged), an alias ("cpu", "cuda", "tensorrt", "openvino")
            or a list of ORT provider names.
        names, imgsz, task: only needed when the file lacks Ultralytics metadata.
        threads: intra-op threads (default: physical cores). optimization: ORT graph optimisation level.
        spinning: let idle ORT threads busy-wait (fastest for one model alone; off when models share cores).
        gate: a context manager entered around every ONNX Runtime call, e.g. a `threading.Semaphore`
            shared by several models so that they take turns on the cores instead of fighting for them.
        conf, iou, max_det: default thresholds for `predict`.
        session: an ORT session already opened on `path` (by `load_model`), instead of opening another.
        backend, device, precision, cache_dir: the runtime (`open_session`): ONNX Runtime (default) or
            OpenVINO on CPU/GPU/NPU/AUTO at f32/bf16/int8; `runtime` says which one runs.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: str | Sequence[str] = "auto",
        names: Mapping[int, str] | Sequence[str] | None = None,
        imgsz: int | tuple[int, int] | None = None,
        task: str | None = None,
        threads: int | None = None,
        optimization: Optimization = "all",
        spinning: bool = True,
        gate: AbstractContextManager | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = MAX_DET,
        session: ort.InferenceSession | OpenVINOSession | None = None,
        backend: str = "onnxruntime",
        device: str = "CPU",
        precision: str = "f32",
        cache_dir: str | Path | bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.gate: AbstractContextManager = gate if gate is not None else nullcontext()
        self.session = session or open_session(
            self.path, providers, threads, optimization, spinning,
            backend=backend, device=device, precision=precision, cache_dir=cache_dir,
        )
        self.runtime = runtime_of(self.session)
        self.providers: list[str] = self.session.get_providers()

        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _ORT_DTYPES.get(inp.type)
        if self.input_dtype is None or len(inp.shape) != 4:
            raise ModelLoadError(
                f"{self.path}: expects input {inp.type} {inp.shape}; need a float NCHW image input"
            )
        self.dynamic_batch = not isinstance(inp.shape[0], int)
        self.dynamic_shape = not (isinstance(inp.shape[2], int) and isinstance(inp.shape[3], int))
        self.outputs = self.session.get_outputs()

        self.imgsz = self._resolve_imgsz(inp.shape, imgsz)
        self.task = self._resolve_task(task)
        self.end2end = self._resolve_end2end()
        self.stride = int(self.metadata.get("stride", 32))
        self.names = self._resolve_names(names)
        self.sha256 = file_sha256(self.path)
        self.version = (
            self.metadata.get("model_version") or self.metadata.get("date") or f"sha256:{self.sha256[:12]}"
        )

    # -- metadata --------------------------------------------------------------------------------
    def _resolve_imgsz(self, shape: list, given: int | tuple[int, int] | None) -> tuple[int, int]:
        if given is not None:
            return _parse_imgsz(given)  # type: ignore[return-value]
        meta = _parse_imgsz(self.metadata.get("imgsz"))
        if meta:
            return meta
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            return (shape[2], shape[3])
        raise ModelLoadError(f"{self.path}: no input size in its metadata and a dynamic input; pass imgsz=")

    def _resolve_task(self, given: str | None) -> str:
        task = given or self.metadata.get("task")
        if task is None:  # infer from outputs: prototypes mean segment, a 2-D output means classify
            if len(self.outputs) == 2:
                task = "segment"
            elif len(self.outputs[0].shape) == 2:
                task = "classify"
            else:
                task = "detect"
        if task not in TASKS:
            raise ModelLoadError(
                f"{self.path}: task {task!r} is not supported (supported: {', '.join(TASKS)})"
            )
        rank = len(self.outputs[0].shape)
        if (task == "classify") != (rank == 2) or (task == "segment" and len(self.outputs) < 2):
            # a wrong `task:` would otherwise decode garbage (or fail) on every frame
            found = "classify" if rank == 2 else ("segment" if len(self.outputs) >= 2 else "detect")
            raise ModelLoadError(
                f"{self.path}: task {task!r} does not fit this model: its output "
                f"{self.outputs[0].shape} is a {found} head"
            )
        return task

    def _resolve_end2end(self) -> bool:
        if "end2end" in self.metadata:
            return self.metadata["end2end"].lower() == "true"
        shape = self.outputs[0].shape
        extra = 32 if self.task == "segment" else 0
        return len(shape) == 3 and shape[-1] == 6 + extra and shape[1] != 6 + extra

    def _resolve_names(self, given: Mapping[int, str] | Sequence[str] | None) -> dict[int, str]:
        names = _parse_names(given) or _parse_names(self.metadata.get("names"))
        if not names:
            raise ModelLoadError(
                f"{self.path}: no class names in its metadata (not an Ultralytics export?); pass names="
            )
        return names

    @property
    def nc(self) -> int:
        return len(self.names)

    def info(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "task": self.task,
            "names": self.names,
            "imgsz": list(self.imgsz),
            "end2end": self.end2end,
            "dynamic_batch": self.dynamic_batch,
            "providers": self.providers,
            "runtime": str(self.runtime),
            "version": self.version,
            "sha256": self.sha256,
        }

    # -- inference --------------------------------------------------------------------------------
    def warmup(self, runs: int = 2) -> None:
        """Run blank frames so the first real frame is not slowed by lazy initialisation."""
        blank = np.full((*self.imgsz, 3), 114, np.uint8)
        for _ in range(runs):
            self.predict(blank)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Raw ONNX Runtime call on an NCHW tensor (inside the model's gate)."""
        with self.gate:
            return self.session.run(None, {self.input_name: tensor})

    def predict(
        self,
        image: np.ndarray,
        conf: float | None = None,
        iou: float | None = None,
        tile: tuple[int, int] | None = None,
        tile_overlap: float = 0.2,
    ) -> Prediction:
        """Infer one BGR image (grey, RGBA, 16-bit are converted). `tile=(rows, cols)` for small defects."""
        if tile is not None and tile != (1, 1):
            return self.predict_tiled(image, tile, conf=conf, iou=iou, overlap=tile_overlap)
        return self.predict_batch([image], conf=conf, iou=iou)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], conf: float | None = None, iou: float | None = None
    ) -> list[Prediction]:
        """Infer several frames; one ORT call when the model has a dynamic batch axis."""
        conf = self.conf if conf is None else conf
        iou = self.iou if iou is None else iou
        t0 = time.perf_counter()
        frames = [to_bgr8(im) for im in images]
        boxes: list[Letterbox | None]
        if self.task == "classify":
            tensor = to_input_tensor([classify_crop(f, self.imgsz) for f in frames], self.input_dtype)
            boxes = [None] * len(frames)
        else:
            same = len({f.shape for f in frames}) == 1
            # As Ultralytics: minimal padding when the graph allows it. Not for end-to-end heads: their TopK
            # k is baked at export from the full input size, and a smaller input makes ORT fail.
            auto = self.dynamic_shape and same and not self.end2end
            tensor, lbs = letterbox_tensor(frames, self.imgsz, auto, self.stride, self.input_dtype)
            boxes = list(lbs)
        t1 = time.perf_counter()
        outputs: list[list[np.ndarray]] = []
        if self.dynamic_batch or len(frames) == 1:
            batch = self.run(tensor)
            outputs = [[o[i] for o in batch] for i in range(len(frames))]
        else:
            for i in range(len(frames)):
                outputs.append([o[0] for o in self.run(tensor[i : i + 1])])
        t2 = time.perf_counter()
        results = [
            self._decode(out, lb, f.shape[:2], conf, iou)
            for out, lb, f in zip(outputs, boxes, frames, strict=False)
        ]
        set_stage_timings(results, (t0, t1, t2, time.perf_counter()))
        return results

    def _decode(
        self, out: list[np.ndarray], lb: Letterbox | None, shape: tuple[int, int], conf: float, iou: float
    ) -> Prediction:
        if self.task == "classify":
            probs = out[0].astype(np.float32)
            return Prediction(Detections.empty(self.names), shape, probs=probs)
        assert lb is not None
        pred = out[0].astype(np.float32, copy=False)
        if self.end2end:
            xyxy, score, cls, extra = decode_end2end_head(pred, conf, self.max_det)
        else:
            xyxy, score, cls, extra = decode_nms_head(pred, self.nc, conf, iou, self.max_det)
        mask = None
        if self.task == "segment":
            unpadded = (round(shape[0] * lb.gain_y), round(shape[1] * lb.gain_x))
            mask, keep = masks_to_original(
                extra, out[1], xyxy, lb.input_shape, (lb.pad_x, lb.pad_y), unpadded, shape
            )
            xyxy, score, cls, mask = xyxy[keep], score[keep], cls[keep], mask[keep]
        det = Detections(
            xyxy=lb.boxes_to_original(xyxy),
            confidence=score.astype(np.float32),
            class_id=cls,
            names=self.names,
            mask=mask,
        )
        return Prediction(det, shape)

    def predict_tiled(
        self,
        image: np.ndarray,
        tile: tuple[int, int],
        conf: float | None = None,
        iou: float | None = None,
        overlap: float = 0.2,
    ) -> Prediction:
        """Overlapping tiles (run as one batch where the model allows), merged with class-aware NMS."""
        if self.task == "classify":
            raise ValueError("tiling applies to detection and segmentation models, not classification")
        iou = self.iou if iou is None else iou
        frame = to_bgr8(image)
        h, w = frame.shape[:2]
        windows = tile_windows((h, w), tile, overlap)
        crops = [frame[y1:y2, x1:x2] for x1, y1, x2, y2 in windows]
        t0 = time.perf_counter()
        preds = self.predict_batch(crops, conf=conf, iou=iou)
        parts = []
        for (x1, y1, x2, y2), p in zip(windows, preds, strict=False):
            d = p.detections
            xyxy = d.xyxy + np.array([x1, y1, x1, y1], np.float32)
            mask = None
            if d.mask is not None:
                mask = np.zeros((len(d), h, w), bool)
                mask[:, y1:y2, x1:x2] = d.mask
            parts.append(Detections(xyxy, d.confidence, d.class_id, self.names, mask))
        merged = Detections.merge(parts) if parts else Detections.empty(self.names)
        keep = nms(merged.xyxy, merged.confidence, merged.class_id, iou)[: self.max_det]
        total = (time.perf_counter() - t0) * 1000
        timing = {k: sum(p.timing_ms[k] for p in preds) for k in ("preprocess", "inference", "postprocess")}
        timing["postprocess"] += max(0.0, total - sum(timing.values()))
        return Prediction(merged[keep], (h, w), timing)

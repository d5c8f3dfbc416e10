"""The OpenVINO backend: the same ONNX file, run by OpenVINO instead of ONNX Runtime (the `[openvino]` extra).

`OpenVINOSession` has the part of `onnxruntime.InferenceSession` that `vision.Model` and
`vision.anomaly.AnomalyModel` use (`get_inputs`, `get_outputs`, `get_modelmeta`, `get_providers`, `run`),
so every model kind keeps its pre-processing, decoding and `Detections`; `vision.session.open_session(...,
backend="openvino")` opens one. What OpenVINO adds:

- devices `CPU`, `GPU` (integrated graphics), `NPU`, `AUTO` (OpenVINO picks);
- precisions: `f32`; `bf16` (`INFERENCE_PRECISION_HINT`: the CPU computes in bfloat16 where it has
  AVX512-BF16/AMX, emulates it elsewhere); `int8`: an IR quantised by OpenVINO's own post-training
  quantisation (NNCF), calibrated on the line's images (`quantize_int8`), kept next to the ONNX file as
  `<stem>.ov-int8.xml/.bin` with `<stem>.ov-int8.json` saying what it was made from;
- a compiled-model cache on disk (`CACHE_DIR`: `<cache dir>/openvino`, default `default_cache_dir()`):
  a restart imports the compiled blob instead of compiling again (`loaded_from_cache` says so).

Telemetry: the OpenVINO runtime itself sends nothing; NNCF (used for INT8) and OpenVINO's model converter
report usage through `openvino_telemetry` unless told not to. `block_telemetry()` (run before either is
imported here) makes that module unimportable in this process and sets NNCF's own opt-out, so nothing is
sent and no client id is written under ~/intel.

Example:
    >>> session = OpenVINOSession("models/demo/model.onnx", precision="bf16")     # doctest: +SKIP
    >>> session.get_providers()                                                   # doctest: +SKIP
    ['OpenVINO:CPU:bf16']
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.errors import ModelLoadError
from vision.onnx_meta import read_onnx_metadata

log = logging.getLogger(__name__)

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = ("f32", "bf16", "int8")
INT8_SUFFIX = ".ov-int8"
_HINTS = {"f32": "f32", "bf16": "bf16"}
_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)"}


def block_telemetry() -> None:
    """No usage reports from this process: `openvino_telemetry` cannot be imported (NNCF and the model
    converter fall back to their no-op stubs on ImportError) and NNCF's own switch is set. Idempotent."""
    os.environ.setdefault("NNCF_CI", "1")  # nncf.telemetry: a stub instead of the reporter
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import now raises ImportError


def _openvino() -> Any:
    """`import openvino`, or a `ModelLoadError` that says how to install it."""
    block_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadError(
            "backend openvino needs the openvino package: pip install 'edge-inspect[openvino]'"
        ) from exc
    return openvino


def default_cache_dir() -> Path:
    """Where compiled models and tuning results are kept: $EDGE_INSPECT_CACHE, else
    $XDG_CACHE_HOME/edge-inspect, else ~/.cache/edge-inspect."""
    if os.environ.get("EDGE_INSPECT_CACHE"):
        return Path(os.environ["EDGE_INSPECT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-inspect"


def available_devices() -> list[str]:
    """OpenVINO devices on this machine (e.g. ['CPU', 'GPU']); [] without the openvino package."""
    try:
        ov = _openvino()
    except ModelLoadError:
        return []
    return list(ov.Core().available_devices)


def int8_ir_path(onnx_path: str | Path) -> Path:
    """`models/x/model.onnx` -> `models/x/model.ov-int8.xml` (its weights beside it, `.bin`)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + INT8_SUFFIX + ".xml")


@dataclass(frozen=True)
class Port:
    """An input or output as ONNX Runtime describes it (`NodeArg`): name, type string, shape with str
    for a dynamic axis."""

    name: str
    type: str
    shape: list[int | str]


@dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def _port(port: Any, index: int) -> Port:
    names = port.get_names()
    name = port.get_any_name() if names else f"port{index}"
    shape = [d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(port.get_partial_shape())]
    return Port(name, _TYPES.get(port.get_element_type().get_type_name(), "tensor(unknown)"), shape)


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO, with ONNX Runtime's session interface (the part we use).

    Thread-safe as an ORT session: each concurrent `run` takes its own infer request from a pool.

    Args:
        path: the .onnx file (metadata, inputs, outputs always come from it).
        device: CPU, GPU, NPU or AUTO. precision: f32, bf16 or int8 (the `<stem>.ov-int8.xml` beside it).
        threads: CPU inference threads per call (default: OpenVINO's choice, the physical cores).
        cache_dir: our cache folder; compiled models go in its `openvino/` (None: `default_cache_dir()`;
            False: no cache).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "CPU",
        precision: str = "f32",
        threads: int | None = None,
        cache_dir: str | Path | bool | None = None,
    ) -> None:
        ov = _openvino()
        self.path = Path(path)
        self.device, self.precision = device.upper(), precision
        base = self.device.split(":")[0].split(".")[0]
        if base not in DEVICES:
            known = ", ".join(DEVICES)
            raise ModelLoadError(f"{self.path}: OpenVINO device {device!r} unknown (one of {known})")
        if precision not in PRECISIONS:
            known = ", ".join(PRECISIONS)
            raise ModelLoadError(f"{self.path}: precision {precision!r} unknown (one of {known})")
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: no such model file")
        self._meta = ModelMeta(read_onnx_metadata(self.path))
        core = ov.Core()
        if base != "AUTO" and base not in {d.split(".")[0] for d in core.available_devices}:
            raise ModelLoadError(
                f"{self.path}: OpenVINO device {self.device} is not on this machine "
                f"(available: {', '.join(core.available_devices) or 'none'})"
            )
        self.cache_dir: Path | None = None
        if cache_dir is not False:
            given = cache_dir not in (None, True)
            root = Path(cache_dir) if given else default_cache_dir()  # type: ignore[arg-type]
            self.cache_dir = root / "openvino"
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        source = self.path
        if precision == "int8":
            source = int8_ir_path(self.path)
            check_int8_ir(self.path, source)
        config: dict[str, Any] = {}
        if base in ("CPU", "AUTO"):
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            config["NUM_STREAMS"] = 1
        if base != "AUTO":
            # f32 must be asked for: GPU and NPU default to f16, and a CPU with AVX512-BF16/AMX to bf16
            # (an int8 IR's float parts too: its head decodes boxes, bf16 would round them to 1-2 px)
            config["INFERENCE_PRECISION_HINT"] = _HINTS.get(precision, "f32")
        t0 = time.perf_counter()
        try:
            model = core.read_model(str(source))
            self._compiled = core.compile_model(model, self.device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError for unreadable graphs and device failures
            raise ModelLoadError(f"{source}: OpenVINO cannot compile it for {self.device} ({exc})") from exc
        self.compile_s = time.perf_counter() - t0
        try:
            self.loaded_from_cache = bool(self._compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # a plugin without the property
            self.loaded_from_cache = False
        self._inputs = [_port(p, i) for i, p in enumerate(model.inputs)]
        self._outputs = [_port(p, i) for i, p in enumerate(model.outputs)]
        self._output_index = {p.name: i for i, p in enumerate(self._outputs)}
        for i, port in enumerate(model.outputs):
            for name in port.get_names():
                self._output_index.setdefault(name, i)
        self._free: list[Any] = []
        self._lock = threading.Lock()
        log.info(
            "%s: OpenVINO %s %s (%s in %.2f s)", self.path.name, self.device, precision,
            "loaded from the cache" if self.loaded_from_cache else "compiled", self.compile_s,
        )

    # -- the onnxruntime.InferenceSession subset ---------------------------------------------------------
    def get_inputs(self) -> list[Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[Port]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return self._meta

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:{self.device}:{self.precision}"]

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (copies, float as the graph gives them) for `feed` {input name: array}."""
        with self._lock:
            request = self._free.pop() if self._free else self._compiled.create_infer_request()
        try:
            inputs = {name: np.ascontiguousarray(value) for name, value in feed.items()}
            result = request.infer(inputs)
            values = list(result.values())
            if output_names is None:
                return [np.asarray(v) for v in values]
            return [np.asarray(values[self._output_index[n]]) for n in output_names]
        finally:
            with self._lock:
                self._free.append(request)


# -- INT8 -------------------------------------------------------------------------------------------------
def _int8_record(ir: Path) -> Path:
    return ir.with_suffix(".json")


def check_int8_ir(onnx_path: Path, ir: Path) -> dict[str, Any]:
    """The INT8 IR's record, after checking it was made from this very ONNX file; `ModelLoadError` with
    the command that makes it otherwise."""
    from vision.digest import file_sha256

    make = f"edge-inspect model quantize-openvino {onnx_path} --calib IMAGES"
    record_path = _int8_record(ir)
    if not ir.is_file() or not ir.with_suffix(".bin").is_file() or not record_path.is_file():
        raise ModelLoadError(f"{onnx_path}: no OpenVINO INT8 model ({ir.name}); make it with: {make}")
    record = json.loads(record_path.read_text())
    if record.get("onnx_sha256") != file_sha256(onnx_path):
        raise ModelLoadError(f"{ir}: made from another version of {onnx_path.name}; make it again: {make}")
    return record


def head_ignored_scope(model: Any) -> list[str]:
    """Ops of an Ultralytics detection head kept in float by the INT8 quantisation: all of it but the box
    branch's convolutions (`cv2`). The decoding mixes coordinates and probabilities of very different
    ranges in one tensor (as `training.export.head_postprocess_nodes` for ONNX Runtime's INT8). Measured
    on the demo model (docs/openvino.md): with both branches' convolutions in INT8, OpenVINO's class scores
    were off by up to 0.85 (also when it ran ONNX Runtime's own QDQ file), with either branch in float by at
    most 0.26, as ONNX Runtime's INT8 (0.19); the class branch stays float because scores make verdicts."""
    ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
    blocks = {name.split("/")[1] for name, _ in ops if name.startswith("/model.")}
    numbered = [b for b in blocks if b.split(".")[-1].isdigit()]
    if not numbered:
        return []
    head = "/" + max(numbered, key=lambda b: int(b.split(".")[-1])) + "/"
    structural = ("Constant", "Parameter", "Result")
    return [
        name for name, kind in ops if name.startswith(head) and kind not in structural and "/cv2." not in name
    ]


def quantize_int8(
    onnx_path: str | Path,
    tensors: Iterable[np.ndarray],
    *,
    source: str = "",
    out: str | Path | None = None,
) -> Path:
    """OpenVINO post-training INT8 (NNCF, MIXED preset) of `onnx_path`, calibrated on `tensors` (model
    inputs, preprocessed as `vision` does at inference); writes `<stem>.ov-int8.xml/.bin` and the record
    `<stem>.ov-int8.json` (ONNX sha256, calibration) beside the ONNX file, or at `out`."""
    from vision.digest import file_sha256

    ov = _openvino()
    try:
        import nncf
    except ImportError as exc:
        raise ModelLoadError("OpenVINO INT8 needs nncf: pip install 'edge-inspect[openvino]'") from exc
    nncf.set_log_level(logging.WARNING)  # not a line per op it leaves in float
    onnx_path = Path(onnx_path)
    ir = Path(out) if out is not None else int8_ir_path(onnx_path)
    data = [np.ascontiguousarray(t, np.float32) for t in tensors]
    if not data:
        raise ModelLoadError(f"{onnx_path}: INT8 calibration needs images; none were given")
    model = ov.Core().read_model(str(onnx_path))
    ignored = head_ignored_scope(model)
    t0 = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(data),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(data),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
    )
    ir.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(ir), compress_to_fp16=False)
    record = {
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "ir_sha256": file_sha256(ir.with_suffix(".bin")),
        "calibration": {"source": source, "images": len(data)},
        "float_ops": len(ignored),  # the detection head's, kept in float (`head_ignored_scope`)
        "openvino": ov.__version__,
        "nncf": nncf.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _int8_record(ir).write_text(json.dumps(record, indent=2))
    return ir


def calibration_tensors(model: Any, images: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Model inputs (1, 3, H, W) float32 for `images` (BGR), preprocessed as `model` (a `vision.Model` or
    `AnomalyModel`) does at inference, at its full input size: what INT8 calibration must see."""
    from vision.images import to_bgr8
    from vision.preprocess import anomaly_input_tensor, classify_crop, letterbox_tensor, to_input_tensor

    out = []
    for image in images:
        frame = to_bgr8(image)
        if model.task == "anomaly":
            out.append(anomaly_input_tensor([frame], model.imgsz))
        elif model.task == "classify":
            out.append(to_input_tensor([classify_crop(frame, model.imgsz)]))
        else:
            out.append(letterbox_tensor([frame], model.imgsz, False, model.stride, np.float32)[0])
    return out

"""Export a training run to ONNX with a model card (`model.json`), optionally also INT8.

    OUT/model.onnx        FP32 ONNX (Ultralytics export: metadata with names, imgsz, task, stride)
    OUT/model.int8.onnx   INT8 (ONNX Runtime static quantization, calibrated on dataset images), if asked
    OUT/model.json        the model card (see `build_card`)
    OUT/eval/...          evaluation of each exported file through `vision` (JSON + PR curve + confusion)

Example (needs the `train` extra):
    >>> card = export_run("runs/train/exp", "models/my-line", imgsz=320,
    ...                   eval_data="data/my-line")                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import shutil
from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from training.errors import TrainingInputError

CARD_VERSION = 1
CALIB_IMAGES = 64


def find_weights(run: str | Path) -> Path:
    """The checkpoint to export: a .pt given directly, else the run's best.pt, else its last.pt."""
    run = Path(run).expanduser()
    if run.is_file() and run.suffix == ".pt":
        return run
    for name in ("best.pt", "last.pt"):
        if (run / "weights" / name).is_file():
            return run / "weights" / name
    raise TrainingInputError(f"{run}: no weights/best.pt or weights/last.pt (is this a training run folder?)")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in (
        "edge-inspect",
        "ultralytics",
        "torch",
        "onnx",
        "onnxslim",
        "onnxruntime",
        "numpy",
        "opencv-python",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _training_summary(run_dir: Path) -> dict[str, Any]:
    """Training arguments (args.yaml) and the last/best epoch rows from results.csv."""
    summary: dict[str, Any] = {"run": str(run_dir)}
    args_file = run_dir / "args.yaml"
    if args_file.is_file():
        args = yaml.safe_load(args_file.read_text()) or {}
        keep = (
            "model",
            "data",
            "epochs",
            "time",
            "imgsz",
            "batch",
            "device",
            "optimizer",
            "lr0",
            "lrf",
            "momentum",
            "weight_decay",
            "seed",
            "close_mosaic",
            "mosaic",
            "fliplr",
            "flipud",
            "hsv_h",
            "hsv_s",
            "hsv_v",
            "scale",
            "translate",
            "amp",
            "plots",
            "workers",
            "cache",
            "patience",
            "nbs",
            "cls_pw",
            "warmup_epochs",
            "degrees",
        )
        summary["args"] = {k: args[k] for k in keep if k in args}
    results = run_dir / "results.csv"
    if results.is_file():
        rows = list(csv.DictReader(results.open()))
        if rows:

            def row(r: dict[str, str]) -> dict[str, float]:
                return {k.strip(): float(v) for k, v in r.items() if v not in (None, "")}

            key = "metrics/mAP50-95(B)"
            best = max(rows, key=lambda r: float(r.get(key) or 0))
            summary["epochs_completed"] = len(rows)
            summary["last_epoch"] = row(rows[-1])
            summary["best_epoch"] = row(best)
            summary["train_hours"] = round(float(rows[-1].get("time") or 0) / 3600, 3)
    return summary


def export_onnx(weights: Path, out_path: Path, imgsz: int, dynamic: bool = True) -> Path:
    """Ultralytics ONNX export (simplified, opset chosen by Ultralytics for the installed onnx)."""
    from training.offline import ultralytics_offline

    ultralytics_offline()
    from ultralytics import YOLO

    exported = Path(
        YOLO(str(weights)).export(format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=True, device="cpu")
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(exported), out_path)
    softmax_before_transpose(out_path)
    return out_path


def softmax_before_transpose(model_path: Path) -> int:
    """Rewrite every `Transpose -> Softmax` pair (the transpose feeding only the softmax) as
    `Softmax -> Transpose`, in place; returns how many were rewritten.

    YOLOv8/YOLO11 heads decode boxes with DFL: reshape to (b, 4, 16, anchors), swap to (b, 16, 4, anchors),
    softmax over the 16 bins. ONNX Runtime's CPU softmax over axis 1 of that layout was 1.1 ms of the demo
    model's ~7 ms at one thread; over the same bins before the swap it takes 0.2-0.3 ms. The outputs are
    bit-identical (softmax of a transposed tensor = the transpose of the softmax along the mapped axis).
    """
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    consumers = Counter(name for node in graph.node for name in node.input)
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    swapped = 0
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        transpose = producer.get(softmax.input[0])
        if transpose is None or transpose.op_type != "Transpose" or transpose.output[0] in outputs:
            continue
        if consumers[transpose.output[0]] != 1:
            continue
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        axis_attr = next((a for a in softmax.attribute if a.name == "axis"), None)
        if perm is None or axis_attr is None:  # default axes: leave the graph as it is
            continue
        axis = axis_attr.i % len(perm)
        source, result = transpose.input[0], softmax.output[0]
        middle = f"{result}_before_transpose"
        softmax.input[0], softmax.output[0] = source, middle
        axis_attr.i = perm[axis]
        transpose.input[0], transpose.output[0] = middle, result
        nodes = list(graph.node)  # keep the node list topologically sorted: softmax now comes first
        i, j = nodes.index(transpose), nodes.index(softmax)
        nodes[i], nodes[j] = softmax, transpose
        del graph.node[:]
        graph.node.extend(nodes)
        swapped += 1
    if swapped:
        onnx.checker.check_model(model)
        onnx.save(model, str(model_path))
    return swapped


class ImageCalibrationReader:
    """ONNX Runtime calibration data: dataset images preprocessed exactly as `vision` does at inference."""

    def __init__(self, images: list[Path], input_name: str, imgsz: tuple[int, int]) -> None:
        self.images, self.input_name, self.imgsz = images, input_name, imgsz
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from vision import read_image
        from vision.preprocess import letterbox, to_input_tensor

        for path in self.images:
            padded, _ = letterbox(read_image(path), self.imgsz)
            yield {self.input_name: to_input_tensor([padded])}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def head_postprocess_nodes(model_path: Path) -> list[str]:
    """Nodes of the detection head's box/score decoding (after its last convolutions).

    They combine coordinates and probabilities with very different ranges in one tensor; quantizing them
    to 8 bits wrecks box precision for almost no speed gain, so INT8 export keeps them in float. The
    activations inside the head's conv blocks (`.../act/...`) sit between two quantized convolutions and
    stay quantized: keeping them float cost a dequantize/quantize pair each (demo model: INT8 1.29x -> 1.35x
    FP32 at one thread, mAP50 unchanged).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    prefixes = sorted(
        {n.name.split("/")[1] for n in graph.node if n.name.startswith("/model.")},
        key=lambda s: int(s.split(".")[1]) if s.split(".")[1].isdigit() else -1,
    )
    if not prefixes:
        return []
    head = f"/{prefixes[-1]}/"
    decoding = [n for n in graph.node if n.name.startswith(head) and n.op_type != "Conv"]
    return [n.name for n in decoding if "/act/" not in n.name] + [
        n.name for n in graph.node if not n.name.startswith("/model.")
    ]


def quantize_int8(fp32_path: Path, int8_path: Path, calib_images: list[Path]) -> Path:
    """Static INT8 (QDQ, per-channel weights, UInt8 activations) calibrated on `calib_images`."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib_images:
        raise TrainingInputError("INT8 calibration needs images; the calibration split is empty")
    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    meta = session.get_modelmeta().custom_metadata_map
    imgsz = (
        tuple(yaml.safe_load(meta["imgsz"])) if "imgsz" in meta else (int(inp.shape[2]), int(inp.shape[3]))
    )
    prepared = int8_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            calibration_data_reader=ImageCalibrationReader(calib_images, inp.name, imgsz),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2 only) u8 x s8 convolutions saturate their
            # 16-bit sums; NEU-DET val mAP50 0.640 -> 0.686 there (FP32 0.693), the same INT8 speed
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=head_postprocess_nodes(prepared),
        )
    finally:
        prepared.unlink(missing_ok=True)
    _copy_metadata(fp32_path, int8_path)
    return int8_path


def _copy_metadata(src: Path, dst: Path) -> None:
    """Keep Ultralytics' metadata (names, imgsz, task) on the quantized file so `vision` can load it."""
    import onnx

    src_model = onnx.load(str(src), load_external_data=False)
    dst_model = onnx.load(str(dst))
    present = {p.key for p in dst_model.metadata_props}
    for prop in src_model.metadata_props:
        if prop.key not in present:
            dst_model.metadata_props.append(prop)
    onnx.save(dst_model, str(dst))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _metrics_entry(report: Any, card_dir: Path) -> dict[str, Any]:
    d = report.to_dict()
    keep = (
        "split",
        "images",
        "instances",
        "map50",
        "map50_95",
        "precision",
        "recall",
        "decision_conf",
        "escape_rate",
        "false_reject_rate",
        "target_escape_rate",
        "conf_for_target_escape",
        "false_reject_at_target",
        "ms_per_image",
        "providers",
        "notes",
        "plots",
        "operating_point",
    )
    out = {k: d.get(k) for k in keep}
    # plot paths relative to the card, so a copied model folder stays self-describing
    out["plots"] = {
        k: str(Path(v).resolve().relative_to(card_dir.resolve())) for k, v in out["plots"].items()
    }
    out["per_class"] = {c["name"]: {k: v for k, v in c.items() if k != "name"} for c in d["classes"]}
    return out


def build_card(
    onnx_path: Path,
    run_dir: Path | None,
    description: str,
    dataset: dict[str, Any],
    metrics: dict[str, Any],
    speed: dict[str, Any],
    int8_path: Path | None = None,
) -> dict[str, Any]:
    """The model card: what the model is, how it was made and how good it is, in one JSON object."""
    from vision import Model

    model = Model(onnx_path, providers="cpu")
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": onnx_path.parent.name,
        "description": description,
        "task": model.task,
        "classes": {str(k): v for k, v in sorted(model.names.items())},
        "input": {
            "imgsz": list(model.imgsz),
            "layout": "NCHW RGB float32 0-1, letterboxed (grey 114)",
            "dynamic_batch": model.dynamic_batch,
        },
        "files": {
            "fp32": {
                "file": onnx_path.name,
                "sha256": model.sha256,
                "bytes": onnx_path.stat().st_size,
                "opset": _opset(onnx_path),
            }
        },
        "metrics": metrics,
        "operating_point": card_operating_point(metrics, onnx_path.name, dataset),
        "speed": speed,
        "dataset": dataset,
        "training": _training_summary(run_dir) if run_dir else {},
        "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "promotions": [],
    }
    if int8_path is not None:
        from vision.digest import file_sha256

        card["files"]["int8"] = {
            "file": int8_path.name,
            "sha256": file_sha256(int8_path),
            "bytes": int8_path.stat().st_size,
            "opset": _opset(int8_path),
        }
    return card


def card_operating_point(
    metrics: dict[str, Any], fp32_file: str, dataset: dict[str, Any]
) -> dict[str, Any] | None:
    """The card's operating point: the FP32 file's, with where it was measured (None if not evaluated).

    Each precision variant keeps its own under `metrics.<variant>.operating_point` (INT8 may need
    other thresholds); `model promote` writes the one of the file it puts on the line.
    """
    point = (metrics.get("fp32") or {}).get("operating_point")
    if not point:
        return None
    return {
        "variant": "fp32",
        "file": fp32_file,
        "data": dataset.get("data_yaml"),
        "split": dataset.get("eval_split"),
        **point,
    }


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def export_run(
    run: str | Path,
    out_dir: str | Path,
    imgsz: int = 320,
    eval_data: str | Path | None = None,
    eval_split: str = "val",
    int8: bool = False,
    calib_data: str | Path | None = None,
    calib_split: str = "train",
    dataset_citation: str = "",
    description: str = "",
    decision_conf: float = 0.25,
    target_escape_rate: float = 0.01,
    threads: int | None = None,
) -> Path:
    """Export `run` (folder or .pt) into `out_dir`, evaluate it, write `model.json`; returns the card path.

    `eval_data` defaults to the dataset the run trained on (from its args.yaml).
    """
    from training.datasets import dataset_hash, split_images
    from training.evaluate import evaluate

    weights = find_weights(run)
    run_dir = weights.parent.parent if weights.parent.name == "weights" else None
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if eval_data is None and run_dir is not None and (run_dir / "args.yaml").is_file():
        eval_data = (yaml.safe_load((run_dir / "args.yaml").read_text()) or {}).get("data")
    fp32 = export_onnx(weights, out / "model.onnx", imgsz)

    metrics: dict[str, Any] = {}
    speed: dict[str, Any] = {
        "machine": f"{_cpu_name()}, ONNX Runtime CPU",
        "threads": threads,
        "note": "mean preprocess+inference+postprocess per image during evaluation",
    }
    dataset: dict[str, Any] = {"citation": dataset_citation}
    if eval_data is not None:
        report = evaluate(
            fp32,
            eval_data,
            split=eval_split,
            decision_conf=decision_conf,
            target_escape_rate=target_escape_rate,
            out_dir=out / "eval" / "fp32",
            threads=threads,
        )
        metrics["fp32"] = _metrics_entry(report, out)
        speed["fp32_ms_per_image"] = round(report.ms_per_image, 2)
        dataset.update(
            {
                "data_yaml": str(Path(report.data).resolve()),
                "eval_split": eval_split,
                "content_sha256": dataset_hash(report.data),
            }
        )
        print(report.summary())
    int8_path = None
    if int8:
        calib_source = calib_data or eval_data
        if calib_source is None:
            raise TrainingInputError("--int8 needs --calib DATA (a dataset with images to calibrate on)")
        calib_images = split_images(calib_source, calib_split)
        rng = np.random.default_rng(0)
        pick = sorted(rng.choice(len(calib_images), min(CALIB_IMAGES, len(calib_images)), replace=False))
        int8_path = quantize_int8(fp32, out / "model.int8.onnx", [calib_images[i] for i in pick])
        dataset["calibration"] = {"data": str(calib_source), "split": calib_split, "images": len(pick)}
        if eval_data is not None:
            report8 = evaluate(
                int8_path,
                eval_data,
                split=eval_split,
                decision_conf=decision_conf,
                target_escape_rate=target_escape_rate,
                out_dir=out / "eval" / "int8",
                threads=threads,
            )
            metrics["int8"] = _metrics_entry(report8, out)
            speed["int8_ms_per_image"] = round(report8.ms_per_image, 2)
            print(report8.summary())
    card = build_card(fp32, run_dir, description, dataset, metrics, speed, int8_path)
    card_path = out / "model.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path

"""Inference speed: raw ONNX Runtime vs our full pipeline vs Ultralytics' ONNX predict, in one run.

    python bench/inference.py                       # untrained yolov8n exported at 320 and 640
    python bench/inference.py --weights runs/demo/.../best.pt --conf 0.25
    python bench/inference.py --int8 models/demo,models/neu-det     # also FP32 vs INT8 of shipped models
    python bench/inference.py --sizes "" --runtimes models/demo      # ORT FP32/INT8 vs OpenVINO f32/bf16/int8

Each measurement runs the same frames (synthetic 640x480 parts) through:
- raw:   `session.run` on a ready-made input tensor (inference only: the floor);
- ours:  `vision.Model.predict` on the BGR frame (convert, letterbox, run, decode, map boxes);
- ultra: `ultralytics.YOLO(onnx).predict` on the same frame (needs the [train] extra).
Both sessions use the same ORT settings (intra-op threads = physical cores, ORT_ENABLE_ALL).
Prints per-frame medians (ms), the ratios ours/raw and ours/ultra, and total/inf: our pipeline's own
(pre + inference + post) / inference from the same calls, which machine drift cannot skew.
With `--int8`, rows per shipped model: our full pipeline on its FP32 and INT8 files, interleaved, the
speed-up with all cores on one call and with one thread (the agent's layout for a free-running line on a
2-core PC), and the mAP50 of each precision from the model card.
With `--runtimes`, rows per model folder and runtime (`vision.runtime.Runtime`: ONNX Runtime FP32 and INT8,
OpenVINO f32, bf16 and int8; a runtime whose file is missing or that cannot run here is listed as such),
each timed model only (`session.run` on a ready tensor) and with our pipeline (`predict` on the frame), with
one thread and with all cores, interleaved round by round; the ratio to ONNX Runtime FP32 in the same
layout, and whether the accuracy gate allows the runtime on this CPU type. The CPU's model and flags head
the table. OpenVINO INT8 needs `<stem>.ov-int8.xml` beside the model (`edge-inspect model quantize-openvino`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn: Callable[[np.ndarray], object], frames: list[np.ndarray], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for f in frames:
            t = time.perf_counter()
            fn(f)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def export(weights: str, imgsz: int, workdir: Path) -> Path:
    """`weights` exported by `training.export.export_onnx`, as `edge-inspect export` ships models (all three
    columns run this file)."""
    from training.export import export_onnx
    from training.offline import ultralytics_offline

    ultralytics_offline(workdir / "settings")
    from ultralytics import YOLO

    pt = workdir / f"model{imgsz}.pt"
    YOLO(weights).save(str(pt))
    return export_onnx(pt, workdir / f"model{imgsz}.onnx", imgsz, dynamic=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="yolov8n.yaml", help="model YAML or our own .pt (never a hub name)")
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument(
        "--int8", default="", help="model folders (comma-separated) holding model.onnx + model.int8.onnx"
    )
    ap.add_argument(
        "--runtimes", default="", help="model folders (comma-separated): every runtime, model only and ours"
    )
    args = ap.parse_args()

    import onnxruntime as ort

    from training.synth import make_sample

    rng = np.random.default_rng(0)
    frames = [make_sample(rng, (480, 640))[0] for _ in range(args.frames)]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {ort.get_device()}, onnxruntime {ort.__version__}, {os.cpu_count()} cores")
    print(f"frames: {len(frames)} x 640x480 BGR, {args.rounds} rounds, {args.weights}, conf {args.conf}")
    cols = ("imgsz", "raw ms", "ours ms", "ultra ms", "ours/raw", "ours/ultra", "total/inf", "dets")
    print(" ".join(f"{c:>{w}}" for c, w in zip(cols, (5, 8, 8, 9, 9, 10, 10, 5))))
    with tempfile.TemporaryDirectory() as tmp:
        for imgsz in (int(s) for s in args.sizes.split(",") if s):  # --sizes "" for the INT8 rows only
            onnx_path = export(args.weights, imgsz, Path(tmp))
            raw, ours_t, ultra_t, dets, split = measure(onnx_path, imgsz, frames, args.rounds, args.conf)
            print(
                f"{imgsz:>5} {raw:>8.2f} {ours_t:>8.2f} {ultra_t:>9.2f} {ours_t / raw:>9.3f} "
                f"{ours_t / ultra_t:>10.3f} {split:>10.3f} {dets:>5}"
            )
    if args.int8:
        print("\nINT8 (static, QDQ) vs FP32, our full pipeline, same frames; mAP50 from each model card")
        print(
            f"{'model':>10} {'imgsz':>5} {'threads':>7} {'fp32 ms':>8} {'int8 ms':>8} {'speed-up':>9} "
            "fp32  int8 mAP50"
        )
        for folder in (Path(p) for p in args.int8.split(",") if p):
            print(int8_row(folder, frames, args.rounds, args.conf))
    if args.runtimes:
        print_cpu()
        for folder in (Path(p) for p in args.runtimes.split(",") if p):
            runtime_rows(folder, frames, args.rounds, args.conf)


RUNTIMES = (
    "onnxruntime:CPU:f32",
    "onnxruntime:CPU:int8",
    "openvino:CPU:f32",
    "openvino:CPU:bf16",
    "openvino:CPU:int8",
)


def print_cpu() -> None:
    from vision.runtime import all_cpu_flags, cpu_identity

    cpu = cpu_identity()
    print(f"\nCPU: {cpu['name']}; gate key {cpu['key']}; flags that matter: {' '.join(cpu['flags'])}")
    print(f"all flags: {' '.join(all_cpu_flags())}")
    try:
        from vision.openvino_session import _openvino

        ov = _openvino()
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(f"openvino {ov.__version__}: CPU capabilities {', '.join(caps)}")
    except Exception as exc:  # no [openvino] extra: its rows say so
        print(f"openvino: not available ({exc})")


def runtime_rows(folder: Path, frames: list[np.ndarray], rounds: int, conf: float) -> None:
    """Every runtime on one model: model only and our pipeline, one thread and all cores, interleaved."""
    from vision import Model
    from vision.providers import physical_cores
    from vision.runtime import Runtime
    from vision.runtime_gate import check_runtime

    onnx = folder / "model.onnx"
    print(f"\n{folder}: ms per frame (median of {rounds} interleaved rounds over {len(frames)} frames)")
    print(f"{'runtime':<22} {'threads':>7} {'model ms':>9} {'ours ms':>8} {'model x':>8} {'ours x':>7}  gate")
    for threads in dict.fromkeys((1, physical_cores())):
        models, skipped = {}, {}
        for name in RUNTIMES:
            r = Runtime.parse(name)
            try:
                m = Model(
                    onnx, conf=conf, threads=threads, backend=r.backend, device=r.device,
                    precision=r.precision,
                )
                m.warmup(3)
                models[name] = m
            except Exception as exc:  # missing INT8 file, no openvino: listed, not fatal
                skipped[name] = str(exc).split(";")[0][:70]
        tensors = {n: _ready_tensor(m, frames[0]) for n, m in models.items()}
        raw: dict[str, list[float]] = {n: [] for n in models}
        ours: dict[str, list[float]] = {n: [] for n in models}
        for _ in range(rounds):
            for n, m in models.items():
                feed = {m.input_name: tensors[n]}
                raw[n].append(median_ms(lambda _f, m=m, feed=feed: m.session.run(None, feed), frames, 1))
                ours[n].append(median_ms(m.predict, frames, 1))
        base_raw = statistics.median(raw.get(RUNTIMES[0]) or [float("nan")])
        base_ours = statistics.median(ours.get(RUNTIMES[0]) or [float("nan")])
        for n in RUNTIMES:
            gate = check_runtime(onnx, Runtime.parse(n))
            verdict = "allowed" if gate.allowed else ("refused" if gate.entry else "not evaluated here")
            if n in skipped:
                print(f"{n:<22} {threads:>7}  -- {skipped[n]}")
                continue
            a, b = statistics.median(raw[n]), statistics.median(ours[n])
            ratios = f"{base_raw / a:>7.2f}x {base_ours / b:>6.2f}x"
            print(f"{n:<22} {threads:>7} {a:>9.2f} {b:>8.2f} {ratios}  {verdict}")


def _ready_tensor(model: Any, frame: np.ndarray) -> np.ndarray:
    """The input tensor `predict` makes of `frame` (minimal padding where the graph allows it)."""
    from vision.preprocess import letterbox_tensor

    auto = model.dynamic_shape and not model.end2end
    return letterbox_tensor([frame], model.imgsz, auto, model.stride, model.input_dtype)[0]


def int8_row(folder: Path, frames: list[np.ndarray], rounds: int, conf: float) -> str:
    """FP32 vs INT8 of one shipped model through our pipeline, interleaved round by round: with all cores
    on one call, and with one thread (how the agent runs a free-running line on 2 cores: two parts at
    once, one thread each)."""
    import json

    from vision import Model
    from vision.providers import physical_cores

    cells = []
    for threads in dict.fromkeys((physical_cores(), 1)):
        fp32 = Model(folder / "model.onnx", conf=conf, threads=threads)
        int8 = Model(folder / "model.int8.onnx", conf=conf, threads=threads)
        fp32.warmup()
        int8.warmup()
        t32, t8 = [], []
        for _ in range(rounds):
            t32.append(median_ms(fp32.predict, frames, 1))
            t8.append(median_ms(int8.predict, frames, 1))
        a, b = statistics.median(t32), statistics.median(t8)
        cells.append(f"{threads:>7} {a:>8.2f} {b:>8.2f} {a / b:>8.2f}x")
    metrics = json.loads((folder / "model.json").read_text()).get("metrics", {})
    m32, m8 = (metrics.get(k, {}).get("map50") for k in ("fp32", "int8"))
    maps = f"{m32:.3f} {m8:.3f}" if m32 is not None and m8 is not None else "   -     -"
    return "\n".join(f"{folder.name:>10} {fp32.imgsz[0]:>5} {c} {maps}" for c in cells)


def measure(
    onnx_path: Path, imgsz: int, frames: list[np.ndarray], rounds: int, conf: float
) -> tuple[float, float, float, int]:
    """Median ms per frame for raw ORT, ours and Ultralytics, interleaved round by round."""
    from ultralytics import YOLO

    from vision import Model
    from vision.preprocess import letterbox, to_input_tensor

    ours = Model(onnx_path, conf=conf)
    ours.warmup()
    tensor = to_input_tensor([letterbox(frames[0], ours.imgsz)[0]])

    def raw_fn(_frame: np.ndarray) -> object:
        return ours.session.run(None, {ours.input_name: tensor})

    ultra = YOLO(str(onnx_path), task="detect")

    def ultra_fn(frame: np.ndarray) -> object:
        return ultra.predict(frame, imgsz=imgsz, conf=conf, verbose=False)

    ultra_fn(frames[0])  # warm-up (Ultralytics builds its predictor on the first call)
    raws, ourss, ultras = [], [], []
    for _ in range(rounds):  # interleaved: drift (thermal, other load) hits all three alike
        raws.append(median_ms(raw_fn, frames, 1))
        ourss.append(median_ms(ours.predict, frames, 1))
        ultras.append(median_ms(ultra_fn, frames, 1))
    preds = [ours.predict(f) for f in frames for _ in range(rounds)]
    dets = sum(len(p.detections) for p in preds) // rounds
    # the pipeline's own split of the same calls: immune to drift between the timed loops above
    inf = statistics.median(p.timing_ms["inference"] for p in preds)
    total = statistics.median(sum(p.timing_ms.values()) for p in preds)
    return statistics.median(raws), statistics.median(ourss), statistics.median(ultras), dets, total / inf


if __name__ == "__main__":
    main()

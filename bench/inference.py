"""Inference speed: raw ONNX Runtime vs our full pipeline vs Ultralytics' ONNX predict, in one run.

    python bench/inference.py                       # untrained yolov8n exported at 320 and 640
    python bench/inference.py --weights runs/demo/.../best.pt --conf 0.25

Each measurement runs the same frames (synthetic 640x480 parts) through:
- raw:   `session.run` on a ready-made input tensor (inference only: the floor);
- ours:  `vision.Model.predict` on the BGR frame (convert, letterbox, run, decode, map boxes);
- ultra: `ultralytics.YOLO(onnx).predict` on the same frame (needs the [train] extra).
Both sessions use the same ORT settings (intra-op threads = physical cores, ORT_ENABLE_ALL).
Prints per-frame medians (ms), the ratios ours/raw and ours/ultra, and total/inf: our pipeline's own
(pre + inference + post) / inference from the same calls, which machine drift cannot skew.
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
    from training.offline import ultralytics_offline

    ultralytics_offline(workdir / "settings")
    from ultralytics import YOLO

    model = YOLO(weights)
    pt = workdir / f"model{imgsz}.pt"
    model.save(str(pt))
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=imgsz, dynamic=False, simplify=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="yolov8n.yaml", help="model YAML or our own .pt (never a hub name)")
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conf", type=float, default=0.25)
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
        for imgsz in (int(s) for s in args.sizes.split(",")):
            onnx_path = export(args.weights, imgsz, Path(tmp))
            raw, ours_t, ultra_t, dets, split = measure(onnx_path, imgsz, frames, args.rounds, args.conf)
            print(
                f"{imgsz:>5} {raw:>8.2f} {ours_t:>8.2f} {ultra_t:>9.2f} {ours_t / raw:>9.3f} "
                f"{ours_t / ultra_t:>10.3f} {split:>10.3f} {dets:>5}"
            )


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

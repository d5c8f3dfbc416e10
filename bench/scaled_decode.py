"""Scaled JPEG decoding (a folder source's `scaled_decode: true`): what it saves, and what it changes.

    python bench/scaled_decode.py                                   # the demo line, 300 parts at 640 px
    python bench/scaled_decode.py --line configs/lines/demo.yaml --parts 500 --size 1280

Synthetic parts from our defect generator (`training.synth`, labelled boxes, a quarter defect-free) are
written as --size px JPEGs (quality 92), then each is read and inspected twice, interleaved, with the
line's model, thresholds and active recipe:
- full:   the whole file decoded, the model's letterbox shrinks it (`read_image_file(path)`);
- scaled: decoded at 1/2, 1/4 or 1/8 size by the JPEG decoder (`read_image_file(path, fit)`), boxes
          mapped back to the file's pixels as the inspector does.
Prints per-part medians (ms) of the decode and of decode + predict with one inference thread (a
free-running line's layout on a 2-core PC), and what the line decides in each mode: verdicts that differ,
labelled defects found by boxes the recipe counts (same class, IoU >= 0.5), OK parts rejected, and how far
the boxes of the two modes lie apart (IoU of matched boxes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4)."""
    from vision.postprocess import box_iou

    return np.array([box_iou(box, b) for box in a]).reshape(len(a), len(b))


def found(truth: list[tuple[int, int, int, int, int]], det, counted: np.ndarray) -> int:
    """How many labelled defects a counted box of the same class covers at IoU >= 0.5."""
    if not truth or not counted.any():
        return 0
    boxes, classes = det.xyxy[counted], det.class_id[counted]
    gt = np.array([t[1:] for t in truth], np.float32)
    iou = pairwise_iou(gt, boxes)
    return sum(bool(((classes == t[0]) & (iou[i] >= 0.5)).any()) for i, t in enumerate(truth))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--line", default="configs/lines/demo.yaml", help="line file: model, thresholds, recipe")
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--size", type=int, default=640, help="side of the square JPEG parts (px)")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    import cv2

    from edge_agent.config import load_line
    from training.synth import CLASSES, make_sample
    from vision import Model
    from vision.images import dct_reduction, file_scale, read_image_file
    from vision.rules import judge

    line = load_line(args.line).config
    mc = line.model
    rules = line.recipes[line.active_recipe or next(iter(line.recipes))]
    model = Model(
        mc.path, providers="cpu", names=mc.names, imgsz=mc.imgsz, threads=1, conf=mc.conf, iou=mc.iou
    )
    if model.task != "detect" or mc.tile:
        print(f"{mc.path}: scaled decoding is for detection models without tiles", file=sys.stderr)
        return 2
    names = [model.names[k] for k in sorted(model.names)]
    if names[: len(CLASSES)] != list(CLASSES):
        print(f"note: the model's classes {names} are not the generator's {list(CLASSES)}", file=sys.stderr)
    model.warmup(runs=3)
    rng = np.random.default_rng(args.seed)
    stats = {m: {"decode": [], "total": [], "verdicts": [], "found": 0, "fr": 0} for m in ("full", "scaled")}
    ious: list[float] = []
    unmatched = labelled = ok_parts = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.parts):
            img, truth = make_sample(rng, (args.size, args.size))
            path = Path(tmp) / f"part_{i:04d}.jpg"
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            labelled += len(truth)
            ok_parts += not truth
            dets = {}
            for mode, fit in (("full", None), ("scaled", model.imgsz)):
                t0 = time.perf_counter()
                image, file = read_image_file(path, fit)
                t1 = time.perf_counter()
                det = model.predict(image).detections
                scale = file_scale(image, file)
                if scale is not None:  # as the inspector does: boxes back to the file's pixels
                    det = det.scaled(*scale)
                t2 = time.perf_counter()
                s = stats[mode]
                s["decode"].append((t1 - t0) * 1000)
                s["total"].append((t2 - t0) * 1000)
                judgement = judge(det, rules)
                s["verdicts"].append(judgement.verdict)
                s["found"] += found(truth, det, judgement.counted)
                s["fr"] += judgement.verdict == "NG" and not truth
                dets[mode] = det
            a, b = dets["full"], dets["scaled"]
            if len(a) and len(b):
                iou = pairwise_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :])
                best = iou.max(axis=1)
                ious.extend(best[best > 0].tolist())
                unmatched += int((best == 0).sum()) + int((iou.max(axis=0) == 0).sum())
            else:
                unmatched += len(a) + len(b)

    factor = dct_reduction((args.size, args.size), model.imgsz)
    full, scaled = stats["full"], stats["scaled"]
    differ = sum(x != y for x, y in zip(full["verdicts"], scaled["verdicts"], strict=True))
    print(f"model {mc.path} ({model.imgsz[0]}x{model.imgsz[1]}), recipe of {args.line}")
    print(f"{args.parts} synthetic {args.size} px JPEG parts: {labelled} labelled defects, {ok_parts} OK")
    print(f"scaled decode at 1/{factor} ({-(-args.size // factor)} px)")
    print(f"{'':8} {'decode ms':>10} {'decode+predict ms':>18} {'defects found':>14} {'OK rejected':>12}")
    for mode, s in stats.items():
        print(
            f"{mode:8} {statistics.median(s['decode']):10.2f} {statistics.median(s['total']):18.2f}"
            f" {s['found']:>8}/{labelled:<5} {s['fr']:>6}/{ok_parts:<5}"
        )
    print(
        f"scaled/full: decode {statistics.median(scaled['decode']) / statistics.median(full['decode']):.3f},"
        f" decode+predict {statistics.median(scaled['total']) / statistics.median(full['total']):.3f}"
    )
    print(f"verdicts that differ: {differ} of {args.parts}")
    if ious:
        print(
            f"boxes of one mode matched in the other: {len(ious)}, IoU median {statistics.median(ious):.3f},"
            f" min {min(ious):.3f}; unmatched boxes {unmatched}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

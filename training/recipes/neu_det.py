"""Recipe for the NEU-DET steel-defect model: VOC import -> stratified split -> YOLOv8n from scratch -> ONNX.

NEU-DET (K. Song, Y. Yan, Northeastern University): 1,800 grey 200x200 images of hot-rolled steel strip,
6 classes. The images stay where they are (never in the repo); the importer writes a git-ignored copy.

    python -m training.recipes.neu_det train  --dataset ../shared/datasets/neu-det --work runs/neu --hours 4
    python -m training.recipes.neu_det finish --work runs/neu --out models/neu-det
    python -m training.recipes.neu_det ablate --work runs/neu-ablate --epochs 10   # what each lever gives

`train` imports (VOC), splits 70/20/10 with seed 0 and trains YOLOv8n from its YAML (random init: no
pretrained weights offline) for a wall-time budget; Ultralytics fits the LR schedule to `--hours` and
saves `weights/last.pt` + `weights/best.pt` after every epoch, so an interrupted run can be finished or
resumed (`edge-inspect train --resume runs/neu/runs/neu/weights/last.pt`). `finish` exports best.pt to
ONNX, evaluates the ONNX through our `vision` runtime on the val split and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from training.recipes import last_run, remember_run

NEU_IMGSZ = 320  # images are 200 px: upsampled 1.6x so crazing's and rolled-in scale's fine texture survives
# the stride-8 stem (224 gave crazing recall 0.04 at 0.25)
# Levers (docs/training.md records what each gave):
NEU_AUGMENT = {
    "flipud": 0.5,  # strip has no up/down or left/right: flips are free extra data
    "fliplr": 0.5,
    "hsv_h": 0.0,  # grey images: hue and saturation jitter only add noise
    "hsv_s": 0.0,
    "hsv_v": 0.3,  # lighting varies along a mill
    "scale": 0.3,  # defects keep their physical size range; zooming out 2x destroys crazing's texture
    "mosaic": 1.0,
}
NEU_OPTIM = {
    "nbs": 16,  # an optimizer step per batch (Ultralytics' nbs 64 = 4 batches per step: too few steps on CPU)
    "cls_pw": 0.5,  # class weights ~ 1/sqrt(frequency): pitted surface (432 boxes) vs inclusion (1011)
}
CITATION = (
    'NEU surface defect database (NEU-DET), Northeastern University. K. Song, Y. Yan, "A noise robust method '
    'based on completed local binary patterns for hot-rolled steel strip surface defects", Applied Surface '
    "Science 285 (2013). Research use."
)


def prepare(dataset: Path, work: Path) -> Path:
    from training.datasets import import_dataset, split_dataset

    data_dir = work / "data"
    if not (data_dir / "split.json").exists():
        report = import_dataset(dataset, data_dir, fmt="voc", overwrite=True)
        print(report.to_text())
        split = split_dataset(data_dir, val=0.2, test=0.1, seed=0)
        print("split:", split.counts)
    return data_dir / "data.yaml"


def train_stage(dataset: Path, work: Path, hours: float, epochs: int, model: str) -> Path:
    from training.train import train

    data_yaml = prepare(dataset, work)
    run = train(
        data_yaml,
        model=model,
        epochs=epochs,
        imgsz=NEU_IMGSZ,
        batch=16,
        device="cpu",
        project=work / "runs",
        name="neu",
        hours=hours,
        workers=0,
        extra={**NEU_AUGMENT, **NEU_OPTIM, "cache": "ram", "patience": 1000},  # RAM: 1,800 small images
    )
    remember_run(work, run)
    return run


# One arm per lever: the recipe with that lever put back to Ultralytics' default (or the earlier 224 px).
ULTRALYTICS_AUGMENT = {"flipud": 0.0, "fliplr": 0.5, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "scale": 0.5}
ABLATION_ARMS: dict[str, dict] = {
    "recipe (all levers)": {},
    "input 224 px": {"imgsz": 224},
    "Ultralytics' augmentation": ULTRALYTICS_AUGMENT,
    "no class weights": {"cls_pw": 0.0},
    "nbs 64 (a step per 4 batches)": {"nbs": 64},
}


def ablate(dataset: Path, work: Path, epochs: int, arms: list[str] | None = None) -> list[dict]:
    """Train each arm for the same short schedule from random init (seed 0) and validate its best.pt on
    the val split: overall and per-class mAP50. Results go to `work/ablation.json` as each arm ends, so an
    interrupted ablation keeps the arms it finished (and skips them when run again)."""
    from training.offline import ultralytics_offline
    from training.train import train

    ultralytics_offline()
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # Ultralytics trains on cpu_count - 1 threads (one of two here); an ablation owns the machine
    torch_utils.NUM_THREADS = os.cpu_count() or 1
    data_yaml = prepare(dataset, work)
    out = work / "ablation.json"
    rows: list[dict] = json.loads(out.read_text()) if out.exists() else []
    done = {r["arm"] for r in rows if r["epochs"] == epochs}
    for arm in arms or list(ABLATION_ARMS):
        if arm in done:
            continue
        change = dict(ABLATION_ARMS[arm])
        imgsz = change.pop("imgsz", NEU_IMGSZ)
        run = train(
            data_yaml,
            model="yolov8n.yaml",
            epochs=epochs,
            imgsz=imgsz,
            batch=16,
            device="cpu",
            project=work / "runs",
            name=f"arm{list(ABLATION_ARMS).index(arm)}-e{epochs}",
            workers=0,
            # a short schedule: mosaic off only for the last epoch (the recipe: 5 of 80)
            extra={**NEU_AUGMENT, **NEU_OPTIM, "cache": "ram", "close_mosaic": 1, **change},
        )
        metrics = YOLO(str(run / "weights" / "best.pt")).val(
            data=str(data_yaml), imgsz=imgsz, batch=16, device="cpu", plots=False, workers=0, verbose=False
        )
        names = metrics.names
        rows.append(
            {
                "arm": arm,
                "change": ABLATION_ARMS[arm],
                "epochs": epochs,
                "imgsz": imgsz,
                "map50": round(float(metrics.box.map50), 4),
                "per_class_ap50": {
                    names[int(c)]: round(float(ap), 4)
                    for c, ap in zip(metrics.box.ap_class_index, metrics.box.ap50, strict=True)
                },
                "run": str(run),
            }
        )
        out.write_text(json.dumps(rows, indent=2))
    print(ablation_table(rows))
    return rows


def ablation_table(rows: list[dict]) -> str:
    """The arms as a Markdown table: val mAP50, its change against the full recipe, per-class AP50."""
    base = next((r["map50"] for r in rows if not r["change"]), None)
    classes = sorted({c for r in rows for c in r["per_class_ap50"]})
    head = ["arm", "epochs", "val mAP50", "vs recipe", *classes]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        delta = f"{r['map50'] - base:+.3f}" if base is not None and r["change"] else ""
        cells = [r["arm"], str(r["epochs"]), f"{r['map50']:.3f}", delta]
        cells += [f"{r['per_class_ap50'].get(c, 0.0):.2f}" for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finish_stage(work: Path, out: Path, run: Path | None = None) -> Path:
    """Export + evaluate + card. Works on a finished run or on one still training/interrupted
    (its best.pt is rewritten after every epoch)."""
    from training.export import export_run

    if run is None:
        run = last_run(work, "neu")
    card_path = export_run(
        run,
        out_dir=out,
        imgsz=NEU_IMGSZ,
        eval_data=work / "data" / "data.yaml",
        eval_split="val",
        int8=True,  # calibrated on the training split; the card compares FP32 and INT8
        dataset_citation=CITATION,
        description="Hot-rolled steel strip surface defects (NEU-DET, 6 classes), YOLOv8n from scratch.",
    )
    print(json.dumps(json.loads(card_path.read_text())["metrics"], indent=2))
    return card_path


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("YOLO_VERBOSE", "True")  # show Ultralytics' progress bars
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["train", "finish", "ablate"])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/neu-det"))
    parser.add_argument("--work", type=Path, default=Path("runs/neu"))
    parser.add_argument("--out", type=Path, default=Path("models/neu-det"))
    parser.add_argument("--run", type=Path, default=None, help="run folder to finish (default: the last one)")
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=200, help="train: the most; ablate: each arm's")
    parser.add_argument("--arm", action="append", choices=list(ABLATION_ARMS), help="ablate: only these")
    args = parser.parse_args(argv)
    if args.stage == "ablate":
        ablate(args.dataset, args.work, args.epochs, args.arm)
    elif args.stage == "train":
        train_stage(args.dataset, args.work, args.hours, args.epochs, args.model)
    else:
        finish_stage(args.work, args.out, args.run)


if __name__ == "__main__":
    main()

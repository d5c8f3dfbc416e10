"""Train a detector with Ultralytics, fully offline, one run folder per training.

We start from a model YAML (random weights: no pretrained weights can be downloaded) or from our own
checkpoint (`.pt`), never from a hub name. Settings pinned for offline, CPU-friendly use:

- `plots=False`: Ultralytics' plots need the Arial font, which it would download.
- `amp=False` on CPU: the AMP check downloads `yolo11n.pt` (and AMP does nothing on CPU anyway).
- `workers` default 0 on CPU: data-loader processes compete with the training threads for few cores.
- `exist_ok=False`: every training gets its own run folder (`runs/train/<name>`, `<name>2`, ...).

Example (needs the `train` extra; takes about 10 s):
    >>> from training.synth import write_dataset
    >>> data = write_dataset("/tmp/doc-synth", n=6, size=(64, 64))      # doctest: +SKIP
    >>> run = train(data, model="yolov8n.yaml", epochs=1, imgsz=64)     # doctest: +SKIP
    >>> (run / "weights" / "last.pt").exists()                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from training.errors import TrainingInputError

log = logging.getLogger(__name__)

# Model configs Ultralytics ships (built from YAML, random init): the only non-path models we accept.
MODEL_CONFIGS: tuple[str, ...] = (
    "yolov8n.yaml",
    "yolov8s.yaml",
    "yolo11n.yaml",
    "yolo11s.yaml",
    "yolo26n.yaml",
    "yolo26s.yaml",
)


def check_model_source(model: str | Path) -> str:
    """Return the model argument for Ultralytics, or raise a plain-words error.

    Accepts a shipped config name from MODEL_CONFIGS, a path to a model YAML, or a path to our own `.pt`.
    Hub names like `yolov8n.pt` (which Ultralytics would try to download) are refused.
    """
    text = str(model)
    if text in MODEL_CONFIGS:
        return text
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml", ".pt"):
        if path.is_file():
            return str(path.resolve())
        if path.suffix == ".pt":
            raise TrainingInputError(
                f"model checkpoint {text!r} does not exist. Pretrained hub weights cannot be downloaded "
                f"here: start from a config ({', '.join(MODEL_CONFIGS)}) or give the path of your own .pt."
            )
        raise TrainingInputError(f"model config {text!r} is neither a shipped config nor an existing file")
    raise TrainingInputError(
        f"model {text!r} is not a model config (.yaml) or checkpoint (.pt); "
        f"use one of {', '.join(MODEL_CONFIGS)}"
    )


def check_data_yaml(data: str | Path) -> Path:
    """Check a dataset's `data.yaml` (or its folder) before Ultralytics reads it; returns its path."""
    path = Path(data).expanduser()
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise TrainingInputError(
            f"dataset {data}: no data.yaml found (make one with `edge-inspect dataset import`)"
        )
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainingInputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(cfg, dict):
        raise TrainingInputError(f"{path}: expected a mapping with path/train/val/names")
    for key in ("train", "val", "names"):
        if key not in cfg:
            raise TrainingInputError(f"{path}: missing key {key!r}")
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    for key in ("train", "val"):
        split_dir = root / str(cfg[key])
        if not split_dir.exists():
            raise TrainingInputError(f"{path}: {key} folder {split_dir} does not exist")
    return path


class MosaicBudget:
    """`--hours`: Ultralytics re-estimates the number of epochs from the time budget each epoch, but keeps
    `close_mosaic` (10) as an epoch count, so a 15-epoch budget ran most epochs without mosaic (the first,
    slow epoch makes the first estimate small). This keeps mosaic off for the same *share* of the run as
    `close_mosaic` / `epochs` asked for (10/100: the last 10 %), re-scaled to every new estimate."""

    def __init__(self, close_mosaic: int, epochs: int) -> None:
        self.fraction = close_mosaic / max(1, epochs) if close_mosaic > 0 else 0.0
        self.closed_at: int | None = None
        self.epochs_estimated: list[int] = []

    def epochs_without_mosaic(self, epochs: int) -> int:
        return max(1, round(epochs * self.fraction)) if self.fraction > 0 else 0

    def on_epoch_start(self, trainer: Any) -> None:
        epochs = int(trainer.epochs)
        self.epochs_estimated.append(epochs)
        if self.fraction > 0:
            trainer.args.close_mosaic = self.epochs_without_mosaic(epochs)
            if self.closed_at is None and trainer.epoch >= epochs - trainer.args.close_mosaic:
                self.closed_at = int(trainer.epoch)  # Ultralytics closes it right after this callback

    def summary(self) -> dict[str, Any]:
        return {"mosaic_closed_at_epoch": self.closed_at, "close_mosaic_fraction": round(self.fraction, 4)}

    def record(self, run_dir: Path, trainer: Any) -> None:
        """args.yaml (what the model card reads) says what the budget made of the run, not the start value."""
        args_file = run_dir / "args.yaml"
        if not args_file.is_file():
            return
        args = yaml.safe_load(args_file.read_text()) or {}
        completed = int(trainer.epoch) + 1
        args["epochs"] = completed
        args["close_mosaic"] = completed - self.closed_at if self.closed_at is not None else 0
        args_file.write_text(yaml.safe_dump(args, sort_keys=False))


def warn_if_val_is_train(data_yaml: Path) -> tuple[int, int]:
    """Log a loud warning when validation images are training images; returns (overlap, val images)."""
    from training.datasets import train_val_overlap

    try:
        overlap, n_val = train_val_overlap(data_yaml)
    except TrainingInputError:
        return 0, 0  # a layout we cannot list (Ultralytics will say what is wrong)
    if n_val and overlap:
        log.warning(
            "%s: %d of the %d validation images are also training images%s: the metrics will show what the "
            "model memorised, not how it does on new parts. Run `edge-inspect dataset split %s` first.",
            data_yaml,
            overlap,
            n_val,
            " (train and val are the same images)" if overlap == n_val else "",
            data_yaml.parent,
        )
    return overlap, n_val


def train(
    data: str | Path,
    model: str | Path = "yolov8n.yaml",
    epochs: int = 100,
    imgsz: int = 320,
    batch: int = 16,
    device: str = "cpu",
    project: str | Path = "runs/train",
    name: str = "exp",
    resume: bool = False,
    hours: float | None = None,
    workers: int | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Train and return the run folder (weights in `weights/best.pt` and `weights/last.pt`).

    `resume=True` continues the run whose `weights/last.pt` is given as `model` (or found in
    `project/name`). `hours` bounds the wall time; Ultralytics then fits the LR schedule to it.
    """
    from training.offline import ultralytics_offline

    ultralytics_offline()
    from ultralytics import YOLO

    if resume:
        last = (
            Path(str(model)) if str(model).endswith(".pt") else Path(project) / name / "weights" / "last.pt"
        )
        if not last.is_file():
            raise TrainingInputError(f"cannot resume: {last} does not exist")
        yolo = YOLO(str(last))
        yolo.train(resume=True)
        return Path(yolo.trainer.save_dir)

    data_yaml = check_data_yaml(data)
    overlap, n_val = warn_if_val_is_train(data_yaml)
    model_arg = check_model_source(model)
    on_cpu = str(device).lower() == "cpu"
    args: dict[str, Any] = {
        "data": str(data_yaml.resolve()),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": device,
        "project": str(Path(project).resolve()),
        "name": name,
        "exist_ok": False,
        "plots": False,
        "amp": not on_cpu,
        "workers": (0 if on_cpu else 4) if workers is None else workers,
        "seed": seed,
        "deterministic": False,
        "verbose": True,
    }
    if hours:
        args["time"] = float(hours)
    args.update(extra or {})
    yolo = YOLO(model_arg, task="detect")
    budget = MosaicBudget(int(args.get("close_mosaic", 10)), int(args["epochs"])) if hours else None
    if budget is not None:
        yolo.add_callback("on_train_epoch_start", budget.on_epoch_start)
    yolo.train(**args)
    run_dir = Path(yolo.trainer.save_dir)
    if budget is not None:
        budget.record(run_dir, yolo.trainer)
    (run_dir / "edge_inspect_train.json").write_text(
        json.dumps(
            {
                "model": str(model),
                "data": str(data_yaml.resolve()),
                "args": args,
                "val_images_in_train": overlap,
                "val_images": n_val,
                **(budget.summary() if budget is not None else {}),
            },
            indent=2,
            default=str,
        )
    )
    return run_dir

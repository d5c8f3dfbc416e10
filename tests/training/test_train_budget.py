"""`train --hours`: Ultralytics fits the epoch count to the time budget; close_mosaic must follow it (mosaic
off for the last ~10 % of the run, not for 10 epochs of a 15-epoch run), and args.yaml (what the model card
reads) must give the epochs the run really had. A real, tiny Ultralytics training under a time budget."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from training.synth import write_dataset

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="needs the [train] extra"),
]


def test_time_budget_scales_close_mosaic_and_the_recorded_epochs(tmp_path: Path) -> None:
    from training.train import train

    data = write_dataset(tmp_path / "data", n=8, size=(64, 64), seed=3, val_fraction=0.25)
    run = train(
        data,
        model="yolov8n.yaml",
        epochs=100,  # the default Ultralytics starts from; the budget replaces it
        imgsz=64,
        batch=4,
        project=tmp_path / "runs",
        name="budget",
        hours=0.005,  # 18 s
        extra={"val": False},
    )
    completed = len(list(csv.DictReader((run / "results.csv").open())))
    record = json.loads((run / "edge_inspect_train.json").read_text())
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == completed  # not 100
    closed_at = record["mosaic_closed_at_epoch"]
    assert closed_at is not None and record["close_mosaic_fraction"] == 0.1
    without = completed - closed_at
    assert args["close_mosaic"] == without
    # the last ~10 % (at least one epoch), give or take one epoch of re-estimation; never most of the run
    assert 1 <= without <= max(1, round(completed * 0.1)) + 1
    assert without < completed or completed == 1

"""Snags a new user hit: `dataset validate` exists and says what is wrong; `model show` is a summary (the
raw card with --json); `infer` names a bad path once."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from training.synth import write_dataset

REPO = Path(__file__).resolve().parents[2]


def test_dataset_validate_passes_a_good_dataset_and_names_bad_labels(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", n=10, size=(64, 64), seed=4, val_fraction=0.3)
    runner = CliRunner()
    ok = runner.invoke(app, ["dataset", "validate", str(data.parent)])
    assert ok.exit_code == 0, ok.output
    assert "train  7 images" in ok.output and "val    3 images" in ok.output and "OK" in ok.output

    label = sorted((data.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text("7 0.5 0.5 0.2 0.2\n0 1.4 0.5 0.2 0.2\nscratch here\n")
    (sorted((data.parent / "images" / "val").iterdir())[0]).write_bytes(b"not an image")
    bad = runner.invoke(app, ["dataset", "validate", str(data)])
    assert bad.exit_code == 1
    assert f"{label}:1: class 7 is not in names" in bad.output
    assert f"{label}:2: box 1.4 0.5 0.2 0.2 is not inside the image" in bad.output
    assert f"{label}:3: 'scratch here' is not 'class cx cy w h'" in bad.output
    assert "not a readable image" in bad.output and "4 error(s)" in bad.output


def test_model_show_is_a_summary_and_json_is_the_card() -> None:
    runner = CliRunner()
    short = runner.invoke(app, ["model", "show", "demo", "--registry", str(REPO / "models")])
    assert short.exit_code == 0, short.output
    assert len(short.output) < 1500 and "classes: scratch, pit, crack, stain" in short.output
    assert "fp32 on val" in short.output and "mAP50 0.991" in short.output
    full = runner.invoke(app, ["model", "show", "demo", "--registry", str(REPO / "models"), "--json"])
    assert json.loads(full.output)["name"] == "demo"


def test_infer_names_a_bad_path_once(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    result = CliRunner().invoke(app, ["infer", str(REPO / "models" / "demo" / "model.onnx"), str(missing)])
    assert result.exit_code == 1
    assert result.output.count(str(missing)) == 1 and "no such image file" in result.output

"""Train 1 epoch on tiny images -> export ONNX (+ INT8) with a card -> evaluate through `vision` -> promote.

Real Ultralytics training, real ONNX Runtime sessions, real files; about 30 s on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from training.errors import TrainingInputError
from training.synth import CLASSES, write_dataset

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="needs the [train] extra"),
]
REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "demo"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny training run (1 epoch, 64 px) exported with INT8 into a temporary registry."""
    from training.export import export_run
    from training.train import train

    root = tmp_path_factory.mktemp("pipeline")
    data = write_dataset(root / "data", n=12, size=(64, 64), seed=11, val_fraction=0.34, ok_probability=0.2)
    run = train(
        data,
        model="yolov8n.yaml",
        epochs=1,
        imgsz=64,
        batch=4,
        project=root / "runs",
        name="tiny",
        extra={"val": False},
    )
    card = export_run(
        run,
        root / "models" / "tiny",
        imgsz=64,
        eval_data=data,
        int8=True,
        dataset_citation="synthetic (tests)",
        description="1-epoch test model",
    )
    return {"root": root, "data": data, "run": run, "card": card}


def test_training_run_folder(trained: dict[str, Path]) -> None:
    run = trained["run"]
    assert (run / "weights" / "last.pt").is_file()
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["plots"] is False and args["amp"] is False and args["model"] == "yolov8n.yaml"
    assert json.loads((run / "edge_inspect_train.json").read_text())["args"]["imgsz"] == 64


def test_export_writes_onnx_int8_and_card(trained: dict[str, Path]) -> None:
    from vision import Model, read_image

    card = json.loads(trained["card"].read_text())
    folder = trained["card"].parent
    fp32, int8 = (
        Model(folder / "model.onnx", providers="cpu"),
        Model(folder / "model.int8.onnx", providers="cpu"),
    )
    assert card["classes"] == {str(i): n for i, n in enumerate(CLASSES)}
    assert card["task"] == "detect" and card["input"]["imgsz"] == [64, 64]
    assert card["files"]["fp32"]["sha256"] == fp32.sha256
    assert card["files"]["int8"]["sha256"] == int8.sha256
    assert int8.names == fp32.names and int8.imgsz == fp32.imgsz  # metadata carried over to the INT8 file
    assert set(card["metrics"]) == {"fp32", "int8"}
    assert card["speed"]["fp32_ms_per_image"] > 0 and card["speed"]["int8_ms_per_image"] > 0
    assert len(card["dataset"]["content_sha256"]) == 64 and card["dataset"]["citation"]
    assert card["training"]["args"]["epochs"] == 1 and card["training"]["epochs_completed"] == 1
    assert {"ultralytics", "torch", "onnxruntime", "onnx"} <= set(card["versions"])
    for name in ("pr_curve", "confusion_matrix"):
        assert (folder / card["metrics"]["fp32"]["plots"][name]).read_bytes()[:4] == b"\x89PNG"
    # the INT8 file is a real quantized graph that runs through the edge runtime
    img = read_image(next((trained["data"].parent / "images" / "val").iterdir()))
    assert int8.predict(img, conf=0.001).detections.xyxy.shape[1] == 4
    import onnx

    ops = {n.op_type for n in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_int8_keeps_head_decoding_float_and_its_conv_blocks_quantized(trained: dict[str, Path]) -> None:
    import onnx

    from training.export import head_postprocess_nodes

    fp32 = trained["card"].parent / "model.onnx"
    excluded = set(head_postprocess_nodes(fp32))
    graph = onnx.load(str(fp32)).graph
    head = [n for n in graph.node if n.name.startswith("/model.22/")]  # YOLOv8's Detect
    assert {n.name for n in head if n.op_type == "Softmax"} <= excluded  # the DFL decoding stays float
    acts = {n.name for n in head if "/act/" in n.name}
    assert acts and not acts & excluded  # SiLUs between two head convs are quantized with them
    assert not {n.name for n in head if n.op_type == "Conv"} & excluded
    quantized = onnx.load(str(trained["card"].parent / "model.int8.onnx")).graph
    inputs_of = {i for n in quantized.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert any(a.startswith("/model.22/cv2.0/cv2.0.0/act/") for a in inputs_of)


def test_evaluate_reports_metrics_and_factory_rates(trained: dict[str, Path], tmp_path: Path) -> None:
    from training.evaluate import evaluate

    onnx = trained["card"].parent / "model.onnx"
    report = evaluate(onnx, trained["data"], split="val", decision_conf=0.0005, out_dir=tmp_path)
    assert report.images == 4 and report.ng_images + report.ok_images == 4
    assert 0 <= report.map50 <= 1 and 0 <= report.map50_95 <= report.map50 + 1e-9
    assert len(report.confusion_matrix) == len(CLASSES) + 1
    assert report.escape_rate is not None and 0 <= report.escape_rate <= 1
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["map50"] == report.map50 and saved["model_sha256"] == report.model_sha256
    # at a confidence nothing reaches, every NG image escapes and no OK image is rejected
    strict = evaluate(onnx, trained["data"], split="val", decision_conf=1.0)
    assert strict.escape_rate == 1.0
    assert strict.false_reject_rate in (0.0, None)


def test_evaluate_refuses_mismatched_classes(trained: dict[str, Path], tmp_path: Path) -> None:
    from training.evaluate import evaluate

    other = tmp_path / "other"
    shutil.copytree(trained["data"].parent, other)
    cfg = yaml.safe_load((other / "data.yaml").read_text())
    cfg["names"] = {0: "a", 1: "b", 2: "c", 3: "d"}
    cfg["path"] = str(other)
    (other / "data.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(TrainingInputError, match="do not match"):
        evaluate(trained["card"].parent / "model.onnx", other)


def test_train_refuses_hub_names_and_missing_data(tmp_path: Path) -> None:
    from training.train import check_data_yaml, check_model_source

    with pytest.raises(TrainingInputError, match="cannot be downloaded"):
        check_model_source("yolov8n.pt")
    with pytest.raises(TrainingInputError, match=r"no data\.yaml"):
        check_data_yaml(tmp_path)
    assert check_model_source("yolo11n.yaml") == "yolo11n.yaml"


def test_conf_for_escape_target() -> None:
    from training.evaluate import conf_for_escape_target

    ng, ok = np.array([0.9, 0.8, 0.6, 0.2]), np.array([0.7, 0.1, 0.05])
    assert conf_for_escape_target(ng, ok, 0.0) == (0.2, pytest.approx(1 / 3))
    assert conf_for_escape_target(ng, ok, 0.25) == (0.6, pytest.approx(1 / 3))
    assert conf_for_escape_target(np.array([0.0, 0.5]), ok, 0.0) == (None, None)  # one NG never detected


# ------------------------------------------------------------------------------------------ promote
LINE_TEMPLATE = """\
# a line file: this comment and the layout must survive promotion
name: test-line
cameras:
  - name: top
    source: {{type: folder, path: ., mode: once}}
model:
  path: {model}   # the model in use
  conf: 0.25
recipes:
  standard:
    min_confidence: 0.3
    classes:
{rules}
"""


def _line(tmp_path: Path, model: Path, rules: str = "      pit: {max_count: 1}") -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(LINE_TEMPLATE.format(model=model, rules=rules))
    return path


def test_promote_refuses_classes_the_rules_use_but_the_model_lacks(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from training.registry import PromotionRefused, promote

    line = _line(tmp_path, tmp_path / "none.onnx", rules="      dent: {max_count: 0}")
    before = line.read_text()
    with pytest.raises(PromotionRefused, match="dent"):
        promote("tiny", line, registry=trained["root"] / "models")
    assert line.read_text() == before


@pytest.fixture
def registry_with_demo(trained: dict[str, Path], tmp_path: Path) -> Path:
    if not (DEMO_MODEL / "model.json").is_file():
        pytest.skip("models/demo not committed yet")
    registry = tmp_path / "models"
    shutil.copytree(trained["root"] / "models" / "tiny", registry / "tiny")
    shutil.copytree(DEMO_MODEL, registry / "demo")
    # a common evaluation set the demo model does well on, with defect-free parts for false rejects
    write_dataset(tmp_path / "evalset", n=9, size=(320, 320), seed=99, val_fraction=1.0, ok_probability=0.34)
    return registry


def test_promote_refuses_a_worse_model_then_force_is_recorded(
    registry_with_demo: Path, tmp_path: Path
) -> None:
    from training.registry import PromotionRefused, promote

    line = _line(tmp_path, registry_with_demo / "demo" / "model.onnx")
    before = line.read_text()
    with pytest.raises(PromotionRefused, match="worse than the line's current model"):
        promote("tiny", line, registry=registry_with_demo, data=tmp_path / "evalset")
    assert line.read_text() == before

    res = promote(
        "tiny",
        line,
        registry=registry_with_demo,
        data=tmp_path / "evalset",
        force=True,
        reason="test of --force",
    )
    assert res.forced and res.candidate_map50 < res.current_map50
    text = line.read_text()
    assert "# a line file: this comment" in text and "# the model in use" in text
    assert yaml.safe_load(text)["model"]["path"] == "models/tiny/model.onnx"
    card = json.loads((registry_with_demo / "tiny" / "model.json").read_text())
    assert card["promotions"][-1]["forced"] is True and card["promotions"][-1]["reason"] == "test of --force"


def test_promote_via_cli_passes_the_gate_and_shows_the_diff(registry_with_demo: Path, tmp_path: Path) -> None:
    """A candidate exactly as good as the line's model (the same weights, registered again) passes the
    gate; the CLI prints the gate's figures and the line file's diff."""
    from edge_agent.cli import app

    shutil.copytree(registry_with_demo / "tiny", registry_with_demo / "tiny-again")
    line = _line(tmp_path, registry_with_demo / "tiny" / "model.onnx")
    runner = CliRunner()
    args = ["model", "promote", "tiny-again", "--line", str(line), "--registry", str(registry_with_demo)]
    res = runner.invoke(app, [*args, "--data", str(tmp_path / "evalset")])
    assert res.exit_code == 0, res.output
    assert "candidate" in res.output and "current" in res.output and "false reject" in res.output
    assert "+  path: models/tiny-again/model.onnx" in res.output
    assert "min_confidence" in res.output
    assert yaml.safe_load(line.read_text())["model"]["path"] == "models/tiny-again/model.onnx"
    res = runner.invoke(app, ["model", "list", "--registry", str(registry_with_demo)])
    assert res.exit_code == 0 and "demo" in res.output and "tiny" in res.output
    res = runner.invoke(
        app,
        ["model", "promote", "tiny", "--line", str(line), "--registry", str(registry_with_demo), "--force"],
    )
    assert res.exit_code == 2 and "--reason" in res.output


def test_cli_evaluate_and_plain_errors(trained: dict[str, Path], tmp_path: Path) -> None:
    from edge_agent.cli import app

    runner = CliRunner()
    onnx = trained["card"].parent / "model.onnx"
    res = runner.invoke(app, ["evaluate", str(onnx), str(trained["data"]), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "mAP50" in res.output and "escape rate" in res.output
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    res = runner.invoke(app, ["train", str(trained["data"]), "--model", "yolov8n.pt"])
    assert res.exit_code == 2 and "cannot be downloaded" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "no weights/best.pt" in res.output
    res = runner.invoke(app, ["model", "show", "nope", "--registry", str(tmp_path)])
    assert res.exit_code == 2 and "no model.json" in res.output


def test_promote_writes_the_operating_point_into_the_recipe(registry_with_demo: Path, tmp_path: Path) -> None:
    from training.registry import PromotionRefused, promote

    line = _line(tmp_path, registry_with_demo / "demo" / "model.onnx", rules="      stain: {max_count: 2}")
    with pytest.raises(PromotionRefused, match="worse than the line's current model"):
        promote("tiny", line, registry=registry_with_demo, data=tmp_path / "evalset")
    res = promote(
        "tiny", line, registry=registry_with_demo, data=tmp_path / "evalset", force=True, reason="test"
    )
    card = json.loads((registry_with_demo / "tiny" / "model.json").read_text())
    point = card["metrics"]["fp32"]["operating_point"]
    assert card["operating_point"]["thresholds"] == point["thresholds"]
    assert res.thresholds == point["thresholds"]
    doc = yaml.safe_load(line.read_text())
    rules = doc["recipes"]["standard"]["classes"]
    for name, t in point["thresholds"].items():
        assert rules[name]["min_confidence"] == pytest.approx(round(t, 3))
    assert rules["stain"]["max_count"] == 2  # the existing rule kept, threshold added beside it
    assert doc["model"]["conf"] <= min(r["min_confidence"] for r in rules.values())
    text = line.read_text()
    assert "# a line file: this comment" in text and "# the model in use" in text
    assert "+      stain: {max_count: 2, min_confidence:" in res.diff
    assert card["promotions"][-1]["thresholds_written"] == point["thresholds"]
    assert card["promotions"][-1]["gate"]["ran"] is True


def test_promote_is_refused_when_the_gate_cannot_run(trained: dict[str, Path], tmp_path: Path) -> None:
    from training.registry import PromotionRefused, promote

    registry = tmp_path / "models"
    shutil.copytree(trained["root"] / "models" / "tiny", registry / "tiny")
    line = _line(tmp_path, tmp_path / "gone" / "model.onnx")  # the line's model is not on this machine
    before = line.read_text()
    missing = r"gate cannot run because the line's current model .* missing"
    with pytest.raises(PromotionRefused, match=missing):
        promote("tiny", line, registry=registry)
    assert line.read_text() == before
    res = promote("tiny", line, registry=registry, force=True, reason="new machine, old model lost")
    assert res.gate is not None and not res.gate.ran and "forced without a gate" in res.message
    assert yaml.safe_load(line.read_text())["model"]["path"] == "models/tiny/model.onnx"


def test_gate_tolerance_for_precision_variants(trained: dict[str, Path]) -> None:
    from training.registry import (
        PRECISION_VARIANT_TOLERANCE,
        GateSide,
        GateTolerance,
        compare_sides,
        is_precision_variant,
        resolve_model,
    )

    folder = trained["root"] / "models" / "tiny"
    int8 = resolve_model(folder / "model.int8.onnx")
    assert is_precision_variant(int8, folder / "model.onnx")
    if (DEMO_MODEL / "model.onnx").is_file():
        assert not is_precision_variant(int8, DEMO_MODEL / "model.onnx")
    fp32 = GateSide("model.onnx", 0.950, 0.010, 0.020, {}, True)
    quantized = GateSide("model.int8.onnx", 0.945, 0.010, 0.025, {}, True)  # 0.005 mAP50 below its twin
    failures, _ = compare_sides(quantized, fp32, GateTolerance())
    assert len(failures) == 2  # independent trainings: no allowance
    assert compare_sides(quantized, fp32, PRECISION_VARIANT_TOLERANCE) == ([], [])
    worse = GateSide("model.int8.onnx", 0.93, 0.03, 0.02, {}, True)
    failures, _ = compare_sides(worse, fp32, PRECISION_VARIANT_TOLERANCE)
    assert any("escape" in f for f in failures) and any("mAP50" in f for f in failures)


def test_model_show_gives_the_operating_point(trained: dict[str, Path]) -> None:
    from edge_agent.cli import app

    res = CliRunner().invoke(app, ["model", "show", "tiny", "--registry", str(trained["root"] / "models")])
    assert res.exit_code == 0, res.output
    assert "operating point for escape <= 0.010: scratch " in res.output

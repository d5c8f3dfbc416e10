"""Anomaly models from good parts (issue 29): a real, tiny torch training on images our generator makes,
the ONNX export against the contract (docs/anomaly.md), resume, the metrics and the operating point on
known arrays, the config file's errors, the CLI, the promotion gate, and KolektorSDD's layout when
../shared is here.

The training tests assert separation on a fixed seed and a fixed number of steps, never a wall time."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from training.anomaly.images import mvtec_eval_set, read_mask
from training.anomaly.metrics import (
    aupro,
    auroc,
    escape_at_false_reject,
    operating_point,
    roc_curve,
    threshold_for_false_reject,
)
from training.errors import TrainingInputError

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the [train] extra")
KOLEKTOR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "kolektorsdd"
SIZE = 64
STEPS = 120


# ------------------------------------------------------------------------------------------ metrics
def test_auroc_matches_counting_pairs_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(300), 1)  # many ties
    labels = rng.random(300) < scores
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(scores, labels) == pytest.approx(pairs, abs=1e-12)
    assert auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert auroc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    fpr, tpr, _ = roc_curve(scores, labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(pairs, abs=1e-12)


def test_threshold_for_false_reject_and_the_rates_it_gives() -> None:
    good = np.arange(100) / 100.0  # 0.00 ... 0.99
    bad = np.array([0.5, 0.985, 0.995, 2.0])
    t1 = threshold_for_false_reject(good, 0.01)  # one good part (0.99) may be rejected
    assert 0.98 < t1 <= 0.99 and (good >= t1).sum() == 1
    t0 = threshold_for_false_reject(good, 0.0)
    assert (good >= t0).sum() == 0 and t0 > 0.99
    t5 = threshold_for_false_reject(good, 0.05)
    assert (good >= t5).sum() == 5
    point = operating_point(good, good, bad, target=0.01)
    assert point.image_threshold == t1 and point.false_reject_rate == 0.01 and point.false_rejects == 1
    assert point.escapes == 1 and point.escape_rate == 0.25  # only 0.5 is under 0.98+
    assert point.pixel_threshold == t1 and not point.notes  # 100 good parts resolve 1 %
    few = operating_point(good[:20], good, bad, target=0.01)
    assert few.notes and "cannot resolve" in few.notes[0]
    curve = escape_at_false_reject(good, bad)
    assert [round(v["false_reject_rate"], 2) for v in curve.values()] == [0.01, 0.02, 0.05]
    assert curve["0.05"]["escape_rate"] == 0.25


def test_aupro_is_one_for_a_perfect_map_and_low_for_noise() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:10, 5:30] = True  # two regions of very different size: each counts the same
    masks[1, 20:22, 20:22] = True
    perfect = masks.astype(np.float32) + 0.01 * rng.random(masks.shape).astype(np.float32)
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=1e-6)
    noise = rng.random(masks.shape).astype(np.float32)
    assert 0.05 < aupro(noise, masks) < 0.3  # chance: PRO = FPR, area 0.15
    half = perfect.copy()
    half[1][masks[1]] = 0.0  # the small region is missed (scored under every good pixel), the large one found
    assert aupro(half, masks) == pytest.approx(0.5, abs=0.01)
    assert np.isnan(aupro(noise, np.zeros_like(masks)))


# ------------------------------------------------------------------------------------------ config
def test_defect_config_errors_name_the_kind_and_key(tmp_path: Path) -> None:
    from training.anomaly.config_file import read_config_file
    from training.anomaly.defects import parse_defects

    specs = parse_defects({"crack": {"share": 2, "size": [0.2, 0.5], "polarity": "dark"}, "pit": None})
    assert [s.kind for s in specs] == ["crack", "pit"] and specs[0].size == (0.2, 0.5)
    with pytest.raises(TrainingInputError, match="unknown kind 'dent'"):
        parse_defects(["crack", "dent"])
    with pytest.raises(TrainingInputError, match=r"defects.crack.size"):
        parse_defects({"crack": {"size": [0.9, 0.1]}})
    with pytest.raises(TrainingInputError, match="polarity"):
        parse_defects({"pit": {"polarity": "grey"}})
    cfg = tmp_path / "line.yaml"
    cfg.write_text("imgsz: [64, 64]\nhours: 0.1\ndefect:\n  crack: {}\n")
    with pytest.raises(
        TrainingInputError, match=r"line.yaml:3: unknown key 'defect' \(did you mean 'defects'"
    ):
        read_config_file(cfg)


def test_synthesised_defects_follow_the_spec() -> None:
    from training.anomaly.defects import parse_defects, synthesise

    rng = np.random.default_rng(3)
    good = np.full((96, 96, 3), 128, np.uint8)
    dark = parse_defects({"crack": {"contrast": [40, 40], "polarity": "dark"}})
    for _ in range(10):
        img, mask = synthesise(rng, good, dark, max_defects=1)
        assert mask.any() and img[mask.astype(bool)].mean() < 128 - 15  # darker where the mask says
        assert (img[~cv2_dilate(mask)] == 128).all()  # nothing painted away from the defect
    big_good = np.full((192, 192, 3), 128, np.uint8)
    small = parse_defects({"scratch": {"size": [0.25, 0.25]}})
    big = parse_defects({"scratch": {"size": [1.0, 1.0]}})
    area = [np.mean([synthesise(rng, big_good, s, 1)[1].sum() for _ in range(30)]) for s in (small, big)]
    assert area[1] > 3 * area[0]  # 4x longer (and no thinner)


def cv2_dilate(mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny training shared by the tests below: 64 px plastic parts, 120 steps, then export."""
    pytest.importorskip("torch")
    from training.anomaly.card import package_model
    from training.anomaly.synth_set import write_anomaly_set
    from training.anomaly.train import AnomalyTrainConfig, train_anomaly

    d = tmp_path_factory.mktemp("anomaly")
    root = write_anomaly_set(
        d / "data", n_train=24, n_test_good=20, n_test_defect=20, sizes=((SIZE, SIZE),), seed=1,
        surface_kind="plastic",
    )  # fmt: skip
    cfg = AnomalyTrainConfig(
        good=str(root), imgsz=(SIZE, SIZE), batch=8, max_steps=STEPS, hours=1.0, threads=1, held_out=0.2
    )
    lines: list[str] = []
    run = train_anomaly(cfg, d / "run", echo=lines.append)
    card_path, report = package_model(run, d / "models" / "tiny", mvtec_eval_set(root))
    return {"root": root, "run": run, "card": card_path, "report": report, "log": lines, "dir": d}


@pytest.mark.train
@needs_torch
def test_tiny_model_separates_the_generators_defects(tiny: dict) -> None:
    report = tiny["report"]
    # trained on good parts and its own painted defects only; the generator's defects are new to it
    assert report.good_images == 20 and report.defect_images == 20 and report.masked_images == 20
    assert report.image_auroc >= 0.8, report.summary()
    assert report.pixel_auroc is not None and report.pixel_auroc > 0.55  # better than chance
    assert report.aupro is not None and 0 < report.aupro <= 1
    point = report.operating_point
    assert point.held_out_good == 5 and point.held_out_false_reject_rate == 0.0
    assert point.escape_rate is not None and point.escape_rate < 0.5
    assert {"roc", "scores", "examples"} <= set(report.plots)
    assert all(Path(p).stat().st_size > 1000 for p in report.plots.values())
    assert any(line.startswith("training on 19 good images (5 held out") for line in tiny["log"])
    assert "done: 120 steps" in tiny["log"][-1]


@pytest.mark.train
@needs_torch
def test_export_follows_the_contract_and_matches_torch(tiny: dict) -> None:
    import onnx
    import torch

    from training.anomaly.evaluate import score_images
    from training.anomaly.images import read_rgb
    from training.anomaly.net import image_scores
    from training.anomaly.train import load_net
    from vision import load_model

    onnx_path = tiny["card"].parent / "model.onnx"
    card = json.loads(tiny["card"].read_text())
    proto = onnx.load(str(onnx_path))
    (inp,) = proto.graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "input" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[1:] == [3, SIZE, SIZE]
    assert [o.name for o in proto.graph.output] == ["pred_score", "anomaly_map"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["edge_inspect_kind"] == "anomaly" and meta["imgsz"] == f"[{SIZE}, {SIZE}]"
    assert meta["name"] == "tiny" and meta["version"] == card["version"]
    assert float(meta["image_threshold"]) == card["thresholds"]["image"]
    assert float(meta["pixel_threshold"]) == card["thresholds"]["pixel"]
    assert (
        card["task"] == "anomaly"
        and card["operating_point"]["image_threshold"] == card["thresholds"]["image"]
    )
    from vision.digest import file_sha256

    assert card["files"]["fp32"]["sha256"] == file_sha256(onnx_path)

    model = load_model(onnx_path, providers="cpu")
    assert model.task == "anomaly" and model.imgsz == (SIZE, SIZE)
    assert model.image_threshold == card["thresholds"]["image"]
    defects = sorted((tiny["root"] / "test" / "defect").glob("*.png"))[:4]
    via_vision = score_images(model, defects)
    net, cfg, _ = load_net(tiny["run"])
    x = np.stack([read_rgb(p, (SIZE, SIZE)) for p in defects]).transpose(0, 3, 1, 2) / 255.0
    with torch.inference_mode():
        logits = net(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(via_vision.maps, torch.sigmoid(logits)[:, 0].numpy(), atol=1e-4)
    np.testing.assert_allclose(via_vision.scores, image_scores(logits, cfg.pool).numpy(), atol=1e-4)
    # the line's view: a part over the threshold has regions
    pred = model.predict(__import__("cv2").imread(str(defects[int(np.argmax(via_vision.scores))])))
    assert pred.anomaly.anomalous and len(pred.detections) >= 1


@pytest.mark.train
@needs_torch
def test_resume_continues_where_the_checkpoint_left_off(tiny: dict) -> None:
    import torch

    from training.anomaly.train import AnomalyTrainConfig, load_net, train_anomaly

    base = {"good": str(tiny["root"]), "imgsz": (32, 32), "batch": 4, "hours": 100.0, "threads": 1,
            "max_steps": 12, "log_every_s": 0.0, "save_every_s": 0.0}  # fmt: skip
    straight = train_anomaly(AnomalyTrainConfig(**base), tiny["dir"] / "straight", echo=lambda s: None)

    class Interrupted(Exception):
        pass

    def stop_at_step_6(line: str) -> None:
        if line.startswith("step      6 "):
            raise Interrupted  # as a crash or Ctrl-C would, between two checkpoints

    with pytest.raises(Interrupted):
        train_anomaly(AnomalyTrainConfig(**base), tiny["dir"] / "resumed", echo=stop_at_step_6)
    first = tiny["dir"] / "resumed"
    assert load_net(first)[2]["step"] == 5  # the last checkpoint before the interruption
    with pytest.raises(TrainingInputError, match="already holds a run"):
        train_anomaly(AnomalyTrainConfig(**base), first, echo=print)
    train_anomaly(None, first, resume=True, echo=print)
    a, _, _ = load_net(straight)
    b, cfg_b, info_b = load_net(first)
    assert info_b["step"] == 12 and cfg_b.max_steps == 12 and cfg_b.imgsz == (32, 32)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        # same batches, optimiser state and step-driven learning rate: the same network
        assert torch.allclose(pa.float(), pb.float(), atol=1e-5), name
    with pytest.raises(TrainingInputError, match="cannot resume"):
        train_anomaly(None, tiny["dir"] / "nothing-here", resume=True)


@pytest.mark.train
@needs_torch
def test_cli_train_evaluate_and_gated_promotion(tiny: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_agent.cli import app

    runner = CliRunner()
    root = tiny["root"]
    out = tmp_path / "models" / "cli"
    res = runner.invoke(
        app,
        ["anomaly", "train", str(root), "--out", str(out), "--run", str(tmp_path / "run"), "--imgsz", "32",
         "--max-steps", "5", "--threads", "1", "--defects", "crack,pit", "--eval", str(root)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        "image AUROC" in res.output
        and (out / "model.onnx").is_file()
        and (out / "eval" / "roc.png").is_file()
    )
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["config"]["defects"] == ["crack", "pit"] and card["training"]["steps"] == 5
    res = runner.invoke(app, ["anomaly", "evaluate", str(out / "model.onnx"), "--eval", str(root), "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["anomaly", "train", str(root), "--out", str(out), "--defects", "dent"])
    assert res.exit_code == 2 and "unknown kind 'dent'" in res.output

    # promotion: the 5-step model is worse than the 120-step one on the same set: refused, then allowed forced
    line = tmp_path / "line.yaml"
    line.write_text(f"name: t\nmodel:\n  path: {tiny['card'].parent / 'model.onnx'}  # the good one\n")
    res = runner.invoke(
        app, ["model", "promote", str(out), "--line", str(line), "--registry", str(out.parent)]
    )
    assert res.exit_code == 2 and "worse than the line's current model" in res.output, res.output
    res = runner.invoke(
        app, ["model", "promote", str(out), "--line", str(line), "--registry", str(out.parent), "--force",
              "--reason", "test"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "# the good one" in line.read_text() and str(out / "model.onnx") not in line.read_text()
    assert "models/cli/model.onnx" in line.read_text()
    assert json.loads((out / "model.json").read_text())["promotions"][0]["forced"] is True
    # a model no worse than the current one (the same network, copied into the registry) passes the gate
    import shutil

    from training.registry import promote

    line.write_text(f"name: t\nmodel:\n  path: {tiny['card'].parent / 'model.onnx'}\n")
    shutil.copytree(tiny["card"].parent, tmp_path / "models" / "copy")
    result = promote("copy", line, registry=tmp_path / "models")
    assert result.gate.ran and not result.gate.failures, result.gate.summary()
    assert result.gate.candidate.escape_rate == result.gate.current.escape_rate
    assert "models/copy/model.onnx" in line.read_text()
    # beside a detector: the `anomaly:` section's path is the one replaced, the detector stays
    detector = Path(__file__).resolve().parents[2] / "models" / "demo" / "model.onnx"
    line.write_text(
        f"name: t\nmodel:\n  path: {detector}\nanomaly:\n  path: {tiny['card'].parent / 'model.onnx'}"
        "  # beside\n"
    )
    result = promote("copy", line, registry=tmp_path / "models")
    text = line.read_text()
    assert result.gate.ran and f"path: {detector}" in text
    assert re.search(r"anomaly:\n  path: models/copy/model.onnx +# beside", text), text


# ------------------------------------------------------------------------------------------ KolektorSDD
@pytest.mark.skipif(not KOLEKTOR.is_dir(), reason="../shared/datasets/kolektorsdd not present")
def test_kolektorsdd_layout_and_thin_cracks_survive_resizing() -> None:
    es = mvtec_eval_set(KOLEKTOR)
    assert len(es.good) == 70 and len(es.defects) == 52 and all(m is not None for m in es.masks)
    # at the model's 640 x 256 every crack (1-2 px wide at 500 px) still has pixels in its mask
    areas = [int(read_mask(m, (640, 256)).sum()) for m in es.masks]
    assert min(areas) > 0


# ------------------------------------------------------------------------------------------ line data
def test_good_images_from_the_archive_and_reviews_as_an_evaluation_set(tmp_path: Path) -> None:
    import cv2

    from contract.archive_layout import camera_file, part_location
    from training.anomaly.archive_good import collect_good
    from training.anomaly.images import eval_set_from_path

    img = np.zeros((8, 8, 3), np.uint8)
    for seq, verdict in enumerate(["OK", "NG", "OK", "OK"]):
        folder, stem = part_location(tmp_path / "archive", "line 1", "2026-03-01", seq, f"P_{seq}", verdict)
        folder.mkdir(parents=True, exist_ok=True)
        for cam in ("top", "side"):
            cv2.imwrite(str(folder / camera_file(stem, cam, ".jpg")), img)
            cv2.imwrite(str(folder / camera_file(stem, cam, ".jpg", "_annotated")), img)
    copies = collect_good(tmp_path / "archive", tmp_path / "good", "line 1", camera="top", limit=2)
    assert [c.name for c in copies] == [
        "2026-03-01_0000000003_P_3_OK_top.jpg",
        "2026-03-01_0000000002_P_2_OK_top.jpg",
    ]
    assert len(collect_good(tmp_path / "archive", tmp_path / "all", "line 1")) == 6  # 3 OK parts x 2 cameras
    with pytest.raises(TrainingInputError, match="no archived OK images of camera front"):
        collect_good(tmp_path / "archive", tmp_path / "x", "line 1", camera="front")
    # `dataset anomaly-from-reviews` writes good/ and ng/: an evaluation set as it is
    (tmp_path / "reviewed" / "ng").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "reviewed" / "ng" / "a.jpg"), img)
    es = eval_set_from_path(tmp_path / "reviewed")
    assert es.good == [] and [p.name for p in es.defects] == ["a.jpg"] and es.masks == [None]
    with pytest.raises(TrainingInputError, match="not an evaluation set"):
        eval_set_from_path(tmp_path / "good")

"""The OpenVINO backend for real: OpenVINO's CPU plugin on the shipped demo model (and an anomaly model),
its compiled-model cache, INT8 by NNCF, the accuracy gate and `auto` tuning (docs/openvino.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vision import ModelLoadError, load_model, read_image
from vision.postprocess import box_iou
from vision.runtime import REFERENCE, Runtime, cpu_identity

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")

from vision.openvino_session import (
    OpenVINOSession,
    available_devices,
    calibration_tensors,
    int8_ir_path,
    quantize_int8,
)
from vision.runtime_gate import check_runtime

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model and its card in a folder of their own (the gate writes into the card)."""
    folder = tmp_path_factory.mktemp("demo")
    shutil.copy(DEMO / "model.onnx", folder / "model.onnx")
    card = json.loads((DEMO / "model.json").read_text())
    card.pop("runtimes", None)  # no gate results yet: each test gates what it needs
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def test_images() -> list[np.ndarray]:
    """The shipped sample images and generated parts of other shapes (other letterbox paddings)."""
    from training.synth import make_sample

    rng = np.random.default_rng(3)
    shipped = [read_image(p) for p in sorted((REPO / "images").glob("*.jpg"))]
    made = [make_sample(rng, size, ok_probability=0.2)[0] for size in ((320, 320), (240, 400), (500, 300))]
    return shipped + made


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small evaluation set from the demo's test generator (its seed; 60 images, a third OK)."""
    from training.synth import write_dataset

    folder = tmp_path_factory.mktemp("eval")
    return write_dataset(folder, n=60, size=(320, 320), seed=1234, val_fraction=1.0, ok_probability=1 / 3)


@pytest.fixture(scope="module")
def int8_ir(demo_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenVINO INT8 of the demo model, calibrated on 64 parts (as the command) from the demo's generator."""
    from training.synth import make_sample

    rng = np.random.default_rng(7)
    images = [make_sample(rng, (320, 320))[0] for _ in range(64)]
    reference = load_model(demo_copy, providers="cpu")
    return quantize_int8(demo_copy, calibration_tensors(reference, images), source="synth seed 7")


def _same_detections(want, got, iou_min: float, conf_tol: float) -> None:
    assert len(got) == len(want), (want.confidence, got.confidence)
    for box, conf, cls in zip(want.xyxy, want.confidence, want.class_id, strict=True):
        ious = box_iou(box, got.xyxy)
        best = int(np.argmax(ious))
        assert ious[best] >= iou_min and got.class_id[best] == cls, (box, got.xyxy[best])
        assert abs(float(got.confidence[best]) - float(conf)) <= conf_tol


def test_f32_gives_onnxruntimes_boxes(demo_copy: Path, test_images: list[np.ndarray], tmp_path: Path) -> None:
    ort_model = load_model(demo_copy, providers="cpu", threads=1)
    ov_model = load_model(demo_copy, backend="openvino", precision="f32", threads=1, cache_dir=tmp_path)
    assert ov_model.runtime == Runtime("openvino", "CPU", "f32")
    assert ov_model.providers == ["OpenVINO:CPU:f32"]
    assert ov_model.names == ort_model.names and ov_model.imgsz == ort_model.imgsz
    found = 0
    for image in test_images:
        want, got = ort_model.predict(image).detections, ov_model.predict(image).detections
        _same_detections(want, got, iou_min=0.99, conf_tol=1e-3)
        found += len(want)
    assert found >= 10  # the comparison covered real detections, not empty lists
    # a batch through one call (dynamic batch axis) as well
    batch = ov_model.predict_batch(test_images[:3])
    for want, pred in zip(ort_model.predict_batch(test_images[:3]), batch, strict=True):
        _same_detections(want.detections, pred.detections, 0.99, 1e-3)


def test_compiled_model_cache_is_written_then_read(demo_copy: Path, tmp_path: Path) -> None:
    first = OpenVINOSession(demo_copy, precision="f32", cache_dir=tmp_path)
    assert not first.loaded_from_cache and first.cache_dir == tmp_path / "openvino"
    blobs = {p: p.stat().st_mtime_ns for p in first.cache_dir.iterdir()}
    assert blobs and all(p.stat().st_size > 0 for p in blobs)
    second = OpenVINOSession(demo_copy, precision="f32", cache_dir=tmp_path)
    assert second.loaded_from_cache  # OpenVINO imported the blob instead of compiling
    assert {p: p.stat().st_mtime_ns for p in first.cache_dir.iterdir()} == blobs  # read, not rewritten
    # a fresh process (a restart) reads it too
    code = (
        "import sys; from vision.openvino_session import OpenVINOSession as S; "
        f"print(S({str(demo_copy)!r}, cache_dir={str(tmp_path)!r}).loaded_from_cache)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "True"


def test_nothing_is_sent_or_written_for_telemetry(demo_copy: Path, tmp_path: Path) -> None:
    """OpenVINO and NNCF load their telemetry on import; ours blocks it: no module, no ~/intel files."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys\n"
        "from vision.openvino_session import OpenVINOSession\n"
        f"OpenVINOSession({str(demo_copy)!r}, cache_dir=False)\n"
        "import nncf, nncf.telemetry.wrapper as w\n"
        "print(sys.modules['openvino_telemetry'] is None, type(w.telemetry).__name__)\n"
    )
    env = {**os.environ, "HOME": str(home)}
    env.pop("NNCF_CI", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True
    )
    assert out.stdout.split() == ["True", "MagicMock"]
    assert not list(home.rglob("*")), list(home.rglob("*"))  # no consent, client id or stats file


def test_vision_imports_and_runs_without_openvino() -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from vision import load_model, ModelLoadError\n"
        "m = load_model('models/demo/model.onnx', providers='cpu'); print(m.runtime)\n"
        "try:\n    load_model('models/demo/model.onnx', backend='openvino')\n"
        "except ModelLoadError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == "onnxruntime:CPU:f32"
    assert "pip install 'edge-inspect[openvino]'" in second


def test_int8_needs_its_ir_and_says_how_to_make_it(tmp_path: Path) -> None:
    shutil.copy(DEMO / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError, match="edge-inspect model quantize-openvino"):
        load_model(tmp_path / "model.onnx", backend="openvino", precision="int8")


@pytest.mark.parametrize("device", ["GPU", "NPU"])
def test_other_devices_where_present(device: str, demo_copy: Path, test_images, tmp_path: Path) -> None:
    if device not in {d.split(".")[0] for d in available_devices()}:
        pytest.skip(f"no OpenVINO {device} device on this machine (devices: {available_devices()})")
    ort_model = load_model(demo_copy, providers="cpu")
    ov_model = load_model(demo_copy, backend="openvino", device=device, precision="f32", cache_dir=tmp_path)
    for image in test_images[:4]:
        _same_detections(ort_model.predict(image).detections, ov_model.predict(image).detections, 0.95, 0.02)


def test_bf16_and_int8_run_and_pass_the_gate(demo_copy: Path, int8_ir: Path, eval_data: Path) -> None:
    """Real evaluations on 60 parts: the gate's verdict is written into the card for this CPU type, and
    then allows the pair (it refused it before)."""
    pytest.importorskip("ultralytics", reason="the gate's evaluation needs the [train] extra")
    from training.runtime_gate import gate_runtime

    bf16, int8 = Runtime("openvino", "CPU", "bf16"), Runtime("openvino", "CPU", "int8")
    before = check_runtime(demo_copy, bf16)
    assert not before.allowed and "was not evaluated" in before.reason
    assert before.command == (
        f"edge-inspect model gate {demo_copy} --runtime openvino:CPU:bf16 "
        f"--data {json.loads(DEMO.joinpath('model.json').read_text())['dataset']['data_yaml']} --split val"
    )
    assert json.loads(int8_ir.with_suffix(".json").read_text())["calibration"]["images"] == 64
    for runtime in (bf16, int8):
        entry = gate_runtime(demo_copy, runtime, data=eval_data, split="val")
        assert entry["passed"], entry
        assert entry["candidate"]["images"] == 60
        assert entry["reference"]["map50"] - entry["candidate"]["map50"] <= 0.01
        assert entry["candidate"]["escapes"] <= entry["reference"]["escapes"]
        assert check_runtime(demo_copy, runtime).allowed
    card = json.loads(demo_copy.with_name("model.json").read_text())
    per_cpu = card["runtimes"][cpu_identity()["key"]]
    assert per_cpu["cpu"]["name"] == cpu_identity()["name"]
    assert set(per_cpu["pairs"]) == {"openvino:CPU:bf16", "openvino:CPU:int8"}
    # a new INT8 file is not what the gate judged
    bin_file = int8_ir.with_suffix(".bin")
    saved = bin_file.read_bytes()
    bin_file.write_bytes(saved[:-4] + b"\0\0\0\0")
    try:
        refused = check_runtime(demo_copy, int8)
        assert not refused.allowed and "changed since" in refused.reason
    finally:
        bin_file.write_bytes(saved)


def test_int8_stays_close_on_the_sample_images(demo_copy: Path, int8_ir: Path, test_images) -> None:
    ort_model = load_model(demo_copy, providers="cpu")
    ov_model = load_model(demo_copy, backend="openvino", precision="int8")
    assert ov_model.runtime.precision == "int8" and int8_ir == int8_ir_path(demo_copy)
    misses = []
    for i, image in enumerate(test_images):
        want = ort_model.predict(image, conf=0.5).detections
        got = ov_model.predict(image, conf=0.1).detections  # a margin for INT8's score shifts
        for box, cls in zip(want.xyxy, want.class_id, strict=True):
            ious = box_iou(box, got.xyxy[got.class_id == cls])
            if not len(ious) or ious.max() < 0.7:
                misses.append((i, box.round().tolist(), got.xyxy.round().tolist(), got.class_id.tolist()))
    assert not misses, misses


def test_auto_times_the_allowed_pairs_and_caches_the_choice(
    demo_copy: Path, int8_ir: Path, eval_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ultralytics", reason="the gate's evaluation needs the [train] extra")
    from edge_agent.runtime_choice import choose_runtime
    from training.runtime_gate import gate_runtime

    bf16 = Runtime("openvino", "CPU", "bf16")
    if not check_runtime(demo_copy, bf16).allowed:  # run alone: gate bf16 on a few images first
        gate_runtime(demo_copy, bf16, data=eval_data, split="val")
    first = choose_runtime(demo_copy, backend="auto", cache_dir=tmp_path, tune_seconds=0.6)
    assert first.chosen_by == "auto (measured)"
    assert REFERENCE.__str__() in first.timings_ms and str(bf16) in first.timings_ms
    assert "openvino:CPU:f32" not in first.timings_ms  # never gated: not a candidate
    assert str(first.runtime) == min(first.timings_ms, key=first.timings_ms.__getitem__)
    (cached,) = (tmp_path / "tune").glob("*.json")
    assert json.loads(cached.read_text())["model_sha256"] == load_model(demo_copy, providers="cpu").sha256
    second = choose_runtime(demo_copy, backend="auto", cache_dir=tmp_path, tune_seconds=0.6)
    assert second.chosen_by == "auto (cached)" and second.runtime == first.runtime


def test_anomaly_model_on_openvino(tmp_path: Path) -> None:
    """Item 6: an anomaly model runs on the same backends: f32 gives ORT's score and map; bf16 and INT8
    (calibrated on good parts) run and keep good and defect parts apart."""
    pytest.importorskip("onnx")
    from tests.anomaly_factory import build_mean_image_model, defect_part, good_part, part_surface

    rng = np.random.default_rng(11)
    base = part_surface()
    train = [good_part(rng, base) for _ in range(12)]
    good = [good_part(rng, base) for _ in range(4)]
    bad = [defect_part(rng, base) for _ in range(4)]
    path = build_mean_image_model(tmp_path / "model.onnx", train, card={"task": "anomaly", "name": "mean"})
    reference = load_model(path, providers="cpu")
    f32 = load_model(path, backend="openvino", precision="f32", cache_dir=tmp_path / "cache")
    assert f32.task == "anomaly" and f32.runtime == Runtime("openvino", "CPU", "f32")
    for image in good + bad:
        want, got = reference.predict(image), f32.predict(image)
        assert got.anomaly.score == pytest.approx(want.anomaly.score, rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(got.anomaly.map, want.anomaly.map, atol=1e-4)
    quantize_int8(path, calibration_tensors(reference, train), source="good parts")
    for precision in ("bf16", "int8"):
        model = load_model(path, backend="openvino", precision=precision, cache_dir=tmp_path / "cache")
        ok = max(model.predict(im).anomaly.score for im in good)
        ng = min(model.predict(im).anomaly.score for im in bad)
        assert ng > ok, (precision, ok, ng)

    # the gate for anomaly models: image AUROC and escapes at the image threshold, on image folders
    import cv2

    from training.runtime_gate import gate_runtime

    folders = {"good": good, "ng": bad}
    for name, images in folders.items():
        (tmp_path / name).mkdir()
        for i, image in enumerate(images):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), image)
    files = {name: sorted((tmp_path / name).glob("*.png")) for name in folders}
    bf16 = Runtime("openvino", "CPU", "bf16")
    refused = check_runtime(path, bf16)
    assert not refused.allowed and "--eval-good GOOD --eval-defects NG" in refused.command
    entry = gate_runtime(path, bf16, eval_good=files["good"], eval_defects=files["ng"])
    assert entry["reference"]["image_auroc"] == 1.0 and entry["candidate"]["image_auroc"] == 1.0
    assert entry["passed"] and entry["candidate"]["escapes"] == entry["reference"]["escapes"] == 0
    assert check_runtime(path, bf16).allowed

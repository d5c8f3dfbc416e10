"""`edge-inspect infer` as a user runs it: a real subprocess, real model, good and bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "edge_agent.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_json_output_reports_bad_files_and_goes_on(tiny_detect_onnx, synthetic_images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    images = sorted(synthetic_images.iterdir())[:2]
    proc = run(
        "infer",
        tiny_detect_onnx,
        images[0],
        bad,
        tmp_path / "gone.png",
        images[1],
        "--json",
        "--conf",
        "0.0001",
    )
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == [
        str(images[0]),
        str(bad),
        str(tmp_path / "gone.png"),
        str(images[1]),
    ]
    good = lines[0]
    assert set(good) >= {"path", "width", "height", "detections", "timing_ms"}
    assert (good["width"], good["height"]) == (128, 96)
    assert set(good["timing_ms"]) == {"preprocess", "inference", "postprocess"}
    for d in good["detections"]:
        assert set(d) == {"class", "class_id", "confidence", "xyxy"} and d["confidence"] >= 0.0001
    assert "not a readable image" in lines[1]["error"] and "broken.png" in lines[1]["error"]
    assert "no such image file" in lines[2]["error"]


def test_table_output_and_saved_images(tiny_detect_onnx, synthetic_images, tmp_path):
    out = tmp_path / "annotated"
    proc = run(
        "infer", tiny_detect_onnx, synthetic_images, "--save", out, "--tile", "2x2", "--conf", "0.0001"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("detection(s)") == len(list(synthetic_images.iterdir()))
    assert len(list(out.glob("*.jpg"))) == len(list(synthetic_images.iterdir()))


def test_missing_model_exit_code(tmp_path, synthetic_images):
    proc = run("infer", tmp_path / "none.onnx", synthetic_images)
    assert proc.returncode == 2
    assert "none.onnx: no such model file" in proc.stderr


def test_bad_tile_argument(tiny_detect_onnx, synthetic_images):
    proc = run("infer", tiny_detect_onnx, synthetic_images, "--tile", "two")
    assert proc.returncode != 0 and "--tile must look like 2x3" in proc.stderr


@pytest.mark.parametrize(
    "statement", ["import vision", "import vision.model", "from edge_agent.cli import app"]
)
def test_no_torch_on_the_inference_path(statement):
    code = f"{statement}; import sys; print([m for m in ('torch', 'ultralytics') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv = ['edge-inspect', '--help']\n"
        "from edge_agent.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'ultralytics') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr
    assert "infer" in proc.stdout

"""Shared pytest fixtures: tiny real ONNX models and synthetic images, built once per session.

The models come from `tests.model_factory` (real Ultralytics models trained 1 epoch on tiny synthetic
data, exported to ONNX, ~8 s each). Set `EDGE_INSPECT_TEST_CACHE=/some/dir` to reuse them across runs.

Example (in a test module):

    def test_model_loads(tiny_detect_onnx):
        from vision import Model
        assert Model(tiny_detect_onnx).task == "detect"
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

# `tests.model_factory` is importable whether pytest runs from the repo root or elsewhere.
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.model_factory import TINY_MODELS, tiny_model  # noqa: E402

#: size (h, w) of the images in `synthetic_images`: larger than the tiny models' 64 px input on purpose,
#: so letterboxing and scaling back to image pixels are exercised.
SYNTHETIC_IMAGE_SIZE: tuple[int, int] = (96, 128)
SYNTHETIC_IMAGE_COUNT = 6


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session folder where the tiny models are trained (unless the cache env var has them)."""
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_detect_onnx(tiny_model_dir: Path) -> Path:
    """Path to a tiny real YOLOv8n detection model (ONNX, dynamic batch, 64 px, 4 synth classes)."""
    return tiny_model("yolov8n", tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_models(tiny_model_dir: Path, tiny_detect_onnx: Path) -> dict[str, Path]:
    """Every model of `tests.model_factory.TINY_MODELS`: name -> ONNX path (detect, segment, classify)."""
    models = {"yolov8n": tiny_detect_onnx}
    for name in TINY_MODELS:
        if name not in models:
            models[name] = tiny_model(name, tiny_model_dir)
    return models


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of a few synthetic defect images (PNG, BGR, 96x128), fixed seed, some with defects.

    Treat it as read-only (it is shared by the whole session); copy it to change it.
    """
    from training.synth import make_sample

    folder = tmp_path_factory.mktemp("synthetic_images")
    rng = np.random.default_rng(1234)
    for i in range(SYNTHETIC_IMAGE_COUNT):
        img, _boxes = make_sample(rng, SYNTHETIC_IMAGE_SIZE, ok_probability=0.3)
        if not cv2.imwrite(str(folder / f"part_{i:03d}.png"), img):
            raise RuntimeError(f"could not write synthetic image to {folder}")
    return folder

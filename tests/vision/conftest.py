"""Fixtures for the vision runtime tests: untrained models and test images of awkward shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.model_factory import UNTRAINED_MODELS, untrained_model


@pytest.fixture(scope="session")
def untrained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("ultralytics")
    root = tmp_path_factory.mktemp("untrained")
    return {name: untrained_model(name, root) for name in UNTRAINED_MODELS}


@pytest.fixture(scope="session")
def odd_images() -> list[np.ndarray]:
    """Square, wide and tall synthetic parts: each needs different letterbox padding."""
    from training.synth import make_sample

    rng = np.random.default_rng(5)
    return [make_sample(rng, size, ok_probability=0.0)[0] for size in ((96, 96), (60, 130), (200, 150))]

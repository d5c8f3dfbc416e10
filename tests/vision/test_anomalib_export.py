"""anomalib exports run as anomaly models (issue 29 item 6): a real tiny PaDiM (ResNet-18 from scratch,
pretrained weights off) trained by anomalib's own Engine on generated parts, exported by anomalib to ONNX,
loaded by `vision.load_model`, and compared with anomalib's own inference (`Engine.predict`) on the same
image files.

Parity, stated: image score within 1e-4 and anomaly map within 1e-3 (both in anomalib's normalised [0, 1]
units), the same label at anomalib's threshold 0.5. The parts are the model's input size (64 px), so the
resize before the model is the identity on both sides and the comparison is of the graph and our
pre-processing (BGR file → RGB in [0, 1]) against anomalib's image loading.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.anomaly_factory import good_part, part_surface, write_parts
from vision import load_model, read_image
from vision.anomaly import AnomalyModel

pytestmark = pytest.mark.train

SIZE = (64, 64)


def _defect(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    img = good_part(rng, base)
    img[20:24, 15:50] = (img[20:24, 15:50].astype(np.int16) - 90).clip(0, 255).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("anomalib")
    pytest.importorskip("onnxscript")  # torch's ONNX exporter, which anomalib 2.7 uses
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded (pretrained weights are off)
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Padim

    root = tmp_path_factory.mktemp("anomalib")
    rng = np.random.default_rng(3)
    base = part_surface(size=SIZE)
    write_parts(root / "good", [good_part(rng, base) for _ in range(12)], "good")
    write_parts(root / "defect", [_defect(rng, base) for _ in range(4)], "defect")
    test = write_parts(root / "test", [good_part(rng, base) for _ in range(3)], "a_good")
    test += write_parts(root / "test", [_defect(rng, base) for _ in range(3)], "b_defect")
    datamodule = Folder(
        name="parts", root=root, normal_dir="good", abnormal_dir="defect",
        train_batch_size=8, eval_batch_size=8, num_workers=0, seed=0,
    )
    model = Padim(
        backbone="resnet18", layers=["layer1"], pre_trained=False, n_features=16,
        pre_processor=Padim.configure_pre_processor(image_size=SIZE), visualizer=False, evaluator=False,
    )
    engine = Engine(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, default_root_dir=root / "engine",
        enable_progress_bar=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    onnx_path = model.to_onnx(root / "export", input_size=SIZE)
    predictions = engine.predict(model=model, data_path=root / "test", return_predictions=True)
    theirs = {}
    for batch in predictions:
        for path, score, amap, label in zip(
            batch.image_path, batch.pred_score, batch.anomaly_map, batch.pred_label, strict=True
        ):
            theirs[Path(path).name] = (float(score), amap.squeeze().numpy(), bool(label))
    return {"onnx": Path(onnx_path), "test": test, "theirs": theirs}


def test_anomalib_export_loads_with_its_own_thresholds(exported) -> None:
    model = load_model(exported["onnx"], providers="cpu")
    assert isinstance(model, AnomalyModel) and model.anomalib and model.normalised
    assert model.imgsz == SIZE and model.dynamic_batch
    # anomalib 2.7 writes no metadata; its post-processor (in the graph) normalises both thresholds to 0.5
    assert (model.image_threshold, model.pixel_threshold) == (0.5, 0.5)
    assert model.info()["format"] == "anomalib"


def test_same_score_and_map_as_anomalib_inference(exported) -> None:
    model = load_model(exported["onnx"], providers="cpu")
    scores = {}
    for path in exported["test"]:
        pred = model.predict(read_image(path))
        score, amap, label = exported["theirs"][path.name]
        assert pred.anomaly.score == pytest.approx(score, abs=1e-4)
        assert pred.anomaly.map.shape == amap.shape == SIZE
        assert np.abs(pred.anomaly.map - amap).max() < 1e-3
        assert pred.anomaly.anomalous == label or abs(score - 0.5) < 1e-4  # their label is score > 0.5
        scores[path.name] = pred.anomaly.score
    good = [s for n, s in scores.items() if n.startswith("a_good")]
    defect = [s for n, s in scores.items() if n.startswith("b_defect")]
    assert min(defect) > max(good)  # even from scratch, the planted scratch stands out

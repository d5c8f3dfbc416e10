"""`vision.onnx_meta` reads an ONNX file's metadata as ONNX Runtime does, without onnx or a session."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from vision import ModelLoadError
from vision.onnx_meta import read_onnx_metadata

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path", sorted((REPO / "models").glob("*/*.onnx")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_same_metadata_as_onnxruntime(path: Path) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = read_onnx_metadata(path)
    assert meta == dict(session.get_modelmeta().custom_metadata_map)
    if path.parent.name == "demo-anomaly":  # our anomaly contract's keys (docs/anomaly.md)
        assert meta["edge_inspect_kind"] == "anomaly" and "image_threshold" in meta
    else:
        assert meta["task"] == "detect" and "names" in meta


def test_a_truncated_file_is_a_load_error(tmp_path: Path) -> None:
    data = (REPO / "models" / "demo" / "model.onnx").read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"broken\.onnx: not a readable ONNX file"):
        read_onnx_metadata(broken)

"""The export's graph rewrite (DFL softmax before its transpose): same outputs, bit for bit."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs the [train] extra")


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolov8n-seg"])
def test_softmax_before_transpose_keeps_outputs_bit_identical(
    name: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from training.export import softmax_before_transpose

    original = tiny_models[name]
    rewritten = tmp_path / original.name
    shutil.copy(original, rewritten)
    assert softmax_before_transpose(rewritten) == 1  # the DFL's one softmax
    assert softmax_before_transpose(rewritten) == 0  # already in the fast order: nothing to do

    graph = onnx.load(str(rewritten)).graph
    producer = {out: n for n in graph.node for out in n.output}
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    assert producer[softmax.input[0]].op_type != "Transpose"
    after = [n for n in graph.node if softmax.output[0] in n.input]
    assert [n.op_type for n in after] == ["Transpose"]
    before_meta = {p.key: p.value for p in onnx.load(str(original)).metadata_props}
    assert {p.key: p.value for p in onnx.load(str(rewritten)).metadata_props} == before_meta

    a = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 96 for d in a.get_inputs()[0].shape]
    shape[0] = 2
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    feed = {a.get_inputs()[0].name: x}
    for out_a, out_b in zip(a.run(None, feed), b.run(None, feed), strict=True):
        assert np.array_equal(out_a, out_b)

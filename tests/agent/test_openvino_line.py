"""A line's `model:` runtime (docs/openvino.md): `config check` refuses a runtime the accuracy gate has not
passed, with the command that evaluates it; `force: true` runs it (logged) and /metrics and the line's
status say which runtime runs and how it was chosen; `auto` with no gated pair runs the reference."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
from pathlib import Path

import pytest
from agent_helpers import folder_line, wait_until, write_site, write_yaml
from typer.testing import CliRunner

from edge_agent.cli import app

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(REPO / "models" / "demo" / "model.onnx", folder / "model.onnx")
    card = json.loads((REPO / "models" / "demo" / "model.json").read_text())
    card.pop("runtimes", None)  # no gate results yet: each test gates what it needs
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model.onnx"


def test_config_check_refuses_an_ungated_runtime_with_the_command(
    tmp_path: Path, demo_copy: Path, synthetic_images: Path
) -> None:
    line = folder_line("press", synthetic_images, demo_copy)
    line["model"].update(backend="openvino", precision="bf16")
    file = write_yaml(tmp_path / "press.yaml", line)
    result = CliRunner().invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "model.backend" in text and "openvino:CPU:bf16 was not evaluated" in text
    assert f"edge-inspect model gate {demo_copy} --runtime openvino:CPU:bf16 --data" in text
    assert "force: true" in text

    line["model"]["precision"] = "bf16x"  # a precision that does not exist: the YAML's own error
    write_yaml(file, line)
    result = CliRunner().invoke(app, ["config", "check", str(file), "--no-models"])
    assert result.exit_code == 1 and "precision" in result.output


def test_forced_runtime_runs_and_shows_in_metrics_and_status(
    tmp_path: Path, demo_copy: Path, synthetic_images: Path, agent_factory, caplog
) -> None:
    line = folder_line("press", synthetic_images, demo_copy)
    line["cameras"][0]["source"]["mode"] = "loop"
    line["model"].update(backend="openvino", precision="bf16", force=True, cache_dir=str(tmp_path / "cache"))
    agent = agent_factory(write_site(tmp_path, [line]))
    with caplog.at_level(logging.WARNING, logger="edge_agent.runtime_choice"):
        agent.start()
    assert any("without the accuracy gate (force: true)" in r.getMessage() for r in caplog.records)
    runtime = agent.lines["press"]
    wait_until(lambda: runtime.counts["inspected"] >= 3)
    status = runtime.status()
    assert status["providers"] == ["OpenVINO:CPU:bf16"]
    assert status["runtime"]["runtime"] == "openvino:CPU:bf16" and status["runtime"]["chosen_by"] == "forced"
    text = urllib.request.urlopen(agent.metrics_server.url + "/metrics", timeout=5).read().decode()
    assert (
        'edge_inspect_model_runtime_info{backend="openvino",chosen_by="forced",device="CPU",line="press",'
        'precision="bf16",runtime="openvino:CPU:bf16"} 1.0'
    ) in text
    assert list((tmp_path / "cache" / "openvino").iterdir())  # the compiled model was cached


def test_auto_without_gated_pairs_runs_the_reference(
    tmp_path: Path, demo_copy: Path, synthetic_images: Path, agent_factory
) -> None:
    line = folder_line("press", synthetic_images, demo_copy)
    line["model"].update(backend="auto", cache_dir=str(tmp_path / "cache"))
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    status = agent.lines["press"].status()
    assert status["runtime"]["runtime"] == "onnxruntime:CPU:f32"
    assert status["runtime"]["chosen_by"].startswith("auto (only the reference")
    assert not (tmp_path / "cache" / "tune").exists()  # nothing to time

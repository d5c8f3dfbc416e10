"""Settings that used to pass `config check` and then break the line at run time: the check now loads the
model as the line will (providers, imgsz, task, tiling) and inspects one frame; the line refuses the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import folder_line, write_site, write_yaml
from typer.testing import CliRunner

from contract.yamlconf import ConfigError
from edge_agent.cli import app
from edge_agent.config import load_line
from edge_agent.inspector import Inspector, InspectorLoadError, validate_line_model


@pytest.mark.parametrize(
    ("model_overrides", "expected"),
    [
        ({"tile": [0, 0]}, "model.tile[0]: Input should be greater than 0"),
        ({"tile": [-1, 2]}, "model.tile[0]: Input should be greater than 0"),
        ({"imgsz": 0}, "model.imgsz"),
        ({"imgsz": -320}, "model.imgsz"),
        ({"imgsz": [320, 0]}, "model.imgsz"),
    ],
)
def test_impossible_model_settings_are_config_errors(
    tmp_path: Path, tiny_detect_onnx: Path, model_overrides: dict, expected: str
) -> None:
    line = folder_line("a", tmp_path, tiny_detect_onnx)
    line["model"].update(model_overrides)
    with pytest.raises(ConfigError) as exc:
        load_line(write_yaml(tmp_path / "a.yaml", line))
    assert expected in str(exc.value)


@pytest.mark.parametrize(
    ("model_overrides", "key", "expected"),
    [
        ({"task": "classify"}, "model.task", "task 'classify' does not fit this model"),
        ({"task": "segment"}, "model.task", "task 'segment' does not fit this model"),
        ({"providers": "cudaa"}, "model.providers", "execution provider 'cudaa' is not installed here"),
        ({"providers": ["CPUExecutionProviderr"]}, "model.providers", "is not installed here"),
    ],
)
def test_check_fails_where_the_line_would(
    tmp_path: Path,
    tiny_detect_onnx: Path,
    synthetic_images: Path,
    model_overrides: dict,
    key: str,
    expected: str,
) -> None:
    line = folder_line("a", synthetic_images, tiny_detect_onnx)
    line["model"].update(model_overrides)
    loaded = load_line(write_yaml(tmp_path / "a.yaml", line))
    (issue,) = validate_line_model(loaded)
    assert f"{loaded.file}:" in str(issue) and f": {key}: " in str(issue) and expected in str(issue)
    with pytest.raises(InspectorLoadError, match=expected.split("'")[0]):
        Inspector.load(loaded.config, site="s")  # what the line does at start: the same refusal

    site = write_site(tmp_path / "site", [line])
    result = CliRunner().invoke(app, ["config", "check", str(site)])
    assert result.exit_code == 1 and expected in result.output


def test_tiled_line_is_inspected_once_by_the_check(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    line = folder_line("a", synthetic_images, tiny_detect_onnx)
    line["model"]["tile"] = [2, 3]
    loaded = load_line(write_yaml(tmp_path / "a.yaml", line))
    assert validate_line_model(loaded) == []
    inspector = Inspector.load(loaded.config, site="s")
    assert inspector.model.task == "detect"


def test_recipe_rules_that_fail_on_the_output_are_caught_by_the_check(
    tmp_path: Path, tiny_model_dir: Path, synthetic_images: Path
) -> None:
    from tests.model_factory import tiny_model

    classify = tiny_model("yolov8n-cls", tiny_model_dir)
    line = folder_line("a", synthetic_images, classify)
    line["model"]["tile"] = [2, 2]  # tiling a classifier cannot work: the line would fail every part
    loaded = load_line(write_yaml(tmp_path / "a.yaml", line))
    (issue,) = validate_line_model(loaded)
    assert ": model.tile: " in str(issue) and "tiling applies to detection" in str(issue)

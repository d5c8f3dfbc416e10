"""`config check` recognises a line file given on its own, checks every YAML file of a folder (also line
files the site file does not list) and every path given."""

from __future__ import annotations

from pathlib import Path

import yaml
from agent_helpers import folder_line, write_site, write_yaml
from typer.testing import CliRunner

from edge_agent.cli import app


def test_a_line_file_is_checked_as_a_line(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    line = write_yaml(tmp_path / "press.yaml", folder_line("press", synthetic_images, tiny_detect_onnx))
    result = CliRunner().invoke(app, ["config", "check", str(line)])
    assert result.exit_code == 0, result.output
    assert f"OK: {line.resolve()} (line file)" in result.output and "line press [free_run]" in result.output
    assert "site" not in result.output.split("(line file)")[0].replace(str(line.resolve()), "")

    broken = folder_line("press", synthetic_images, tiny_detect_onnx)
    broken["trigger"]["max_fsp"] = 3
    write_yaml(line, broken)
    result = CliRunner().invoke(app, ["config", "check", str(line), "--no-models"])
    assert result.exit_code == 1
    assert (
        "1 error(s):" in result.output
        and "trigger.max_fsp: unknown key (did you mean 'max_fps'?)" in result.output
    )
    assert "required key is missing" not in result.output  # not read as a site file


def test_a_folder_checks_line_files_the_site_does_not_list(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    site = write_site(tmp_path, [folder_line("a", synthetic_images, tiny_detect_onnx)])
    site_data = yaml.safe_load(site.read_text())
    write_yaml(site, {**site_data, "lines": ["lines/a.yaml"]})  # b.yaml below is not listed
    extra = folder_line("b", synthetic_images, tiny_detect_onnx)
    extra["model"]["conff"] = 0.3
    write_yaml(tmp_path / "lines" / "b.yaml", extra)
    result = CliRunner().invoke(app, ["config", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"OK: {site.resolve()}" in result.output and "line a [free_run]" in result.output
    assert f"{(tmp_path / 'lines' / 'b.yaml').resolve()}:" in result.output
    assert "model.conff: unknown key (did you mean 'conf'?)" in result.output
    assert result.output.count("line a [free_run]") == 1  # a listed line is checked once


def test_several_paths_are_all_checked(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    a = write_yaml(tmp_path / "a.yaml", folder_line("a", synthetic_images, tiny_detect_onnx))
    b = write_yaml(tmp_path / "b.yaml", folder_line("b", synthetic_images, tmp_path / "missing.onnx"))
    result = CliRunner().invoke(app, ["config", "check", str(a), str(b)])
    assert result.exit_code == 1
    assert f"OK: {a.resolve()} (line file)" in result.output
    assert f"{b.resolve()}:" in result.output and "no such model file" in result.output

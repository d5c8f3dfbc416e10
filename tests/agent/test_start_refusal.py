"""A line that cannot load at start: `run` refuses to start (exit 1, the reason), as `config check` fails on
the same file, unless the site says `on_line_load_failure: run_others`."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import folder_line, wait_until, write_site
from typer.testing import CliRunner

from edge_agent.agent import Agent, AgentStartError
from edge_agent.cli import app
from edge_agent.config import load_agent_config


def test_run_with_a_missing_model_exits_1_with_the_reason(tmp_path: Path, synthetic_images: Path) -> None:
    site = write_site(tmp_path, [folder_line("a", synthetic_images, tmp_path / "missing.onnx")])
    runner = CliRunner()
    check = runner.invoke(app, ["config", "check", str(site)])
    run = runner.invoke(app, ["run", "--config", str(site), "--for", "1", "--quiet"])
    assert check.exit_code == 1 and run.exit_code == 1, run.output
    assert "cannot start: line a: " in run.output and "no such model file" in run.output
    assert "stopped cleanly" not in run.output


def test_failed_line_stops_the_start_and_releases_everything(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    site = write_site(
        tmp_path,
        [
            folder_line("bad", synthetic_images, tmp_path / "missing.onnx"),
            folder_line("good", synthetic_images, tiny_detect_onnx),
        ],
    )
    agent = Agent(load_agent_config(site))
    with pytest.raises(AgentStartError) as exc:
        agent.start()
    assert "line bad: " in str(exc.value) and "on_line_load_failure: run_others" in str(exc.value)
    assert agent.lines["good"].state == "stopped"
    again = Agent(load_agent_config(site))  # journal and ports were released: a fixed agent starts again
    again.config.site.on_line_load_failure = "run_others"
    again.start()
    try:
        assert again.lines["bad"].state == "error"
        wait_until(lambda: again.lines["good"].counts["inspected"] == 6)
    finally:
        again.stop()


def test_run_others_still_refuses_when_no_line_runs(tmp_path: Path, synthetic_images: Path) -> None:
    site = write_site(
        tmp_path,
        [folder_line("bad", synthetic_images, tmp_path / "missing.onnx")],
        on_line_load_failure="run_others",
    )
    agent = Agent(load_agent_config(site))
    with pytest.raises(AgentStartError, match=r"line bad: .*no such model file"):
        agent.start()

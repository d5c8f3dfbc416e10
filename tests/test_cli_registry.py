"""`edge-inspect` gathers its subcommands from one registry (edge_agent.cli.COMMAND_MODULES): the same
commands whatever the order, each module adds exactly the names the registry says, and a module whose
extra is not installed leaves a command that says what to install instead of stopping the start."""

from __future__ import annotations

import sys

import typer
from typer.main import get_command
from typer.testing import CliRunner

from edge_agent import cli


def _tree(app: typer.Typer) -> dict[str, list[str]]:
    """Root command name -> its subcommand names (sorted; [] for a plain command)."""
    group = get_command(app)
    ctx = group.context_class(group)
    out = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        out[name] = sorted(command.list_commands(ctx)) if hasattr(command, "list_commands") else []
    return out


def test_the_order_of_the_registry_does_not_matter() -> None:
    forward = _tree(cli.build_app())
    backward = _tree(cli.build_app(tuple(reversed(cli.COMMAND_MODULES))))
    assert forward == backward
    assert {"from-reviews", "anomaly-from-reviews", "import", "split"} <= set(forward["dataset"])
    assert {"gate", "tune", "quantize-openvino", "promote"} <= set(forward["model"])
    assert forward == _tree(cli.app)


def test_each_module_adds_the_names_the_registry_gives() -> None:
    for entry in cli.COMMAND_MODULES:
        names = set(_tree(cli.build_app((entry,))))
        expected = set(entry.names) | {g for g, module, _ in cli.GROUP_COMMANDS if module == entry.module}
        assert names == expected, entry.module


def test_a_missing_extra_is_named_when_the_command_is_used(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "hub.cli", None)  # what an install without [hub] looks like
    app = cli.build_app()
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"])
    assert listed.exit_code == 0 and "hub" in listed.output and "opcua" in listed.output
    used = runner.invoke(app, ["hub", "serve", "--data", "x"])
    assert used.exit_code == 1
    assert "edge-inspect hub is not available" in used.output
    assert "pip install 'edge-inspect[hub]'" in used.output
    assert runner.invoke(app, ["opcua", "--help"]).exit_code == 0  # the others still work

"""The `edge-inspect` command: one typer app gathering each package's commands.

`COMMAND_MODULES` is the one registry: every package's CLI module, in `--help` order, with the names it
adds and the pip extra it needs. Each module has a `register(app)` that adds its own commands and
groups; no module looks for another's group, so the order of imports never matters. The `dataset`
group belongs to `training.cli`; the two commands that read the journal (`edge_agent.console_cli`'s
`DATASET_COMMANDS`) are added to it here, by name.

A module whose optional dependencies are not installed does not stop `edge-inspect` from starting:
its commands are still listed and, when used, say which extra to install. Heavy imports (onnxruntime,
torch, ultralytics, asyncua) happen inside the commands, so `edge-inspect --help` stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer


@dataclass(frozen=True)
class CommandModule:
    module: str  # the package's CLI module, with a register(app)
    names: tuple[str, ...]  # the commands and groups it adds to the root app
    extra: str | None = None  # the pip extra it needs beyond the core install


# Order = order in --help.
COMMAND_MODULES: tuple[CommandModule, ...] = (
    CommandModule("vision.cli", ("infer",)),
    CommandModule("edge_agent.agent_cli", ("run", "trigger", "config", "results")),
    CommandModule("edge_agent.zmq_cli", ("zmq", "mes")),
    CommandModule("opcua.cli", ("opcua",)),
    CommandModule("training.cli", ("dataset", "train", "evaluate", "export", "model", "anomaly"), "train"),
    CommandModule("training.runtime_cli", (), "train"),  # model gate|tune|quantize-openvino, in `model`
    CommandModule("edge_agent.console_cli", ("console",)),
    CommandModule("hub.cli", ("hub",), "hub"),
)

#: commands added to another module's group: (group, module holding a {name: function} dict, its name)
GROUP_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("dataset", "edge_agent.console_cli", "DATASET_COMMANDS"),
)


def _missing(name: str, entry: CommandModule, exc: ModuleNotFoundError) -> typer.Typer:
    """A stand-in for the commands of a module that cannot be imported here: says what to install."""
    stand_in = typer.Typer(add_completion=False)
    extra = f"the [{entry.extra}] extra: pip install 'edge-inspect[{entry.extra}]'" if entry.extra else "it"
    message = f"edge-inspect {name} is not available: {exc.name or exc} is not installed (install {extra})"

    @stand_in.command(
        name,
        help=f"(not installed: needs {'[' + entry.extra + ']' if entry.extra else exc.name})",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def unavailable() -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)

    return stand_in


def build_app(modules: tuple[CommandModule, ...] = COMMAND_MODULES) -> typer.Typer:
    """The root app with every registered module's commands (or a stand-in where one is missing)."""
    root = typer.Typer(
        name="edge-inspect",
        help="AI visual inspection for factory lines.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @root.callback()
    def _root() -> None:
        """AI visual inspection for factory lines: ONNX defect detection, verdicts, OPC UA and ZeroMQ."""

    loaded = {}
    for entry in modules:
        try:
            loaded[entry.module] = importlib.import_module(entry.module)
        except ModuleNotFoundError as exc:
            for name in entry.names:
                root.registered_commands += _missing(name, entry, exc).registered_commands
            continue
        loaded[entry.module].register(root)
    groups = {g.name: g.typer_instance for g in root.registered_groups}
    for group_name, module, attribute in GROUP_COMMANDS:
        if module not in loaded:
            continue
        group = groups.get(group_name)
        if group is None:  # its own package is not installed: the commands get the group to themselves
            group = typer.Typer(no_args_is_help=True)
            root.add_typer(group, name=group_name)
            groups[group_name] = group
        for name, fn in getattr(loaded[module], attribute).items():
            group.command(name)(fn)
    return root


app = build_app()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

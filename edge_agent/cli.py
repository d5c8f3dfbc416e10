"""The `edge-inspect` command: one typer app gathering each package's commands.

Each package keeps its own CLI module with a `register(app)` function; heavy imports (onnxruntime,
torch, ultralytics, asyncua) happen inside the commands, so `edge-inspect --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="edge-inspect",
    help="AI visual inspection for factory lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """AI visual inspection for factory lines: ONNX defect detection, verdicts, OPC UA and ZeroMQ."""


# Order = order in --help. A module listed here that is not written yet is skipped.
_COMMAND_MODULES = (
    "vision.cli",
    "edge_agent.agent_cli",
    "edge_agent.zmq_cli",
    "opcua.cli",
    "training.cli",
    "training.runtime_cli",  # after training.cli: it adds `model gate|tune|quantize-openvino` to its group
    "edge_agent.console_cli",  # after training.cli: it adds `dataset from-reviews` to its group
    "hub.cli",
)

for _module in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

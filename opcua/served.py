"""One line as the server serves it: its backend, its nodes and the server-side state of both."""

from __future__ import annotations

from dataclasses import dataclass, field

from opcua.backend import LineBackend
from opcua.model import VisionSystemNodes
from opcua.states import LineState


@dataclass
class PlcState:
    """The PLC handshake of one line (opcua.plc)."""

    busy: bool = False
    result_ready: bool = False
    last: dict[str, bool] = field(default_factory=lambda: {"Trigger": False, "ResultAck": False})
    refused: int = 0
    errors: int = 0
    ready_written: bool | None = None


@dataclass
class ServedLine:
    backend: LineBackend
    nodes: VisionSystemNodes
    state: LineState = field(default_factory=LineState)
    plc: PlcState = field(default_factory=PlcState)

"""`Outcome`: one inspected part as the inspector hands it on, the result (not journaled yet) with the
frames, detections and anomaly maps the archive and the capture need to keep and draw it.

A module of its own so the archive and the capture read it without importing the inspector (and the
model runtime behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from contract.result import InspectionResult
from edge_agent.sources.base import Frame
from vision.detections import Detections

if TYPE_CHECKING:
    from vision.anomaly import Anomaly


@dataclass
class Outcome:
    """One inspected part: the result (not journaled yet) and what the archive needs to draw it."""

    result: InspectionResult
    frames: dict[str, Frame]
    detections: dict[str, Detections]
    counted: dict[str, np.ndarray]
    anomaly: dict[str, Anomaly] = field(default_factory=dict)  # per camera, lines with an anomaly model

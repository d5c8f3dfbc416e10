"""The result contract: the pydantic result a line produces and its JSON Schema.

A small package at the bottom of the import graph: `edge_agent` and `opcua` both import it, so a
result crosses no package boundary as a dict (and `opcua` still never imports `edge_agent`).
"""

from contract.result import (
    RESULT_SCHEMA_VERSION,
    AnomalyScore,
    Defect,
    FrameInfo,
    InspectionResult,
    ModelInfo,
    Verdict,
    result_json_schema,
)

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "AnomalyScore",
    "Defect",
    "FrameInfo",
    "InspectionResult",
    "ModelInfo",
    "Verdict",
    "result_json_schema",
]

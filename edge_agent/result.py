"""The result contract now lives in `contract.result`; this module re-exports it for the agent's code."""

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

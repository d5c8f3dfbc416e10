"""`InspectionResult`: the one body every output carries (journal, ZeroMQ, OPC UA, MES).

Its JSON Schema is committed as `schemas/result.schema.json` (regenerate with
`edge-inspect results schema > schemas/result.schema.json`); a test keeps the two in step.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = "1.1"  # 1.1: `anomaly` scores

Verdict = Literal["OK", "NG"]


class Defect(BaseModel):
    """One detection that survived the recipe's rules (or was judged by them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    camera: str
    class_name: str = Field(alias="class")
    class_id: int
    confidence: float
    xyxy: list[float] = Field(min_length=4, max_length=4)
    area_px: float
    area_mm2: float | None = None
    counts_for_verdict: bool = True


class FrameInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: str
    width: int
    height: int
    source_ref: str | None = None  # file path, frame index or stream URL: where the pixels came from


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    sha256: str | None = None


class AnomalyScore(BaseModel):
    """One camera's image score from an anomaly model (its regions are `defects` of class "anomaly")."""

    model_config = ConfigDict(extra="forbid")

    camera: str
    score: float
    image_threshold: float
    pixel_threshold: float
    anomalous: bool  # score >= image_threshold
    model: ModelInfo


class InspectionResult(BaseModel):
    """One verdict for one part, across all its cameras."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: str = RESULT_SCHEMA_VERSION
    result_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    seq: int | None = None  # assigned by the journal; None until journaled
    site: str
    line: str
    part_id: str
    recipe: str
    product_id: str | None = None
    meas_id: str | None = None
    job_id: str | None = None
    trigger: Literal["free_run", "triggered"] = "free_run"
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    defects: list[Defect] = Field(default_factory=list)
    anomaly: list[AnomalyScore] = Field(default_factory=list)  # lines with an anomaly model: per camera
    frames: list[FrameInfo] = Field(default_factory=list)
    model: ModelInfo
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    timings_ms: dict[str, float] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> InspectionResult:
        return cls.model_validate_json(text)


def result_json_schema() -> dict:
    schema = InspectionResult.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://edge-inspect.local/schemas/result.schema.json"
    return schema

"""A small real line for the OPC UA tests: it journals real `InspectionResult`s and tells the server.

It satisfies `opcua.backend.LineBackend` directly (result futures resolve to the journaled
`InspectionResult`), the way the publisher adapter presents the agent's `LineRuntime`. A job
finishes when `release` is set, so tests can hold the line busy on purpose.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from contract import Defect, FrameInfo, InspectionResult, ModelInfo
from edge_agent.journal import ResultJournal
from opcua.backend import LineConfiguration, configuration_id

MODEL_SHA = "ab" * 32


class JournalLine:
    """Triggered line: each trigger makes one result (NG when the part id ends with 'X')."""

    def __init__(
        self,
        name: str,
        journal: ResultJournal,
        *,
        mode: str = "triggered",
        recipes: tuple[str, ...] = ("default", "strict"),
    ) -> None:
        self.name = name
        self.journal = journal
        self.state = "running"
        self.mode = mode
        self.recipes = list(recipes)
        self.active_recipe = recipes[0]
        self.model_version = "7"
        self.release = threading.Event()
        self.release.set()
        self.sink: Callable[[InspectionResult], None] | None = None  # the server's submit_result
        self.loaded_at = datetime.now(timezone.utc)
        self.triggers: list[dict[str, Any]] = []
        self._listeners: list[Callable[[str, dict], None]] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"line-{name}")
        self._count = 0

    # -- LineBackend ---------------------------------------------------------------------------------
    def set_recipe(self, name: str) -> None:
        if name not in self.recipes:
            raise KeyError(f"line {self.name}: unknown recipe {name!r}; known: {self.recipes}")
        self.active_recipe = name

    def trigger(
        self,
        part_id: str | None = None,
        *,
        meas_id: str | None = None,
        recipe: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> Future:
        if self.state != "running":
            raise RuntimeError(f"line {self.name} is {self.state}")
        self._count += 1
        request = dict(
            part_id=part_id or f"P{self._count:05d}",
            meas_id=meas_id,
            recipe=recipe or self.active_recipe,
            product_id=product_id,
            job_id=job_id,
        )
        self.triggers.append(request)
        return self._pool.submit(self._inspect, request)

    def _inspect(self, request: dict[str, Any]) -> InspectionResult:
        self.release.wait(30)
        stored = self.journal.append(make_result(self.name, **request))
        if self.sink is not None:
            self.sink(stored)
        return stored

    def configuration(self) -> LineConfiguration:
        return LineConfiguration(
            id=configuration_id(self.name, "tiny"),
            version=self.model_version,
            sha256=hashlib.sha256(f"{self.name}:{self.recipes}:{MODEL_SHA}".encode()).hexdigest(),
            description=f"line {self.name}: tiny v{self.model_version}",
            last_modified=self.loaded_at,
        )

    def pause(self) -> None:
        self._set_state("paused")

    def resume(self, **job: str | None) -> None:
        self.continuous_job = job  # what StartContinuous passed (meas_id, part_id, product_id, job_id)
        self._set_state("running")

    def add_listener(self, callback: Callable[[str, dict], None]) -> None:
        self._listeners.append(callback)

    def _set_state(self, state: str) -> None:
        self.state = state
        for cb in self._listeners:
            cb("state", {"state": state})

    def close(self) -> None:
        self.release.set()
        self._pool.shutdown(wait=True)


def make_result(
    line: str,
    *,
    part_id: str,
    recipe: str = "default",
    meas_id: str | None = None,
    product_id: str | None = None,
    job_id: str | None = None,
    site: str = "plant1",
) -> InspectionResult:
    ng = part_id.endswith("X")
    defects = (
        [
            Defect(
                camera="top",
                class_name="scratch",
                class_id=1,
                confidence=0.91,
                xyxy=[10.0, 12.0, 40.0, 30.0],
                area_px=540.0,
            )
        ]
        if ng
        else []
    )
    return InspectionResult(
        site=site,
        line=line,
        part_id=part_id,
        recipe=recipe,
        meas_id=meas_id,
        product_id=product_id,
        job_id=job_id,
        trigger="triggered",
        verdict="NG" if ng else "OK",
        reasons=["scratch"] if ng else [],
        defects=defects,
        model=ModelInfo(name="tiny", version="7", sha256=MODEL_SHA),
        frames=[FrameInfo(camera="top", width=64, height=48, source_ref=f"{part_id}.png")],
        timings_ms={"capture": 1.5, "inference": 4.25, "total": 7.0},
    )

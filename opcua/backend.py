"""What the OPC UA server serves: an abstract backend, so `opcua` never imports `edge_agent`.

A running line (`edge_agent.line.LineRuntime`, through the publisher adapter) satisfies
`LineBackend`; the result journal (through the adapter) satisfies `ResultStore`. Results travel as
plain dicts in the shape of `schemas/result.schema.json` (`InspectionResult.model_dump(mode="json")`):

    {"result_id": "9f..", "seq": 12, "site": "plant1", "line": "line1", "part_id": "P-0001",
     "recipe": "default", "product_id": null, "meas_id": null, "job_id": null, "trigger": "triggered",
     "verdict": "NG", "reasons": ["scratch"], "defects": [{"camera": "top", "class": "scratch", ...}],
     "frames": [...], "model": {"name": "m", "version": "3", "sha256": null},
     "timestamp": "2026-11-25T14:00:00Z", "timings_ms": {"infer": 4.2, "total": 7.9}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

ResultBody = Mapping[str, Any]
StateListener = Callable[[str, dict], None]


@runtime_checkable
class LineBackend(Protocol):
    """One inspection line as the server sees it."""

    name: str
    #: "starting" | "running" | "paused" | "degraded" | "error" | "stopped"
    state: str
    #: "free_run" | "triggered"
    mode: str
    recipes: list[str]
    active_recipe: str
    model_version: str

    def set_recipe(self, name: str) -> None:
        """Make `name` the active recipe; raises KeyError (or ValueError) for an unknown one."""

    def trigger(
        self,
        part_id: str | None = None,
        *,
        meas_id: str | None = None,
        recipe: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> Future:
        """Inspect one part; the future resolves to the journaled result body (a dict)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def add_listener(self, callback: StateListener) -> None:
        """`callback(event, payload)` on state changes; called from the line's threads."""


@runtime_checkable
class ResultStore(Protocol):
    """Read access to the result history (the journal): GetResultById, GetResultListFiltered."""

    def get_by_id(self, result_id: str) -> ResultBody | None: ...

    def query(
        self,
        *,
        line: str | None = None,
        part_id: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        newest_first: bool = True,
        **equals: str,
    ) -> list[ResultBody]:
        """Results of `line` matching `part_id` and every `field=value` in `equals`
        (meas_id, job_id, product_id, recipe), `offset` and `limit` applied after filtering."""

"""What the OPC UA server serves: an abstract backend, so `opcua` never imports `edge_agent`.

A running line (`edge_agent.line.LineRuntime`, through the publisher adapter) satisfies
`LineBackend`; the result journal (through the adapter) satisfies `ResultStore`. Results cross this
boundary typed, as `contract.InspectionResult` (the one result contract both packages import).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from contract import InspectionResult

StateListener = Callable[[str, dict], None]


@dataclass(frozen=True)
class LineConfiguration:
    """The line's active configuration (its YAML and its model) as OPC 40100 ConfigurationManagement
    serves it; results' InternalConfigurationId carries the same `id` and `version`."""

    id: str
    version: str
    sha256: str  # of the line's effective configuration and the model file together
    description: str
    last_modified: datetime


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
    ) -> Future[InspectionResult]:
        """Inspect one part; the future resolves to the journaled result."""

    def pause(self) -> None: ...

    def resume(
        self,
        *,
        meas_id: str | None = None,
        part_id: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        """Go on inspecting; in free-run the ids given are carried by every result (StartContinuous)."""

    def add_listener(self, callback: StateListener) -> None:
        """`callback(event, payload)` on state changes; called from the line's threads."""

    def configuration(self) -> LineConfiguration:
        """The active configuration (changes when the line's YAML or model is reloaded)."""


@runtime_checkable
class ResultStore(Protocol):
    """Read access to the result history (the journal): GetResultById, GetResultListFiltered."""

    def get_by_id(self, result_id: str) -> InspectionResult | None: ...

    def query(
        self,
        *,
        line: str | None = None,
        part_id: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        newest_first: bool = True,
        by_time: bool = False,
        **equals: str,
    ) -> list[InspectionResult]:
        """Results of `line` matching `part_id` and every `field=value` in `equals`
        (meas_id, job_id, product_id, recipe), `offset` and `limit` applied after filtering; in
        journal (seq) order, or with `by_time` by timestamp (the results' CreationTime), then seq."""

    def between(
        self,
        *,
        line: str | None,
        since: datetime | None,
        until: datetime | None,
        after: tuple[float, int] | None,
        limit: int,
        newest_first: bool,
    ) -> list[InspectionResult]:
        """Results of `line` (None: every line) with since <= timestamp <= until (None: open), in
        (timestamp, seq) order, only those past `after` = (timestamp, seq) in that order (HistoryRead)."""


def configuration_id(line: str, model_name: str) -> str:
    """The Id of a line's configuration: the same for the configuration and for its results."""
    return f"{line}:{model_name}"

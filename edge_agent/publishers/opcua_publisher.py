"""OPC UA publisher plug-in: runs the `opcua` server for the agent's lines.

```yaml
publishers:
  - type: opcua
    endpoint: opc.tcp://0.0.0.0:4840/edge-inspect/
    security: production
    pki_dir: /var/lib/edge-inspect/pki
    users: [{name: mes, role: operator, password_hash: "scrypt$..."}]
```

The server lives in its own thread and event loop (`opcua.server.ServerThread`); `notify()` only
queues the result body for it and returns. Guaranteed part: the OPC UA result history
(GetResultById, GetResultListFiltered) is read from the journal, so a client that was away catches
up from there; LatestResult and ResultReadyEvent carry every result the server was notified of.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Literal

from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import Publisher, PublisherContext
from edge_agent.result import InspectionResult
from opcua.backend import ResultBody
from opcua.config import OpcUaServerConfig

logger = logging.getLogger(__name__)


class OpcUaPublisherConfig(OpcUaServerConfig):
    """`type: opcua` entry of the agent's `publishers:` list (all server settings inline)."""

    type: Literal["opcua"] = "opcua"
    name: str = "opcua"


def result_body(result: InspectionResult) -> dict[str, Any]:
    """The dict the OPC UA server serves: `schemas/result.schema.json` shape (aliases, JSON types)."""
    return result.model_dump(mode="json", by_alias=True)


class JournalResultStore:
    """`opcua.backend.ResultStore` over the agent's `ResultJournal`."""

    def __init__(self, journal: ResultJournal) -> None:
        self.journal = journal

    def get_by_id(self, result_id: str) -> ResultBody | None:
        result = self.journal.get_by_id(result_id) if result_id else None
        return result_body(result) if result is not None else None

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
        if not equals:
            rows = self.journal.query(
                line=line, part_id=part_id, limit=offset + limit, newest_first=newest_first
            )
            return [result_body(r) for r in rows[offset:]]
        # meas_id/job_id/product_id/recipe are not journal columns: scan the line's rows (oldest first
        # lazily, stopping once the page is full; newest first has to read them all).
        rows = self.journal.iter_since(0, line=line)
        if newest_first:
            rows = reversed(list(rows))
        matched: list[ResultBody] = []
        for r in rows:
            if part_id is not None and r.part_id != part_id:
                continue
            if all(getattr(r, key, None) == value for key, value in equals.items()):
                matched.append(result_body(r))
                if len(matched) >= offset + limit:
                    break
        return matched[offset:]


class LineAdapter:
    """Maps the agent's `LineRuntime` onto `opcua.backend.LineBackend` (result futures -> dicts)."""

    def __init__(self, line: Any) -> None:
        self._line = line

    def __getattr__(self, name: str) -> Any:  # name, state, mode, recipes, active_recipe, model_version
        return getattr(self._line, name)

    def set_recipe(self, name: str) -> None:
        self._line.set_recipe(name)

    def trigger(
        self,
        part_id: str | None = None,
        *,
        meas_id: str | None = None,
        recipe: str | None = None,
        product_id: str | None = None,
        job_id: str | None = None,
    ) -> Future:
        inner = self._line.trigger(
            part_id, meas_id=meas_id, recipe=recipe, product_id=product_id, job_id=job_id
        )
        outer: Future = Future()

        def done(f: Future) -> None:
            if f.exception() is not None:
                outer.set_exception(f.exception())  # type: ignore[arg-type]
            else:
                value = f.result()
                outer.set_result(result_body(value) if isinstance(value, InspectionResult) else value)

        inner.add_done_callback(done)
        return outer

    def pause(self) -> None:
        self._line.pause()

    def resume(self) -> None:
        self._line.resume()

    def add_listener(self, callback: Any) -> None:
        self._line.add_listener(callback)


class OpcUaPublisher(Publisher):
    """Publisher plug-in that owns the OPC UA server."""

    guaranteed = False  # history is served from the journal itself; no cursor to keep

    def __init__(self, config: OpcUaPublisherConfig, context: PublisherContext) -> None:
        from opcua.server import ServerThread  # asyncua is imported only when the plug-in is used

        self.config = config
        self.name = config.name
        self.context = context
        lines: Mapping[str, Any] = {name: LineAdapter(line) for name, line in context.lines.items()}
        self.server = ServerThread(config, lines, JournalResultStore(context.journal))

    def start(self, journal: ResultJournal) -> None:
        self.server.start()

    def notify(self, result: InspectionResult) -> None:
        self.server.submit_result(result_body(result))

    def publish_status(self, line: str, status: dict[str, Any]) -> None:
        self.server.line_changed(line)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.stop(timeout)

    def stats(self) -> dict[str, float]:
        return self.server.stats()

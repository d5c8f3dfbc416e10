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
(GetResultById, GetResultListFiltered, and HistoryRead of ResultReadyEvents) is read from the journal,
so a client that was away catches up from there; LatestResult and ResultReadyEvent carry every result
the server was notified of.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from contract import InspectionResult
from edge_agent.archive import archived_image
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import Publisher, PublisherContext
from opcua.backend import LineConfiguration, configuration_id
from opcua.config import OpcUaServerConfig

logger = logging.getLogger(__name__)


class OpcUaPublisherConfig(OpcUaServerConfig):
    """`type: opcua` entry of the agent's `publishers:` list (all server settings inline)."""

    type: Literal["opcua"] = "opcua"
    name: str = "opcua"
    #: the lines start only once the server listens (their first results then reach subscribers live);
    #: off: they start at once and the results made meanwhile reach clients as history (docs/opcua.md)
    hold_lines_until_started: bool = False


class JournalResultStore:
    """`opcua.backend.ResultStore` over the agent's `ResultJournal` (and its NG archive, if any)."""

    def __init__(self, journal: ResultJournal, archive_dir: Path | None = None) -> None:
        self.journal = journal
        self.archive_dir = archive_dir

    def get_by_id(self, result_id: str) -> InspectionResult | None:
        return self.journal.get_by_id(result_id) if result_id else None

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
        if not equals:
            rows = self.journal.query(
                line=line, part_id=part_id, limit=offset + limit, newest_first=newest_first, by_time=by_time
            )
            return rows[offset:]
        # meas_id/job_id/product_id/recipe are not journal columns: scan the line's rows (oldest first
        # lazily, stopping once the page is full; newest first or by time has to read them all).
        rows = self.journal.iter_since(0, line=line)
        if newest_first or by_time:
            ordered = list(rows)
            if by_time:
                ordered.sort(key=lambda r: (r.timestamp, r.seq or 0))
            rows = reversed(ordered) if newest_first else iter(ordered)
        matched: list[InspectionResult] = []
        for r in rows:
            if part_id is not None and r.part_id != part_id:
                continue
            if all(getattr(r, key, None) == value for key, value in equals.items()):
                matched.append(r)
                if len(matched) >= offset + limit:
                    break
        return matched[offset:]

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
        return self.journal.query(
            since_time=since,
            until_time=until,
            line=line,
            limit=limit,
            newest_first=newest_first,
            by_time=True,
            after=after,
        )

    def images(self, result: InspectionResult) -> dict[str, tuple[str, bytes]]:
        """camera -> (path, bytes) of the result's raw images kept by the NG archive."""
        if self.archive_dir is None:
            return {}
        found: dict[str, tuple[str, bytes]] = {}
        for frame in result.frames:
            path = archived_image(self.archive_dir, result, frame.camera)
            if path is None:
                continue
            try:
                found[frame.camera] = (str(path), path.read_bytes())
            except OSError as exc:  # deleted by the quota meanwhile: the result simply has no image
                logger.info("opcua: archived image %s unreadable: %s", path, exc)
        return found


class LineAdapter:
    """Presents the agent's `LineRuntime` as `opcua.backend.LineBackend`."""

    def __init__(self, line: Any) -> None:
        self._line = line
        self._conf_key: tuple[Any, ...] | None = None
        self._conf: LineConfiguration | None = None

    def __getattr__(self, name: str) -> Any:  # name, state, mode, recipes, active_recipe, model_version
        return getattr(self._line, name)

    def configuration(self) -> LineConfiguration:
        """The line's YAML (as loaded) and its model, hashed together; recomputed after a reload."""
        line = self._line
        inspector = getattr(line, "_inspector", None)
        info = inspector.model_info if inspector is not None else None
        key = (id(line.config), info)
        if key != self._conf_key or self._conf is None:
            digest = hashlib.sha256(line.config.model_dump_json().encode())
            digest.update(((info.sha256 or "") if info else "").encode())
            model_name = info.name if info else ""  # a line whose model failed to load
            model_version = info.version if info else ""
            self._conf = LineConfiguration(
                id=configuration_id(line.name, model_name),
                version=model_version,
                sha256=digest.hexdigest(),
                description=f"line {line.name}: its YAML and model {model_name} v{model_version}",
                last_modified=datetime.now(timezone.utc),
            )
            self._conf_key = key
        return self._conf


class OpcUaPublisher(Publisher):
    """Publisher plug-in that owns the OPC UA server."""

    guaranteed = False  # history is served from the journal itself; no cursor to keep

    def __init__(self, config: OpcUaPublisherConfig, context: PublisherContext) -> None:
        from opcua.thread import ServerThread  # asyncua is imported in the server's own thread

        self.config = config
        self.name = config.name
        self.context = context
        lines: Mapping[str, Any] = {name: LineAdapter(line) for name, line in context.lines.items()}
        self.server = ServerThread(config, lines, JournalResultStore(context.journal, context.archive_dir))

    def start(self, journal: ResultJournal) -> None:
        """Check what can be checked at once (certificate, port), then start the server without
        waiting for it: building the address space takes 1-3 s, and the lines must not wait for that
        (agent start -> first result stays under 2 s). Results made meanwhile are queued and published
        once it listens, and are in the event history (HistoryRead); a later failure is logged and shows
        in `stats()`. With `hold_lines_until_started` the agent waits for it (lines start after)."""
        self._preflight()
        self.server.start(wait=self.config.hold_lines_until_started)

    def _preflight(self) -> None:
        cfg = self.config
        if cfg.security == "production" and not (cfg.cert_path.exists() and cfg.key_path.exists()):
            raise FileNotFoundError(
                f"opcua: server certificate {cfg.cert_path} or key {cfg.key_path} not found; "
                f"make them with `edge-inspect opcua cert --pki-dir {cfg.pki_dir}`"
            )
        url = urlparse(cfg.endpoint)
        if url.port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((url.hostname or "0.0.0.0", url.port))
                except OSError as exc:
                    raise OSError(f"opcua: cannot listen on {cfg.endpoint}: {exc.strerror or exc}") from exc

    def notify(self, result: InspectionResult) -> None:
        self.server.submit_result(result)

    def publish_status(self, line: str, status: dict[str, Any]) -> None:
        self.server.line_changed(line)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.stop(timeout)

    def stats(self) -> dict[str, float]:
        return {**self.server.stats(), "server_started": float(self.server.started)}

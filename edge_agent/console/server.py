"""`Console`: the line console of one agent: its live hub, journal reader, archive files, logins, and the
uvicorn server that serves it on its own thread and event loop (never the lines' threads).

Example (what `Agent.start()` does when the site file has `console: {enabled: true}`):
    >>> console = Console(agent, agent.config.site.console)       # doctest: +SKIP
    >>> console.start(); console.url                               # doctest: +SKIP
    'http://127.0.0.1:8080'
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.console.live import ConsoleHub
from edge_agent.console.settings import ConsoleConfig
from edge_agent.console.store import ArchiveFiles, JournalReader

if TYPE_CHECKING:
    from starlette.requests import Request

    from contract.result import InspectionResult
    from contract.web import Session
    from edge_agent.agent import Agent
    from edge_agent.outcome import Outcome

log = logging.getLogger(__name__)


class Console:
    def __init__(self, agent: Agent, config: ConsoleConfig) -> None:
        from edge_agent.console.auth import Auth

        self.agent = agent
        self.config = config
        site = agent.config.site
        self.hub = ConsoleHub(site.journal.path, list(agent.lines), config.shift_starts)
        self.reader = JournalReader(site.journal.path)
        self.archive = ArchiveFiles(site.archive.path if site.archive.enabled else None)
        # beside the journal: sessions outlive an agent restart (contract.session_store)
        self.auth = Auth(config, Path(site.journal.path).parent / "console-sessions.sqlite")
        self.tls = config.tls is not None
        self.closing = False
        self._overview_cache: tuple[float, dict[str, Any]] | None = None
        self._overview_json: tuple[dict[str, Any], str] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # -- the agent's hook ------------------------------------------------------------------------------
    def offer(self, line: str, result: InspectionResult, outcome: Outcome | None) -> None:
        """Called on the line's journal thread after each commit: keep references, never encode here."""
        images = {cam: f.image for cam, f in outcome.frames.items()} if outcome is not None else None
        self.hub.offer(line, result, images, dict(outcome.anomaly) if outcome is not None else None)

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Bind (an error here is the caller's: port in use...), then serve on a thread."""
        import uvicorn

        from edge_agent.console.routes import build_app

        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self._sock = sock
        tls = self.config.tls
        server_config = uvicorn.Config(
            build_app(self),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
        self._server = uvicorn.Server(server_config)
        self._thread = threading.Thread(target=self._serve, name="console-http", daemon=True)
        self._thread.start()
        threading.Thread(target=self.hub.seed, name="console-seed", daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise OSError(f"console on {self.url} did not start (see the log)")

    def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        self._server.run(sockets=[self._sock])  # uvloop and httptools when installed

    def stop(self, timeout: float = 5.0) -> None:
        self.closing = True  # live streams end at their next tick
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.auth.close()

    # -- what pages share --------------------------------------------------------------------------------
    def line_names(self) -> list[str]:
        return list(self.agent.lines)

    def page_context(self, request: Request, session: Session | None) -> dict[str, Any]:
        return {
            "site": self.agent.site,
            "lines": self.line_names(),
            "session": session,
            "csrf": session.csrf if session else "",
            "no_login": not self.auth.login_required,
            "path": request.url.path,
        }

    def overview(self, max_age_s: float = 0.0) -> dict[str, Any]:
        """Everything the overview shows, from memory (no journal query): fast with any journal size.

        With `max_age_s`, an overview built that recently is shared (many live streams, one build)."""
        cached = self._overview_cache
        if max_age_s and cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        out = self._build_overview()
        self._overview_cache = (time.monotonic(), out)
        self._overview_json = None
        return out

    def overview_json(self, max_age_s: float) -> str:
        """The overview as JSON text, serialised once for all live streams."""
        data = self.overview(max_age_s)
        cached = self._overview_json
        if cached is not None and cached[0] is data:
            return cached[1]
        text = json.dumps(data, default=str)
        self._overview_json = (data, text)
        return text

    def _build_overview(self) -> dict[str, Any]:
        agent = self.agent
        lines = {}
        now = time.time()
        for name, line in list(agent.lines.items()):
            st = line.status()
            feed = self.hub.lines.get(name)
            model = st.get("model") or {}
            lines[name] = {
                "name": name,
                "state": st["state"],
                "mode": st["mode"],
                "fps": st["fps"],
                "recipe": st["recipe"],
                "recipes": st["recipes"],
                "model": {"name": model.get("name"), "version": model.get("version")},
                "providers": st["providers"],
                "cameras": [
                    {k: c[k] for k in ("name", "state", "frames", "dropped", "reconnects", "last_error")}
                    for c in st["cameras"]
                ],
                "counts": st["counts"],
                # a camera being reconnected says why (its own error), not only the line's last one
                "last_error": "; ".join(
                    [
                        f"camera {c['name']} {c['state']}: {c['last_error']}"
                        for c in st["cameras"]
                        if c["state"] in ("reconnecting", "connecting") and c.get("last_error")
                    ]
                    + ([st["last_error"]] if st["last_error"] else [])
                )
                or None,
                "last_seq": st["last_seq"],
                # how long ago the newest result was made (the page greys out after `stale_after_s`)
                "last_result_age_s": round(now - feed.latest.timestamp.timestamp(), 1)
                if feed and feed.latest
                else None,
                "io": {
                    "trigger": st["mode"],
                    "triggers": st["counts"].get("triggers", 0),
                    "trigger_failures": st["counts"].get("trigger_failures", 0),
                    "waiting": (st.get("queues") or {}).get("triggers", 0),
                    "last_verdict": feed.latest.verdict if feed and feed.latest else None,
                },
                "shift": feed.shift.to_dict() if feed else None,
                "reviews": self.hub.review_rates(name),
                "recent": list(feed.recent)[:50] if feed else [],
            }
        publishers = {
            name: {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
            for name, stats in agent.publisher_stats().items()
        }
        archive = None
        if agent.archive is not None:
            s = agent.archive.stats
            archive = {"written": s.written, "degraded": s.degraded, "mb": round(s.bytes_used / 1e6, 1)}
        return {
            "site": agent.site,
            "time": time.strftime("%H:%M:%S"),
            "lines": lines,
            "publishers": publishers,
            "archive": archive,
            "watchers": self.hub.watchers,
            "frames_encoded": self.hub.frames_encoded,
            "seeded": self.hub.seeded.is_set(),
        }

    def line_file(self, name: str) -> Path:
        return self.agent.loaded_line(name).file

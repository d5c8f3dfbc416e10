"""`HubServer`: the process behind `edge-inspect hub serve`: ingest, HTTP (agents' API + dashboard),
retention. Each has its own database connection, so the dashboard never delays an acknowledgement.

Example:
    >>> from hub.config import HubConfig
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> server = HubServer(HubConfig(store=f"sqlite:///{d}/hub.sqlite", data_dir=d,
    ...     ingest={"endpoint": "tcp://127.0.0.1:*", "security": "plain"}, http={"port": 0}))
    >>> server.start()
    >>> server.ingest.endpoint.startswith("tcp://127.0.0.1:"), server.http_url.startswith("http://")
    (True, True)
    >>> server.stop()
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from hub.config import HubConfig
from hub.ingest import make_ingest
from hub.store import HubStore

log = logging.getLogger(__name__)


class HubServer:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.ingest = make_ingest(config)
        self.web_store: HubStore | None = None
        self.http_url: str | None = None
        self._uvicorn = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._stop_requested = False  # set by signal handlers: a plain flag, no lock

    def start(self) -> None:
        import uvicorn

        from hub.app import build_app

        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.web_store = HubStore.open(self.config.store, durability=self.config.ingest.durability)
        self.ingest.start()
        app = build_app(self.config, self.web_store)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.http.host, self.config.http.port))
        except OSError as exc:
            self.ingest.stop()
            raise RuntimeError(
                f"hub HTTP cannot listen on {self.config.http.host}:{self.config.http.port}: {exc}"
            ) from exc
        host, port = sock.getsockname()[:2]
        self.http_url = f"http://{host}:{port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._uvicorn = uvicorn.Server(config)
        t = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="hub-http", daemon=True
        )
        t.start()
        self._threads.append(t)
        deadline = time.monotonic() + 20
        while not self._uvicorn.started and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.02)
        retention = threading.Thread(target=self._retention_loop, name="hub-retention", daemon=True)
        retention.start()
        self._threads.append(retention)
        log.info(
            "hub: results on %s, dashboard and agent API on %s, store %s",
            self.ingest.endpoint,
            self.http_url,
            self.web_store.path,
        )

    def request_stop(self) -> None:
        self._stop_requested = True

    def wait(self) -> None:
        while not self._stop_requested and not self._stop.is_set():
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self.ingest.stop()
        for t in self._threads:
            t.join(10)
        if self.web_store is not None:
            self.web_store.close()

    def _retention_loop(self) -> None:
        r = self.config.retention
        while True:
            try:
                assert self.web_store is not None
                out = self.web_store.enforce_retention(r.raw_days, r.minute_rollup_days, r.day_rollup_days)
                if any(out.values()):
                    log.info("hub retention: %s", out)
            except Exception:
                log.exception("hub retention failed")
            if self._stop.wait(r.check_every_s):
                return

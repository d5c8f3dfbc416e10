"""Fixtures for the OPC UA tests: real servers on 127.0.0.1 (port 0), real journals, real certificates.

One demo server (`security: none`) and one production server are started per test session and
shared, since an asyncua server takes ~1-2 s to start. Each serves its own lines and journal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.passwords import hash_password
from edge_agent.journal import ResultJournal
from edge_agent.publishers.opcua_publisher import JournalResultStore
from opcua.config import OpcUaServerConfig, UserConfig
from opcua.security import make_certificate
from opcua.thread import ServerThread
from tests.opcua.lines import JournalLine
from tests.opcua.opcua_helpers import CLIENT_URI, PASSWORDS

logging.getLogger("asyncua").setLevel(logging.ERROR)


@dataclass
class RunningServer:
    server: ServerThread
    journal: ResultJournal
    lines: dict[str, JournalLine]
    config: OpcUaServerConfig
    start_log: list[logging.LogRecord]

    @property
    def url(self) -> str:
        return self.server.endpoint_url


def _start(config: OpcUaServerConfig, journal: ResultJournal, lines: dict[str, JournalLine]) -> RunningServer:
    server = ServerThread(config, lines, JournalResultStore(journal))
    for line in lines.values():
        line.sink = server.submit_result
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("opcua.server").addHandler(handler)
    try:
        server.start()
    finally:
        logging.getLogger("opcua.server").removeHandler(handler)
    return RunningServer(server, journal, lines, config, records)


@contextmanager
def demo_profile_server(root: Path, **modes: str) -> Iterator[RunningServer]:
    """A `security: none` server over a fresh journal in `root`: one JournalLine per name (its mode)."""
    journal = ResultJournal(root / "journal.sqlite")
    lines = {name: JournalLine(name, journal, mode=mode) for name, mode in modes.items()}
    config = OpcUaServerConfig(security="none", endpoint="opc.tcp://127.0.0.1:0/edge-inspect/")
    running = _start(config, journal, lines)
    try:
        yield running
    finally:
        running.server.stop()
        for line in lines.values():
            line.close()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("demo")
    with demo_profile_server(root, line1="triggered", plc1="triggered", free1="free_run") as running:
        yield running


@dataclass
class Pki:
    dir: Path
    server_cert: Path
    trusted_client: tuple[Path, Path]
    untrusted_client: tuple[Path, Path]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    pki_dir = root / "server"
    make_certificate(
        pki_dir / "own" / "cert.der",
        pki_dir / "own" / "key.pem",
        application_uri="urn:edge-inspect:opcua:server",
        common_name="edge-inspect-test",
        hostnames=["127.0.0.1", "localhost"],
    )
    trusted = (root / "client" / "cert.der", root / "client" / "key.pem")
    make_certificate(*trusted, application_uri=CLIENT_URI, common_name="mes-client", hostnames=["localhost"])
    untrusted = (root / "stranger" / "cert.der", root / "stranger" / "key.pem")
    make_certificate(*untrusted, application_uri=CLIENT_URI, common_name="stranger", hostnames=["localhost"])
    (pki_dir / "trusted").mkdir(parents=True)
    (pki_dir / "trusted" / "mes-client.der").write_bytes(trusted[0].read_bytes())
    return Pki(pki_dir, pki_dir / "own" / "cert.der", trusted, untrusted)


@pytest.fixture(scope="session")
def production_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningServer]:
    journal = ResultJournal(tmp_path_factory.mktemp("prod") / "journal.sqlite")
    lines = {"secure1": JournalLine("secure1", journal)}
    config = OpcUaServerConfig(
        security="production",
        endpoint="opc.tcp://127.0.0.1:0/edge-inspect/",
        pki_dir=pki.dir,
        users=[
            UserConfig(name="mes", role="operator", password_hash=hash_password(PASSWORDS["mes"])),
            UserConfig(name="scada", role="viewer", password_hash=hash_password(PASSWORDS["scada"])),
        ],
    )
    running = _start(config, journal, lines)
    yield running
    running.server.stop()
    for line in lines.values():
        line.close()

"""The hub's results stream is CURVE by default: an agent whose public key is authorised delivers, one
whose key is not gets nothing stored (and keeps its results in its journal)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from hub_support import wait_for

from contract.result import InspectionResult, ModelInfo
from contract.zmq_security import generate_keypair
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from hub.config import HubConfig
from hub.server import HubServer


def _agent(
    tmp: Path, name: str, endpoint: str, keys: Path, hub_public: Path, authorise_in: Path | None = None
):
    journal = ResultJournal(tmp / f"{name}.sqlite")
    pair = generate_keypair(keys, name)
    if authorise_in is not None:  # the hub's operator copied this agent's public key
        (authorise_in / f"{name}.key").write_bytes(pair.public_file.read_bytes())
    config = MesDeliveryConfig(
        endpoint=endpoint,
        name="hub",
        resend_initial_s=0.2,
        resend_max_s=0.5,
        curve={"secret_key_file": pair.secret_file, "server_public_key_file": hub_public},
    )
    publisher = MesDeliveryPublisher(
        config, PublisherContext(site=name, boot_id=uuid.uuid4().hex, journal=journal)
    )
    publisher.start(journal)
    for i in range(20):
        r = journal.append(
            InspectionResult(
                site=name,
                line="press",
                part_id=f"P{i}",
                recipe="r",
                verdict="OK",
                model=ModelInfo(name="m", version="1"),
            )
        )
        publisher.notify(r)
    return journal, publisher, pair


def test_only_authorised_agents_deliver(tmp_path: Path):
    keys, authorised = tmp_path / "keys", tmp_path / "authorised"
    authorised.mkdir()
    hub_pair = generate_keypair(keys, "hub")
    server = HubServer(
        HubConfig(
            store=f"sqlite:///{tmp_path / 'hub.sqlite'}",
            data_dir=tmp_path / "data",
            http={"port": 0},
            ingest={
                "endpoint": "tcp://127.0.0.1:*",
                "curve": {"secret_key_file": hub_pair.secret_file, "authorized_keys_dir": authorised},
            },
        )
    )
    server.start()
    try:
        endpoint = server.ingest.endpoint
        good = _agent(tmp_path, "good", endpoint, keys, hub_pair.public_file, authorise_in=authorised)
        bad = _agent(tmp_path, "bad", endpoint, keys, hub_pair.public_file)
        wait_for(lambda: server.web_store.count() == 20, what="the authorised agent's 20 results")
        time.sleep(1.0)  # the other agent keeps trying; nothing of it may arrive
        sites = {r[0] for r in server.web_store.db.query("SELECT DISTINCT site FROM results")}
        assert sites == {"good"} and server.web_store.count() == 20
        assert bad[1].stats()["backlog"] == 20  # still owed, kept in its journal
        for journal, publisher, _ in (good, bad):
            publisher.stop(2)
            journal.close()
    finally:
        server.stop()

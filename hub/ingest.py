"""The hub's results stream: the reference MES receiver (receive → store → commit → ack) on `HubStore`.

Agents deliver to it with their ordinary `type: mes` publisher (acknowledged, resent until acked, the
journal is the queue), so a result reaches the hub exactly once across an agent or hub `kill -9`.
"""

from __future__ import annotations

from hub.config import HubConfig
from hub.store import HubStore
from mes.receiver import MesReceiver


def make_ingest(config: HubConfig) -> MesReceiver:
    """A receiver bound to `config.ingest.endpoint`, storing into the hub's database (own connection)."""
    security = config.ingest.model_dump(include={"security", "curve"})
    from contract.zmq_security import ServerSecurity

    return MesReceiver(
        config.ingest.endpoint,
        None,  # the store comes from the factory
        ServerSecurity.model_validate(security),
        durability=config.ingest.durability,
        max_batch=config.ingest.max_batch,
        store_factory=lambda: HubStore.open(config.store, durability=config.ingest.durability),
    )

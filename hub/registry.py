"""Agents and lines: who is registered, who is online, who is late, and what runs where.

An agent is provisioned once on the hub (`edge-inspect hub agent add AGENT --company C` prints its
token; only the token's sha256 is stored). The agent registers at start and heartbeats every
`heartbeat_s`; each heartbeat carries its lines' state, model and recipe, so the registry is never
older than one heartbeat. An agent silent for `late_after_heartbeats` heartbeats is *late*, for
`offline_after_s` *offline*.

Example:
    >>> import tempfile, pathlib
    >>> from hub.store import HubStore
    >>> store = HubStore.open(str(pathlib.Path(tempfile.mkdtemp()) / "hub.sqlite"))
    >>> reg = Registry(store.db)
    >>> token = reg.add_agent("acme-pc1", company="Acme")
    >>> reg.authenticate(token)["agent_id"], reg.authenticate("wrong")
    ('acme-pc1', None)
    >>> _ = reg.heartbeat("acme-pc1", {"site": "acme-north", "lines": {"press": {"state": "running"}}})
    >>> [(a["agent_id"], a["status"]) for a in reg.agents()]
    [('acme-pc1', 'online')]
    >>> store.close()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

from hub.db import Database

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# a line with what its agent last said, and the model card of the file it runs where the hub has it
# (a rollout's manifest): the card's name and version, not the ONNX file's export date
_LINES_SQL = (
    "SELECT l.*, a.heartbeat_s, a.last_seen AS agent_seen, m.name AS card_name, m.version AS card_version "
    "FROM lines l JOIN agents a ON a.agent_id = l.agent_id LEFT JOIN models m ON m.sha256 = l.model_sha256"
)


def _line_row(r: dict[str, Any], agent_status: str) -> None:
    """Fill in what the pages show: the card's model name/version, and whether the state is current."""
    r["agent_status"] = agent_status
    r["file_version"] = r["model_version"]
    card_name, card_version = r.pop("card_name", None), r.pop("card_version", None)
    if card_name is not None:
        r["model_name"], r["model_version"] = card_name, card_version
    # a silent agent's lines: their state is what it said last, not what they do now
    r["state_current"] = agent_status == "online"


class RegistryError(ValueError):
    """A registration or heartbeat the hub refuses (the message says why)."""


class Registry:
    def __init__(
        self, db: Database, *, late_after_heartbeats: float = 3, offline_after_s: float = 300
    ) -> None:
        self.db = db
        self.late_after_heartbeats = late_after_heartbeats
        self.offline_after_s = offline_after_s

    # -- provisioning ----------------------------------------------------------------------------
    def add_agent(self, agent_id: str, company: str, *, rotate: bool = False) -> str:
        """Provision an agent (or give it a new token with `rotate`); returns the token, shown once."""
        if not _ID.match(agent_id):
            raise RegistryError(f"agent id {agent_id!r}: use letters, digits, '_', '.', '-' (at most 64)")
        if not company.strip():
            raise RegistryError("company must not be empty")
        token = secrets.token_urlsafe(32)
        exists = self.db.scalar("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,))
        if exists and not rotate:
            raise RegistryError(f"agent {agent_id!r} exists already (rotate its token with --rotate)")
        if exists:
            self.db.execute(
                "UPDATE agents SET token_sha256 = ?, company = ? WHERE agent_id = ?",
                (token_hash(token), company, agent_id),
            )
        else:
            self.db.execute(
                "INSERT INTO agents(agent_id, company, token_sha256, registered_at) VALUES (?,?,?,?)",
                (agent_id, company, token_hash(token), None),
            )
        return token

    def authenticate(self, token: str | None) -> dict[str, Any] | None:
        """The agent a bearer token belongs to, or None."""
        if not token:
            return None
        wanted = token_hash(token)
        rows = self.db.query_dicts(
            "SELECT agent_id, company, site, token_sha256 FROM agents WHERE token_sha256 = ?", (wanted,)
        )
        if rows and hmac.compare_digest(rows[0]["token_sha256"], wanted):
            return rows[0]
        return None

    # -- what agents tell ------------------------------------------------------------------------
    def register(self, agent_id: str, payload: dict[str, Any]) -> None:
        self.heartbeat(agent_id, payload, registering=True)

    def heartbeat(
        self, agent_id: str, payload: dict[str, Any], *, registering: bool = False
    ) -> dict[str, Any]:
        """Store what the agent says about itself and its lines; returns the agent's registry row."""
        now = time.time()
        agent = self.db.query_dicts(
            "SELECT agent_id, company, site FROM agents WHERE agent_id = ?", (agent_id,)
        )
        if not agent:
            raise RegistryError(f"agent {agent_id!r} is not provisioned on this hub")
        company = agent[0]["company"]
        site = str(payload.get("site") or "")
        if not _ID.match(site):
            raise RegistryError(f"site {site!r} is not a valid site id")
        owner = self.db.scalar(
            "SELECT agent_id FROM agents WHERE site = ? AND agent_id <> ?", (site, agent_id)
        )
        if owner is not None:
            raise RegistryError(f"site {site!r} is already registered by agent {owner!r}")
        lines = payload.get("lines") or {}
        if not isinstance(lines, dict):
            raise RegistryError("'lines' must be a mapping of line name to its state")
        with self.db.transaction():
            self.db.execute(
                "UPDATE agents SET site = ?, version = ?, boot_id = ?, hostname = ?, last_seen = ?, "
                "heartbeat_s = ?, info = ?, registered_at = CASE WHEN ? = 1 THEN ? ELSE registered_at END "
                "WHERE agent_id = ?",
                (
                    site,
                    payload.get("version"),
                    payload.get("boot_id"),
                    payload.get("hostname"),
                    now,
                    float(payload.get("heartbeat_s") or 10),
                    json.dumps(payload.get("info") or {}),
                    1 if registering else 0,
                    now,
                    agent_id,
                ),
            )
            for name, line in lines.items():
                if not _ID.match(str(name)):
                    raise RegistryError(f"line {name!r} is not a valid line id")
                model = line.get("model") or {}
                hub_model = line.get("hub_model") or {}
                self.db.execute(
                    "INSERT INTO lines(site, line, agent_id, company, model_name, model_version, "
                    "model_sha256, "
                    "recipe, state, hub_model_status, hub_model_error, last_seen) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (site, line) DO UPDATE SET agent_id = excluded.agent_id, "
                    "company = excluded.company, model_name = excluded.model_name, "
                    "model_version = excluded.model_version, model_sha256 = excluded.model_sha256, "
                    "recipe = excluded.recipe, state = excluded.state, "
                    "hub_model_status = excluded.hub_model_status, hub_model_error = "
                    "excluded.hub_model_error, "
                    "last_seen = excluded.last_seen",
                    (
                        site,
                        name,
                        agent_id,
                        company,
                        model.get("name"),
                        model.get("version"),
                        model.get("sha256"),
                        line.get("recipe"),
                        line.get("state"),
                        hub_model.get("status"),
                        hub_model.get("error"),
                        now,
                    ),
                )
        return {"agent_id": agent_id, "company": company, "site": site}

    # -- what the dashboard reads ----------------------------------------------------------------
    def status_of(self, last_seen: float | None, heartbeat_s: float | None, now: float) -> str:
        if last_seen is None:
            return "never seen"
        silent = now - last_seen
        if silent > self.offline_after_s:
            return "offline"
        if silent > self.late_after_heartbeats * (heartbeat_s or 10):
            return "late"
        return "online"

    def agents(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        rows = self.db.query_dicts(
            "SELECT agent_id, company, site, version, hostname, boot_id, registered_at, last_seen, "
            "heartbeat_s "
            "FROM agents ORDER BY company, agent_id"
        )
        for r in rows:
            r["status"] = self.status_of(r["last_seen"], r["heartbeat_s"], now)
            r["silent_s"] = None if r["last_seen"] is None else round(now - r["last_seen"], 1)
        return rows

    def lines(self, company: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        sql = _LINES_SQL
        params: tuple = ()
        if company is not None:
            sql += " WHERE l.company = ?"
            params = (company,)
        rows = self.db.query_dicts(sql + " ORDER BY l.company, l.site, l.line", params)
        for r in rows:
            _line_row(r, self.status_of(r["agent_seen"], r["heartbeat_s"], now))
        return rows

    def line(self, site: str, line: str, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        rows = self.db.query_dicts(_LINES_SQL + " WHERE l.site = ? AND l.line = ?", (site, line))
        for r in rows:
            _line_row(r, self.status_of(r["agent_seen"], r["heartbeat_s"], now))
        return rows[0] if rows else None

    def agent_of_line(self, site: str, line: str) -> str | None:
        return self.db.scalar("SELECT agent_id FROM lines WHERE site = ? AND line = ?", (site, line))

    def company_of_site(self, site: str) -> str | None:
        return self.db.scalar("SELECT company FROM agents WHERE site = ?", (site,))

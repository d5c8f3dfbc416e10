"""The hub's configuration file (`hub.yaml`), one pydantic model per section.

Everything has a default, so `edge-inspect hub serve --data var/hub --plain` runs a trial hub on SQLite
with no file at all. Relative paths are relative to the file (or to the working directory without one).

Example:
    >>> cfg = HubConfig.model_validate({"store": "postgresql://hub@db/hub", "ingest": {"security": "plain"}})
    >>> cfg.ingest.endpoint, cfg.retention.raw_days
    ('tcp://127.0.0.1:5570', 90.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.zmq_security import ServerSecurity


class IngestConfig(ServerSecurity):
    """The results stream: a ROUTER that agents' `type: mes` publishers connect to (CURVE by default)."""

    endpoint: str = Field("tcp://127.0.0.1:5570", description="ROUTER endpoint the agents connect to")
    durability: Literal["normal", "full"] = Field(
        "full", description="full: each batch is on disk (fsync / WAL flush) before it is acknowledged"
    )
    max_batch: int = Field(2000, ge=1, description="messages stored per transaction at most")


class HttpConfig(BaseModel):
    """Dashboard and the agents' HTTP API (registration, heartbeats, models, images)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535, description="0 = any free port")
    session_hours: float = Field(12, gt=0, description="a dashboard login lasts this long")
    secure_cookies: bool = Field(False, description="true behind HTTPS (the session cookie is then Secure)")
    login_attempts: int = Field(5, ge=1, description="failed logins from one address before it must wait ...")
    login_max_delay_s: float = Field(
        300, gt=0, description="... 1 s, doubling per further failure up to this (accounts never lock)"
    )


class RetentionConfig(BaseModel):
    """Raw rows and roll-ups are kept for different times: a year of charts needs no year of rows."""

    model_config = ConfigDict(extra="forbid")

    raw_days: float = Field(90.0, gt=0, description="compact result rows (PostgreSQL drops day partitions)")
    minute_rollup_days: float = Field(14, gt=0, description="per-minute roll-ups (drift, today's charts)")
    day_rollup_days: float = Field(730, gt=0, description="per-day roll-ups (30-day charts, yield)")
    check_every_s: float = Field(3600, gt=0)


class DriftConfig(BaseModel):
    """A line is flagged when its recent NG rate or mean detection confidence leaves its own baseline."""

    model_config = ConfigDict(extra="forbid")

    recent_minutes: int = Field(60, ge=1, description="window compared against the baseline")
    baseline_days: int = Field(7, ge=1, description="baseline: these days before the recent window")
    min_parts: int = Field(200, ge=1, description="fewer parts in either window: no verdict on drift")
    z: float = Field(4.0, gt=0, description="how many standard errors count as a shift")
    min_ng_change: float = Field(0.02, ge=0, description="and the NG rate moved by at least this much")
    min_conf_change: float = Field(0.05, ge=0, description="and the mean confidence moved by at least this")


class AgentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    late_after_heartbeats: float = Field(3, gt=0, description="an agent silent this many heartbeats is late")
    offline_after_s: float = Field(300, gt=0, description="an agent silent this long is offline")


class HubConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(
        "sqlite:///hub.sqlite",
        description="sqlite:///path (trial, default) or postgresql://user:pass@host:5432/db (programme)",
    )
    data_dir: Path = Field(Path("hub-data"), description="model files, fetched images, collected datasets")
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig(security="plain"))
    http: HttpConfig = Field(default_factory=HttpConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def load_hub_config(path: str | Path | None, data_dir: Path | None = None) -> HubConfig:
    """Read `hub.yaml` (errors name file, line and key), resolve paths; `data_dir` overrides the file."""
    from contract.yamlconf import load_yaml, resolve_model_paths, validate

    if path is None:
        cfg = HubConfig()
        base = Path.cwd()
    else:
        path = Path(path).resolve()
        cfg = validate(HubConfig, load_yaml(path))
        base = path.parent
    cfg = resolve_model_paths(cfg, base)  # type: ignore[assignment]
    if data_dir is not None:
        cfg = cfg.model_copy(update={"data_dir": data_dir.resolve()})
        if path is None or "store" not in (load_yaml(path).data or {}):
            cfg = cfg.model_copy(update={"store": f"sqlite:///{cfg.data_dir / 'hub.sqlite'}"})
    elif cfg.store.startswith("sqlite:///") and not Path(cfg.store.removeprefix("sqlite:///")).is_absolute():
        cfg = cfg.model_copy(update={"store": f"sqlite:///{(base / cfg.store.removeprefix('sqlite:///'))}"})
    return cfg

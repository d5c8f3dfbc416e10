"""The `console:` section of the site file: where the line console listens, who may log in, how often
frames go to each browser. Kept free of web imports so loading a config never imports the web stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.login_throttle import is_loopback

Role = Literal["viewer", "operator", "integrator"]

#: what each role may do; a role includes the rights of the roles before it
ROLE_ORDER: tuple[Role, ...] = ("viewer", "operator", "integrator")


class ConsoleUser(BaseModel):
    """One login: viewer reads, operator also reviews results, integrator also changes the setup."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    password_hash: str = Field(description="scrypt hash from `edge-inspect console hash-password`")

    @field_validator("password_hash")
    @classmethod
    def _is_a_hash(cls, value: str) -> str:
        if not value.startswith("scrypt$") or value.count("$") != 5:
            raise ValueError(
                "must be a scrypt hash from `edge-inspect console hash-password`, never a password"
            )
        return value


class ConsoleTls(BaseModel):
    """HTTPS from certificate files (PEM); session cookies are then marked Secure."""

    model_config = ConfigDict(extra="forbid")

    cert: Path = Field(description="certificate chain, PEM (relative to the site file)")
    key: Path = Field(description="private key, PEM (relative to the site file)")


class ConsoleConfig(BaseModel):
    """The line console: a web page served by the agent (overview, live line view, NG gallery, review,
    setup, model). Without users it must listen on localhost only, and says so on every page."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = Field("127.0.0.1", description="address to listen on; not localhost needs `users`")
    port: int = Field(8080, ge=0, le=65535, description="0 = any free port")
    auth: Literal["none", "login"] = Field(
        "login", description="none: no login (only allowed on localhost); login: `users` with roles"
    )
    users: list[ConsoleUser] = Field(default_factory=list)
    tls: ConsoleTls | None = None
    session_hours: float = Field(12, gt=0, description="a login lasts this long")
    login_attempts: int = Field(5, ge=1, description="failed logins from one address before it waits ...")
    login_window_s: float = Field(
        300, gt=0, description="... 1 s, doubling per further failure up to this (accounts never lock)"
    )
    frame_max_fps: float = Field(
        4, gt=0, le=30, description="live frames sent to one browser per second at most"
    )
    jpeg_quality: int = Field(80, ge=10, le=100)
    shift_starts: list[str] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        description="local times at which a shift begins (yield 'this shift')",
    )
    whatif_results: int = Field(500, ge=10, le=100_000, description="what-if: judge this many recent results")
    stale_after_s: float = Field(
        10, gt=0, description="live views grey out with 'NO NEW PARTS' after this long without a result"
    )
    line_control_role: Role = Field(
        "operator", description="who may stop and start a line (and hand over a shift) from the console"
    )
    uncertain_band: tuple[float, float] = Field(
        (0.25, 0.6), description="review queue: parts whose best detection's confidence lies in this band"
    )

    @field_validator("shift_starts")
    @classmethod
    def _times(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("give at least one shift start, e.g. ['06:00']")
        for v in values:
            hh, _, mm = v.partition(":")
            if not (hh.isdigit() and mm.isdigit() and 0 <= int(hh) < 24 and 0 <= int(mm) < 60):
                raise ValueError(f"{v!r} is not a time HH:MM")
        return sorted(values)

    @model_validator(mode="after")
    def _login_off_site(self) -> ConsoleConfig:
        if not self.enabled:
            return self
        if self.auth == "none" and not is_loopback(self.host):
            raise ValueError(
                f"auth: none is only allowed on localhost; {self.host} is reachable from the network, "
                "so add `users` and set `auth: login`"
            )
        if self.auth == "login" and not self.users:
            raise ValueError("auth: login needs at least one entry in `users` (or auth: none on localhost)")
        names = [u.name for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"user names must be unique; repeated: {', '.join(dupes)}")
        return self

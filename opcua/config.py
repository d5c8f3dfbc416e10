"""Configuration of the OPC UA server: one pydantic model per section (Frigate-like).

Example (the `opcua:` publisher entry of an agent YAML):

```yaml
publishers:
  - type: opcua
    endpoint: opc.tcp://0.0.0.0:4840/edge-inspect/
    security: production
    policies: [Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss]
    pki_dir: /var/lib/edge-inspect/pki
    users:
      - {name: mes, role: operator, password_hash: "scrypt$16384$8$1$...$..."}
      - {name: scada, role: viewer, password_hash: "scrypt$..."}
```

Passwords are stored as scrypt hashes (`edge-inspect opcua hash-password`, `contract.passwords`), never in
plain text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SecurityPolicyName = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
Role = Literal["operator", "viewer"]

MACHINE_VISION_NS = "http://opcfoundation.org/UA/MachineVision"
DEFAULT_APP_NS = "urn:edge-inspect:opcua"


class UserConfig(BaseModel):
    """One username/password user of the production profile."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    role: Role
    password_hash: str = Field(description="scrypt hash from `edge-inspect opcua hash-password`")

    @field_validator("password_hash")
    @classmethod
    def _is_a_hash(cls, value: str) -> str:
        if not value.startswith("scrypt$") or value.count("$") != 5:
            raise ValueError(
                "password_hash must be a scrypt hash made by `edge-inspect opcua hash-password` "
                "(plain-text passwords are not accepted)"
            )
        return value


class OpcUaServerConfig(BaseModel):
    """The server: where it listens, how it is secured, who may do what."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "opc.tcp://0.0.0.0:4840/edge-inspect/"
    server_name: str = "edge-inspect vision system"
    application_uri: str = "urn:edge-inspect:opcua:server"
    namespace_uri: str = DEFAULT_APP_NS
    #: "production": SignAndEncrypt only, users with passwords, client certificates checked against
    #: `pki_dir/trusted`. "none": no security at all, for demos on an isolated bench only.
    security: Literal["production", "none"] = "production"
    policies: list[SecurityPolicyName] = Field(
        default_factory=lambda: ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"],
        min_length=1,
    )
    #: holds own/cert.der, own/key.pem, trusted/, rejected/ (see `edge-inspect opcua cert`)
    pki_dir: Path = Path("pki")
    users: list[UserConfig] = Field(default_factory=list)
    #: how many results GetResultListFiltered returns at most per call when the client asks for 0
    max_results_per_call: int = Field(default=1000, ge=1)
    #: StartSingleJob during SingleExecution: refused (Error -1, the NodeSet has no such transition)
    #: unless true, where the job is queued behind the one running (a non-standard convenience)
    queue_single_jobs: bool = False

    @model_validator(mode="after")
    def _production_needs_users(self) -> OpcUaServerConfig:
        if self.security == "production" and not self.users:
            raise ValueError(
                "opcua.users: the production profile refuses anonymous clients, so at least one user "
                "(name, role, password_hash) is required"
            )
        names = [u.name for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError(f"opcua.users: duplicate user names in {names}")
        return self

    @property
    def cert_path(self) -> Path:
        return self.pki_dir / "own" / "cert.der"

    @property
    def key_path(self) -> Path:
        return self.pki_dir / "own" / "key.pem"

    @property
    def trusted_dir(self) -> Path:
        return self.pki_dir / "trusted"

    @property
    def rejected_dir(self) -> Path:
        return self.pki_dir / "rejected"

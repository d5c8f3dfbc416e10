"""CURVE security for every edge-inspect ZeroMQ socket.

Key files are the czmq/pyzmq certificate format: `<name>.key` holds the public key (safe to copy),
`<name>.key_secret` holds both keys (keep it on the machine that owns it).

- A **server** (the agent's PUB/ROUTER, the MES receiver) has a secret key file and an
  *authorised-keys folder*: only clients whose public `.key` file is in that folder get in. The folder
  is re-read when its content changes, so adding or removing a client needs no restart.
- A **client** (a subscriber, the agent's MES delivery) has its own secret key file and the
  server's public key file.

Plain TCP is only used when a config says `security: plain` explicitly.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pair = generate_keypair(folder, "agent")
    >>> pair.public_file.name, pair.secret_file.name
    ('agent.key', 'agent.key_secret')
    >>> len(load_public_key(pair.public_file))
    40
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field, model_validator
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

SecurityMode = Literal["curve", "plain"]


class CurveServerConfig(BaseModel):
    """Keys of a socket that binds (agent PUB/ROUTER, MES receiver)."""

    model_config = ConfigDict(extra="forbid")

    secret_key_file: Path = Field(description="this server's .key_secret file (edge-inspect zmq keys)")
    authorized_keys_dir: Path = Field(description="folder of the public .key files of allowed clients")


class CurveClientConfig(BaseModel):
    """Keys of a socket that connects (subscriber, agent → MES delivery)."""

    model_config = ConfigDict(extra="forbid")

    secret_key_file: Path = Field(description="this client's .key_secret file (edge-inspect zmq keys)")
    server_public_key_file: Path = Field(description="the server's public .key file")


class ServerSecurity(BaseModel):
    """`security: curve` (default, needs `curve:`) or `security: plain` (explicit opt-out)."""

    model_config = ConfigDict(extra="forbid")

    security: SecurityMode = Field("curve", description="curve (default) or plain (no encryption)")
    curve: CurveServerConfig | None = None

    @model_validator(mode="after")
    def _curve_needs_keys(self) -> ServerSecurity:
        if self.security == "curve" and self.curve is None:
            raise ValueError(
                "security is 'curve' (the default) but no 'curve:' keys are set: give "
                "curve.secret_key_file and curve.authorized_keys_dir (make them with "
                "`edge-inspect zmq keys`), "
                "or set 'security: plain' to use plain TCP"
            )
        return self


class ClientSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    security: SecurityMode = Field("curve", description="curve (default) or plain (no encryption)")
    curve: CurveClientConfig | None = None

    @model_validator(mode="after")
    def _curve_needs_keys(self) -> ClientSecurity:
        if self.security == "curve" and self.curve is None:
            raise ValueError(
                "security is 'curve' (the default) but no 'curve:' keys are set: give "
                "curve.secret_key_file and curve.server_public_key_file, or set 'security: plain'"
            )
        return self


@dataclass(frozen=True)
class KeyPairFiles:
    public_file: Path
    secret_file: Path


def generate_keypair(folder: str | Path, name: str) -> KeyPairFiles:
    """Write `<folder>/<name>.key` (public) and `<name>.key_secret` (secret, mode 0600).

    Refuses to overwrite an existing pair: replacing a key locks out every peer that trusts it.
    """
    folder = Path(folder)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    for existing in (public_file, secret_file):
        if existing.exists():
            raise FileExistsError(f"{existing} exists already; remove it first if you really want a new key")
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    return KeyPairFiles(Path(public), Path(secret))


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key in a `.key` or `.key_secret` file."""
    public, _ = _load(path)
    return public


def load_secret_pair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a `.key_secret` file."""
    public, secret = _load(path)
    if not secret:
        raise ValueError(f"{path} holds no secret key: use the '.key_secret' file, not the public '.key'")
    return public, secret


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CURVE key file {path} does not exist (make keys with `edge-inspect zmq keys`)"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a ZeroMQ certificate file: {exc}") from exc
    if not public:
        raise ValueError(f"{path} holds no public key")
    return public, secret


class AuthorizedKeys:
    """The public keys in a folder, re-read whenever the folder's files change."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"authorised-keys folder {self.folder} does not exist")
        self._lock = threading.Lock()
        self._signature: tuple = ()
        self._keys: set[bytes] = set()
        self.denied = 0
        self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        files = sorted(self.folder.glob("*.key"))
        signature = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        if signature == self._signature:
            return
        keys: set[bytes] = set()
        for f in files:
            try:
                keys.add(load_public_key(f))
            except ValueError as exc:  # one bad file must not lock everyone out
                log.error("ignoring authorised key %s: %s", f, exc)
        self._keys, self._signature = keys, signature
        log.info("authorised keys from %s: %d", self.folder, len(keys))

    def callback(self, domain: str, z85_client_key: bytes) -> bool:
        """Called by pyzmq's authenticator for each new CURVE connection."""
        with self._lock:
            self._reload_if_changed()
            allowed = z85_client_key in self._keys
        if not allowed:
            self.denied += 1
            log.warning("CURVE client key %s refused (not in %s)", z85_client_key.decode(), self.folder)
        return allowed


class CurveServer:
    """Owns the ZAP authenticator of one `zmq.Context` and makes its server sockets CURVE servers.

    One ZAP handler per context is all libzmq allows, so each publisher/receiver uses its own context.
    """

    def __init__(self, context: zmq.Context, config: CurveServerConfig) -> None:
        self.public_key, self.secret_key = load_secret_pair(config.secret_key_file)
        self.authorized = AuthorizedKeys(config.authorized_keys_dir)
        self._auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self.authorized)

    def apply(self, socket: zmq.Socket) -> None:
        """Call before bind()."""
        socket.curve_secretkey = self.secret_key
        socket.curve_publickey = self.public_key
        socket.curve_server = True

    def stop(self) -> None:
        self._auth.stop()


def make_curve_server(context: zmq.Context, security: ServerSecurity) -> CurveServer | None:
    if security.security == "plain":
        log.warning("ZeroMQ server sockets use plain TCP (security: plain)")
        return None
    assert security.curve is not None  # checked by the model
    return CurveServer(context, security.curve)


def apply_curve_client(socket: zmq.Socket, security: ClientSecurity) -> None:
    """Make `socket` a CURVE client (call before connect()); no-op for `security: plain`."""
    if security.security == "plain":
        return
    assert security.curve is not None
    socket.curve_publickey, socket.curve_secretkey = load_secret_pair(security.curve.secret_key_file)
    socket.curve_serverkey = load_public_key(security.curve.server_public_key_file)

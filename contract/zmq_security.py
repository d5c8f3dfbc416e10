"""CURVE security for every edge-inspect ZeroMQ socket.

Key files are the czmq/pyzmq certificate format: `<name>.key` holds the public key (safe to copy),
`<name>.key_secret` holds both keys (keep it on the machine that owns it).

- A **server** (the agent's PUB/ROUTER, the MES receiver) has a secret key file and an
  *authorised-keys folder*: only clients whose public `.key` file is in that folder get in. The folder
  is re-read when its content changes, so adding or removing a client needs no restart: a removed key's
  live connections are shut down within about a second (`ConnectionGuard`), and its reconnect is refused.
- A client without CURVE (plain TCP) or with an unknown key is refused, logged and counted
  (`CurveServer.denied`).
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
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field, model_validator
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

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
        #: grows by one each time the folder's keys are re-read (guards compare it to act once per change)
        self.generation = 0
        self._reload_if_changed()

    def refresh(self) -> int:
        """Re-read the folder if its files changed; returns the generation."""
        with self._lock:
            self._reload_if_changed()
            return self.generation

    def allows(self, z85_key: bytes) -> bool:
        with self._lock:
            return z85_key in self._keys

    def _reload_if_changed(self) -> None:
        try:
            files = sorted(self.folder.glob("*.key"))
            signature = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        except OSError as exc:  # the folder itself went away: nobody is authorised any more
            log.error("authorised-keys folder %s: %s; refusing every client", self.folder, exc)
            files, signature = [], ("<unreadable>",)
        if signature == self._signature:
            return
        keys: set[bytes] = set()
        for f in files:
            try:
                keys.add(load_public_key(f))
            except ValueError as exc:  # one bad file must not lock everyone out
                log.error("ignoring authorised key %s: %s", f, exc)
        self._keys, self._signature = keys, signature
        self.generation += 1
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
        self._guards: list[ConnectionGuard] = []

    @property
    def denied(self) -> int:
        """Clients refused: unknown CURVE keys (ZAP) plus clients without CURVE (handshake mismatch)."""
        return self.authorized.denied + sum(g.refused_handshakes for g in self._guards)

    @property
    def dropped(self) -> int:
        """Live connections shut down because their key left the authorised folder."""
        return sum(g.dropped for g in self._guards)

    def apply(self, socket: zmq.Socket) -> None:
        """Call before bind()."""
        socket.curve_secretkey = self.secret_key
        socket.curve_publickey = self.public_key
        socket.curve_server = True

    def guard(self, socket: zmq.Socket, name: str) -> ConnectionGuard:
        """A `ConnectionGuard` for a bound server socket; use it from the thread that owns the socket."""
        guard = ConnectionGuard(self.authorized, socket, name)
        self._guards.append(guard)
        return guard

    def stop(self) -> None:
        for guard in self._guards:
            guard.close()
        self._guards = []
        self._auth.stop()


_HANDSHAKE_REFUSED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class ConnectionGuard:
    """Keeps a CURVE server socket's live connections to the keys in the authorised folder.

    ZAP checks a key only in the handshake; a connected client whose key file is removed would keep
    receiving until it reconnects. The guard learns which connection (file descriptor) carries which key
    from the frames each peer sends (a subscriber's subscription, a DEALER's request: libzmq gives their
    `User-Id` and source fd), and when the folder changes it shuts down the connections of keys no longer
    there; the client's reconnect then meets ZAP and is refused. It also counts and logs clients that
    fail the handshake because they do not speak CURVE (libzmq refuses them before ZAP, silently).

    Not thread-safe: call `note()` and `check()` from the thread that owns the socket.
    """

    def __init__(self, authorized: AuthorizedKeys, sock: zmq.Socket, name: str, check_every_s: float = 0.5):
        self.authorized = authorized
        self.name = name
        self.check_every_s = check_every_s
        self.refused_handshakes = 0
        self.dropped = 0
        self._peers: dict[int, tuple[bytes, Any]] = {}  # fd -> (z85 key, peer address when noted)
        self._generation = authorized.generation
        self._next_check = 0.0
        self._last_refusal_log = 0.0
        self._refusals_unlogged = 0
        events = _HANDSHAKE_REFUSED | zmq.EVENT_DISCONNECTED
        self._monitor: zmq.Socket | None = sock.get_monitor_socket(events)

    def note(self, frame: zmq.Frame) -> None:
        """Remember the key and connection of a frame received on the guarded socket (copy=False)."""
        try:
            key = frame.get("User-Id")
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, TypeError, ValueError):
            return
        if not key or fd < 0:
            return
        self._peers[fd] = (key.encode() if isinstance(key, str) else key, _peer_name(fd))

    def check(self) -> None:
        """Read handshake events; at most every `check_every_s`, drop connections of removed keys."""
        self._read_events()
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every_s
        generation = self.authorized.refresh()
        if generation == self._generation:
            return
        self._generation = generation
        for fd, (key, peer) in list(self._peers.items()):
            if self.authorized.allows(key):
                continue
            del self._peers[fd]
            if peer is not None and _peer_name(fd) == peer and _shutdown(fd):
                self.dropped += 1
                log.warning(
                    "%s: CURVE key %s was removed from %s: its connection from %s is closed",
                    self.name,
                    key.decode(errors="replace"),
                    self.authorized.folder,
                    peer,
                )

    def _read_events(self) -> None:
        if self._monitor is None:
            return
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._peers.pop(int(event["value"]), None)
                continue
            self.refused_handshakes += 1
            self._refusals_unlogged += 1
        now = time.monotonic()
        if self._refusals_unlogged and now - self._last_refusal_log >= 60:
            # a plain client retries every few hundred ms: one line a minute, with the count
            log.warning(
                "%s: %d connection(s) refused in the handshake: a client without CURVE (security: plain) "
                "or another mechanism tried to connect",
                self.name,
                self._refusals_unlogged,
            )
            self._last_refusal_log, self._refusals_unlogged = now, 0

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close(0)
            self._monitor = None


def _peer_name(fd: int) -> Any:
    """The remote address of the TCP connection on `fd` (None if it is gone or not a socket)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            return s.getpeername()
    except OSError:
        return None


def _shutdown(fd: int) -> bool:
    """Shut the connection on `fd` down (libzmq sees the peer gone and cleans up; the fd stays libzmq's)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False


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

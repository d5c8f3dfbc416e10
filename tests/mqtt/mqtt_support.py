"""Helpers for the MQTT tests: a real Debian mosquitto on a free port, test certificates, a recording
subscriber, and an independent Sparkplug B decoder.

The decoder reads the protobuf wire format by hand (varints, length-delimited fields, fixed32/64) from the
field numbers of the Sparkplug B v3.0 payload definition. It shares no code with the agent's encoder
(which uses the generated protobuf module), so a wrong field number or type on either side shows up.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from contract.result import Defect, InspectionResult, ModelInfo

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
SKIP_REASON = "mosquitto is not installed (Debian: apt-get install mosquitto; .ci/run installs it)"
SITE = "plant-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_result(n: int, line: str = "press", classes: tuple[str, ...] = ("scratch",)) -> InspectionResult:
    """Part n: NG with one defect per class in `classes` when n % 3 == 0, else OK."""
    defects = (
        [
            Defect(
                camera="top",
                class_name=c,
                class_id=i,
                confidence=0.5 + 0.1 * i,
                xyxy=[1, 2, 30, 40],
                area_px=1064.0,
            )
            for i, c in enumerate(classes)
        ]
        if n % 3 == 0
        else []
    )
    return InspectionResult(
        site=SITE,
        line=line,
        part_id=f"P-{n:05d}",
        recipe="default",
        verdict="NG" if defects else "OK",
        reasons=["scratch too long"] if defects else [],
        defects=defects,
        model=ModelInfo(name="press-det", version="7"),
    )


# -- the broker ----------------------------------------------------------------------------------------


@dataclass
class Mosquitto:
    """A mosquitto process with a generated config; persistence on, so a restart keeps sessions and
    retained messages (as a plant's broker would)."""

    folder: Path
    port: int = 0
    tls: dict[str, Path] | None = None  # ca_file, cert_file, key_file
    require_certificate: bool = False
    password_file: Path | None = None
    proc: subprocess.Popen | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            "persistence true",
            f"persistence_location {self.folder}/",
            "autosave_interval 1",
            "max_inflight_messages 0",
            "max_queued_messages 0",  # no limit: an offline subscriber's session keeps everything
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # as root, mosquitto would switch to user mosquitto
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls['ca_file']}",
                f"certfile {self.tls['cert_file']}",
                f"keyfile {self.tls['key_file']}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = self.folder / "mosquitto.log"

    def start(self) -> Mosquitto:
        assert MOSQUITTO is not None
        log = self.log.open("a")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not open its port within 10 s")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (sessions, retained messages) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    assert MOSQUITTO_PASSWD is not None
    path.write_text("")
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True)
    return path


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a second CA that
    signed nothing of ours (for the untrusted-broker case)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k: ec.EllipticCurvePrivateKey, name: str) -> Path:
        p = folder / name
        p.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return p

    def write_cert(c: x509.Certificate, name: str) -> Path:
        p = folder / name
        p.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return p

    def ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(k, hashes.SHA256())
        )
        return k, cert

    def leaf(ca_key: Any, ca_cert: Any, cn: str, server: bool) -> tuple[Any, x509.Certificate]:
        k = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return k, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("edge-inspect test CA")
    server_key, server_cert = leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = leaf(ca_key, ca_cert, "press-agent", server=False)
    _other_key, other_cert = ca("some other CA")
    return {
        "ca_file": write_cert(ca_cert, "ca.pem"),
        "server_cert": write_cert(server_cert, "server.pem"),
        "server_key": write_key(server_key, "server.key"),
        "client_cert": write_cert(client_cert, "client.pem"),
        "client_key": write_key(client_key, "client.key"),
        "other_ca": write_cert(other_cert, "other-ca.pem"),
    }


# -- a subscriber that records everything --------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float


@dataclass
class Recorder:
    """A paho subscriber with a persistent session (clean_session false, QoS 1): while it is away (a broker
    restart) the broker keeps its messages, as a plant's historian would configure it."""

    port: int
    topics: list[str]
    client_id: str = "test-recorder"
    tls: dict[str, Path] | None = None  # ca_file, cert_file, key_file
    login: tuple[str, str] | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(0)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        if self.tls:
            self.client.tls_set(
                str(self.tls["ca_file"]), str(self.tls["cert_file"]), str(self.tls["key_file"])
            )
        if self.login:
            self.client.username_pw_set(*self.login)

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def start(self) -> Recorder:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the recorder could not subscribe"
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def snapshot(self, prefix: str = "") -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]


# -- an independent Sparkplug B decoder (protobuf wire format by hand) ---------------------------------

DATATYPES = {
    1: "Int8",
    2: "Int16",
    3: "Int32",
    4: "Int64",
    5: "UInt8",
    6: "UInt16",
    7: "UInt32",
    8: "UInt64",
    9: "Float",
    10: "Double",
    11: "Boolean",
    12: "String",
    13: "DateTime",
    14: "Text",
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of every field of one message."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((number, wire, value))
    return out


@dataclass
class SpMetric:
    name: str | None
    datatype: str
    value: Any
    timestamp: int | None
    is_historical: bool
    is_null: bool


@dataclass
class SpPayload:
    timestamp: int | None
    seq: int | None
    metrics: list[SpMetric]

    def by_name(self) -> dict[str, SpMetric]:
        return {m.name: m for m in self.metrics if m.name is not None}


def decode_metric(buf: bytes) -> SpMetric:
    name = timestamp = datatype = None
    historical = is_null = False
    raw: dict[int, Any] = {}
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            name = value.decode("utf-8")
        elif number == 3 and wire == 0:
            timestamp = value
        elif number == 4 and wire == 0:
            datatype = value
        elif number == 5 and wire == 0:
            historical = bool(value)
        elif number == 7 and wire == 0:
            is_null = bool(value)
        elif 10 <= number <= 16:
            raw[number] = (wire, value)
    if datatype not in DATATYPES:
        raise ValueError(f"metric {name!r}: datatype {datatype} missing or not a scalar type")
    kind = DATATYPES[datatype]
    value: Any = None
    if not is_null:
        expected = {
            "Int8": 10,
            "Int16": 10,
            "Int32": 10,
            "UInt8": 10,
            "UInt16": 10,
            "UInt32": 10,
            "Int64": 11,
            "UInt64": 11,
            "DateTime": 11,
            "Float": 12,
            "Double": 13,
            "Boolean": 14,
            "String": 15,
            "Text": 15,
        }[kind]
        if expected not in raw:
            raise ValueError(f"metric {name!r} ({kind}) has no value in field {expected}: {sorted(raw)}")
        wire, v = raw[expected]
        if expected == 12:
            value = struct.unpack("<f", v)[0]
        elif expected == 13:
            value = struct.unpack("<d", v)[0]
        elif expected == 14:
            value = bool(v)
        elif expected == 15:
            value = v.decode("utf-8")
        elif kind == "Int32":
            value = v - (1 << 32) if v >= 1 << 31 else v
        elif kind == "Int64":
            value = v - (1 << 64) if v >= 1 << 63 else v
        else:
            value = v
    return SpMetric(name, kind, value, timestamp, historical, is_null)


def decode_sparkplug(buf: bytes) -> SpPayload:
    timestamp = seq = None
    metrics = []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            timestamp = value
        elif number == 2 and wire == 2:
            metrics.append(decode_metric(value))
        elif number == 3 and wire == 0:
            seq = value
    return SpPayload(timestamp, seq, metrics)


def encode_rebirth_command() -> bytes:
    """An NCMD payload `Node Control/Rebirth` = true, written by hand (what a host sends)."""
    name = b"Node Control/Rebirth"
    metric = bytes([0x0A, len(name)]) + name + bytes([0x20, 11, 0x70, 1])  # name, datatype Boolean, true
    now_ms = int(time.time() * 1000)
    ts = bytearray()
    while True:
        b = now_ms & 0x7F
        now_ms >>= 7
        ts.append(b | (0x80 if now_ms else 0))
        if not now_ms:
            break
    return bytes([0x08]) + bytes(ts) + bytes([0x12, len(metric)]) + metric


def sparkplug_messages(recorder: Recorder, group: str) -> list[tuple[str, str | None, SpPayload, Received]]:
    """(message type, device or None, payload, raw) of every Sparkplug message of `group`, in order."""
    out = []
    for msg in recorder.snapshot(f"spBv1.0/{group}/"):
        parts = msg.topic.split("/")
        out.append((parts[2], parts[4] if len(parts) > 4 else None, decode_sparkplug(msg.payload), msg))
    return out


def check_seq_continuity(messages: list[tuple[str, str | None, SpPayload, Received]]) -> int:
    """Every message after a NBIRTH carries the next seq (mod 256) until the next NBIRTH; NDEATH has none.
    Returns the number of wraps 255 -> 0 seen."""
    expected = None
    wraps = 0
    for kind, _device, payload, _raw in messages:
        if kind == "NDEATH":
            assert payload.seq is None, "NDEATH carries no seq"
            expected = None
            continue
        if kind == "NCMD":
            continue
        assert payload.seq is not None and 0 <= payload.seq <= 255, f"{kind}: seq {payload.seq}"
        if kind == "NBIRTH":
            assert payload.seq == 0
        else:
            assert expected is not None, f"{kind} before any NBIRTH"
            assert payload.seq == expected, f"{kind}: seq {payload.seq}, expected {expected}"
            if payload.seq == 0:
                wraps += 1
        expected = (payload.seq + 1) % 256
    return wraps

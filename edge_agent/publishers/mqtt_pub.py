"""Acknowledged delivery of every journaled result to an MQTT broker (`type: mqtt`): plain JSON topics
and Sparkplug B v3.0, each over its own MQTT connection (each needs its own last will).

    plain       <prefix>/<site>/<line>/result   the result body (schemas/result.schema.json), QoS 1
                <prefix>/<site>/<line>/status   the line's state, retained
                <prefix>/<site>/status          {"online": true|false}, retained; the will sets it false
    sparkplug   spBv1.0/<group>/{NBIRTH,DBIRTH,NDATA,DDATA,NDEATH}/<node>[/<line>]  (see `sparkplug`)

Like the MES publisher, the journal is the queue: each connection ("session") keeps its own cursor
(`<name>/plain`, `<name>/sparkplug`; `<name>` holds the lower of the two, which journal retention honours)
and reads what it owes with `journal.since(cursor)`. The cursor moves only when the broker has answered
PUBACK for every message of a result, in seq order. After a reconnect a session sends births first,
then the backlog in seq order with each result's own timestamp (Sparkplug: `is_historical` for results
that were journaled before the birth), then live results.

No duplicates after a crash: after each batch of results a session publishes a small retained marker
(`<prefix>/<site>/_delivered/<name>-<session>`: last seq and its result id) on the same connection, so
the broker holds it only once it holds every message before it (one connection is processed in order).
On (re)connect the session reads the marker back and resumes after it, when it names a result of this
journal. A kill -9 can still fall between a result's messages and its marker (microseconds); that result
is then sent again (consumers deduplicate by `result_id`).

The network loop is driven from the session's own thread (paho's external-loop API: select, loop_read,
loop_write), so callbacks, sequence numbers and the journal cursor are touched by one thread only;
`notify()` only wakes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.result import InspectionResult
from edge_agent.journal import ResultJournal
from edge_agent.publishers import sparkplug as spb
from edge_agent.publishers.base import Publisher, PublisherContext

log = logging.getLogger(__name__)

_FORBIDDEN_IN_TOPIC_LEVEL = ("/", "+", "#")


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge-inspect")
    except PackageNotFoundError:
        return "unknown"


# -- configuration -------------------------------------------------------------------------------------


class MqttTlsConfig(BaseModel):
    """TLS to the broker; a client certificate is optional (brokers with `require_certificate true`)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(
        None, description="CA that signed the broker's certificate (default: system CAs)"
    )
    cert_file: Path | None = Field(None, description="client certificate (PEM), with key_file")
    key_file: Path | None = Field(None, description="client private key (PEM, unencrypted)")
    check_hostname: bool = Field(True, description="the broker's certificate must name `host`")


class SparkplugConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="publish Sparkplug B (spBv1.0) births, data and death")
    group_id: str = Field("edge-inspect", description="Sparkplug group id")
    edge_node_id: str | None = Field(None, description="Sparkplug edge node id (default: the site)")
    qos: Literal[0, 1] = Field(
        1, description="QoS of births and data: 1 (acknowledged, nothing lost) or 0 (the spec's default)"
    )

    @field_validator("group_id", "edge_node_id")
    @classmethod
    def _one_topic_level(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in _FORBIDDEN_IN_TOPIC_LEVEL)):
            raise ValueError(f"{value!r} must be one topic level: not empty, no '/', '+' or '#'")
        return value


class MqttPublisherConfig(BaseModel):
    """`publishers: - type: mqtt` in the site file: results to an MQTT broker (plain JSON and Sparkplug B)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = "mqtt"
    name: str = Field("mqtt", description="also the journal cursor name: a new name resends the journal")
    host: str = Field("127.0.0.1", description="the broker's host name or address")
    port: int | None = Field(None, ge=1, le=65535, description="default 1883, or 8883 with tls")
    client_id: str | None = Field(None, description="MQTT client id prefix (default: edge-inspect-<site>)")
    username: str | None = None
    password: str | None = Field(None, description="prefer password_file (or ${ENV} substitution)")
    password_file: Path | None = Field(None, description="file holding the password (first line)")
    tls: MqttTlsConfig | None = None
    keepalive_s: int = Field(10, ge=2, le=3600, description="MQTT keep-alive; a dead link is noticed in 1.5x")
    topic_prefix: str = Field("edge-inspect", description="first level(s) of the plain topics")
    plain: bool = Field(True, description="publish the plain JSON topics")
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)
    window: int = Field(256, ge=1, le=10_000, description="results published and not yet acknowledged")
    reconnect_initial_s: float = Field(0.5, gt=0, description="first wait before reconnecting; doubles")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnects")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP + TLS + CONNACK must finish within this")
    batch_wait_s: float = Field(
        0.03, ge=0, le=1, description="after a new result, wait this long for more to send with it (less CPU)"
    )
    cursor_flush_s: float = Field(
        0.2, ge=0, description="while busy, save the acknowledged position this often"
    )

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        if not value or "+" in value or "#" in value or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{value!r}: a topic prefix has no wildcards (+ #) and no leading/trailing '/'")
        return value

    def broker_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)

    def where(self) -> str:
        return f"{self.host}:{self.broker_port()}"


# -- connecting and explaining failures ----------------------------------------------------------------

_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "broker unavailable",
    4: "bad user name or password",
    5: "not authorised (wrong user name or password, or this user may not connect)",
}


class MqttConnectError(Exception):
    """A connection attempt failed; the message is one line for an integrator."""


def _password(config: MqttPublisherConfig) -> str | None:
    if config.password_file is not None:
        try:
            return (
                config.password_file.read_text().splitlines()[0]
                if config.password_file.stat().st_size
                else ""
            )
        except OSError as exc:
            raise MqttConnectError(
                f"cannot read password_file {config.password_file}: {exc.strerror}"
            ) from exc
    return config.password


class _BatchingClient(mqtt.Client):
    """paho's client with batched socket I/O for a session's thread (external loop API).

    Stock paho reads each incoming packet with two or three `recv()`s (command byte, length bytes, the
    rest) and writes each outgoing packet with its own `send()`: at 1,000 results/s (two QoS 1 messages
    and two PUBACKs each) those calls were about a quarter of the publisher's profile. Here one `recv()`
    takes what the kernel holds and paho's byte-wise reads are served from it, and `loop_write()` sends
    the queued packets with one `send()`. `publish()` only queues (an `on_socket_register_write` hook
    is set): the session calls `loop_write()` after a batch.

    A PUBACK (MQTT 3.1.1: just the message id) is handled here too: paho decodes each into MQTT 5
    Properties and ReasonCode objects, logs it and signals a Condition per message, which cost more than
    the rest of its work on a message together. Here the message leaves paho's table of unacknowledged
    messages as in paho, and `on_publish` gets the message id (reason code and properties None: 3.1.1
    has neither); `MQTTMessageInfo.wait_for_publish()` is not signalled (the session never waits on it).
    Everything else (CONNECT, SUBSCRIBE, incoming PUBLISH, keep-alive) stays paho's.
    """

    READ_SIZE = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        self.on_socket_register_write = self._queued  # publish() queues; the session writes
        self.on_socket_unregister_write = self._queued

    @staticmethod
    def _queued(*_args: Any) -> None:
        """Nothing to do: the session's loop asks want_write() before each select."""

    def buffered(self) -> int:
        """Bytes already read from the socket and not yet parsed (select() cannot see them)."""
        return len(self._read_buffer) - self._read_pos

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(self.READ_SIZE)  # raises as paho expects; b"": closed
            if len(data) <= bufsize:
                return data
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = start + bufsize
        return self._read_buffer[start : self._read_pos]

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> mqtt.MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == mqtt.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)  # paho's own path (and its malformed-packet errors)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if self._out_messages.pop(mid, None) is None:
                return mqtt.MQTT_ERR_SUCCESS  # not (or no longer) ours to acknowledge: as paho, ignored
            self._inflight_messages -= 1
        on_publish = self.on_publish
        if on_publish is not None:
            on_publish(self, self._userdata, mid, None, None)
        return mqtt.MQTT_ERR_SUCCESS

    def _packet_write(self) -> mqtt.MQTTErrorCode:
        queue = self._out_packet
        if len(queue) > 1:
            # Join the leading packets whose write needs no follow-up in paho (a QoS 0 PUBLISH gets its
            # on_publish, a DISCONNECT closes the socket once written: those go on their own).
            joined: list[Any] = []
            while queue:
                command = queue[0]["command"] & 0xF0
                if command == mqtt.DISCONNECT or (command == mqtt.PUBLISH and queue[0]["qos"] == 0):
                    break
                joined.append(queue.popleft())
            if len(joined) > 1:
                data = b"".join(bytes(p["packet"][p["pos"] :]) for p in joined)
                queue.appendleft(
                    {
                        "command": 0,  # no follow-up after the write
                        "mid": 0,
                        "qos": 1,
                        "pos": 0,
                        "to_process": len(data),
                        "packet": data,
                        "info": None,
                    }
                )
            elif joined:
                queue.appendleft(joined[0])
        return super()._packet_write()


def _new_client(
    config: MqttPublisherConfig, client_id: str, client_class: type[mqtt.Client] = mqtt.Client
) -> mqtt.Client:
    client = client_class(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
    )
    client.connect_timeout = config.connect_timeout_s
    client.max_inflight_messages_set(0)  # no limit: our window bounds what is in flight
    client.max_queued_messages_set(0)
    if config.username is not None:
        client.username_pw_set(config.username, _password(config))
    if config.tls is not None:
        tls = config.tls
        for label, path in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise MqttConnectError(f"TLS {label} {path} does not exist")
        if (tls.cert_file is None) != (tls.key_file is None):
            raise MqttConnectError("TLS needs both cert_file and key_file for a client certificate")
        try:
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise MqttConnectError(f"TLS files unusable: {exc}") from exc
        context.check_hostname = tls.check_hostname
        client.tls_set_context(context)
    return client


def explain_connect_failure(config: MqttPublisherConfig, exc: BaseException) -> str:
    """One line saying why the broker could not be reached or refused us."""
    where = config.where()
    if isinstance(exc, MqttConnectError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message
        return f"TLS failure with the MQTT broker at {where}: its certificate is not trusted ({why})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "CERTIFICATE_REQUIRED" in str(exc) or "certificate required" in str(exc).lower():
            reason = "the broker requires a client certificate (tls.cert_file, tls.key_file)"
        return f"TLS failure with the MQTT broker at {where}: {reason}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach the MQTT broker at {where}: connection refused (is it running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach the MQTT broker at {where}: unknown host {config.host!r}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"cannot reach the MQTT broker at {where}: no answer within {config.connect_timeout_s:g} s"
    if isinstance(exc, ConnectionResetError | BrokenPipeError) and config.tls is None:
        return f"the MQTT broker at {where} closed the connection (does it expect TLS? set `tls:`)"
    if isinstance(exc, OSError):
        return f"cannot reach the MQTT broker at {where}: {exc.strerror or exc}"
    return f"MQTT broker at {where}: {exc}"


def closed_before_connack(config: MqttPublisherConfig, socket_errors: list[str]) -> str:
    """The broker hung up before CONNACK: most often TLS 1.3 refusing a missing client certificate."""
    where = config.where()
    telling = [
        e for e in socket_errors if any(w in e.lower() for w in ("ssl", "alert", "certificate", "tls"))
    ]
    error = (telling or socket_errors or [""])[0]
    if "certificate required" in error.lower() or "CERTIFICATE_REQUIRED" in error:
        return (
            f"TLS failure with the MQTT broker at {where}: it requires a client certificate "
            "(tls.cert_file, tls.key_file)"
        )
    if config.tls is not None and config.tls.cert_file is None:
        return (
            f"TLS failure with the MQTT broker at {where}: it closed the connection during the handshake; "
            "it may require a client certificate (tls.cert_file, tls.key_file)"
        )
    if "alert" in error.lower() or "ssl" in error.lower():
        return f"TLS failure with the MQTT broker at {where}: {error}"
    if config.tls is None:
        return (
            f"the MQTT broker at {where} closed the connection before answering (does it expect TLS? `tls:`)"
        )
    return f"the MQTT broker at {where} closed the connection before answering" + (
        f" ({error})" if error else ""
    )


def _socket_errors(client: mqtt.Client) -> list[str]:
    """paho reports a failed socket read only in its log: keep the error lines for the explanation."""
    errors: list[str] = []

    def on_log(_c: Any, _u: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            errors.append(text)

    client.on_log = on_log
    return errors


def refused_message(config: MqttPublisherConfig, code: int) -> str:
    reason = _CONNACK_REASONS.get(code, f"reason code {code}")
    who = f" for user {config.username!r}" if config.username else " (no user name given)"
    return f"the MQTT broker at {config.where()} refused the login{who}: {reason}"


def probe_broker(config: MqttPublisherConfig, client_id: str = "edge-inspect-config-check") -> str | None:
    """Connect, wait for CONNACK, disconnect: None when the broker takes us, else one line saying why not
    (used by `edge-inspect config check`)."""
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        outcome["code"] = _connack_code(reason)

    try:
        client = _new_client(config, f"{client_id}-{int(time.time() * 1000) % 100000}")
        client.on_connect = on_connect
        errors = _socket_errors(client)
        client.connect(config.host, config.broker_port(), keepalive=config.keepalive_s)
    except Exception as exc:
        return explain_connect_failure(config, exc)
    deadline = time.monotonic() + config.connect_timeout_s
    try:
        while "code" not in outcome and time.monotonic() < deadline:
            rc = client.loop(timeout=0.1)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) and "code" not in outcome:
                return closed_before_connack(config, errors)
    except Exception as exc:
        return explain_connect_failure(config, exc)
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.1)
    if "code" not in outcome:
        wait = config.connect_timeout_s
        return f"the MQTT broker at {config.where()} did not answer CONNECT within {wait:g} s"
    if outcome["code"] != 0:
        return refused_message(config, outcome["code"])
    return None


def _connack_code(reason: Any) -> int:
    """paho 2 hands a ReasonCode (MQTT 5 numbering even on 3.1.1); back to the 3.1.1 CONNACK codes."""
    value = getattr(reason, "value", reason)
    return {0: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}.get(int(value), int(value))


# -- what each session publishes -------------------------------------------------------------------------


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class _Flavour(ABC):
    """What one session puts on the wire: its will, what it says when it comes online, each result."""

    key: str  # "plain" or "sparkplug": the session's cursor and marker suffix

    @abstractmethod
    def will(self) -> Message: ...

    @abstractmethod
    def births(self, journal: ResultJournal) -> list[Message]:
        """Sent first after every connect (and on a rebirth request)."""

    def read(self, journal: ResultJournal, after: int, limit: int) -> list[Any]:
        """What this session sends for each result (anything with `seq` and `result_id`), oldest first."""
        return journal.since(after, limit=limit)

    @abstractmethod
    def result(self, result: Any, historical: bool) -> list[Message]: ...

    @abstractmethod
    def status(self, line: str, status: dict[str, Any], send: bool = True) -> list[Message]:
        """Remember a line's state (for the births); with `send`, the messages that announce it."""

    def subscriptions(self) -> list[str]:
        return []

    def wants_rebirth(self, topic: str, payload: bytes) -> bool:
        return False

    def periodic(self, backlog: int) -> list[Message]:
        return []


def _status_json(status: dict[str, Any]) -> bytes:
    return json.dumps(status, default=str, separators=(",", ":")).encode()


class _StoredBody(NamedTuple):
    seq: int
    result_id: str
    line: str
    body: str


class _PlainFlavour(_Flavour):
    key = "plain"

    def __init__(self, config: MqttPublisherConfig, context: PublisherContext) -> None:
        self.base = f"{config.topic_prefix}/{context.site}"
        self.context = context
        self.last_status: dict[str, dict[str, Any]] = {}

    def _online(self, online: bool) -> Message:
        body = {"online": online, "site": self.context.site, "boot_id": self.context.boot_id}
        return Message(f"{self.base}/status", json.dumps(body).encode(), 1, True)

    def will(self) -> Message:
        return self._online(False)

    def births(self, journal: ResultJournal) -> list[Message]:
        return [self._online(True), *(self.status(line, s)[0] for line, s in list(self.last_status.items()))]

    def read(self, journal: ResultJournal, after: int, limit: int) -> list[Any]:
        return [_StoredBody(*row) for row in journal.since_bodies(after, limit)]  # the body as journaled

    def result(self, result: _StoredBody, historical: bool) -> list[Message]:
        return [Message(f"{self.base}/{result.line}/result", result.body.encode(), 1, False)]

    def status(self, line: str, status: dict[str, Any], send: bool = True) -> list[Message]:
        self.last_status[line] = status
        if not send:
            return []
        return [Message(f"{self.base}/{line}/status", _status_json(status), 1, True)]


@dataclass
class _Device:
    classes: list[str] = field(default_factory=list)
    rates: spb.LineRates = field(default_factory=spb.LineRates)
    state: str | None = None
    recipe: str | None = None
    born: bool = False
    ddata: spb.PayloadTemplate | None = None  # the DDATA of its results, for the classes of its birth


class _SparkplugFlavour(_Flavour):
    key = "sparkplug"

    def __init__(self, config: MqttPublisherConfig, context: PublisherContext, bd_seq: int) -> None:
        sp = config.sparkplug
        self.group = sp.group_id
        self.node = sp.edge_node_id or context.site
        self.qos = sp.qos
        self.context = context
        self.bd_seq = bd_seq
        self.seq = 0
        self.devices: dict[str, _Device] = {}
        self.birth_seq = 0  # journal seq at the last birth: results at or below it are backlog
        self.last_backlog: int | None = None
        self.version = _software_version()

    def _topic(self, kind: str, device: str | None = None) -> str:
        return spb.topic(self.group, kind, self.node, device)

    def _next(self) -> int:
        seq = self.seq
        self.seq = spb.next_seq(seq)
        return seq

    def will(self) -> Message:
        payload = spb.encode_payload([spb.Metric(spb.BDSEQ, spb.INT64, self.bd_seq)], seq=None)
        return Message(self._topic("NDEATH"), payload, 1, False)

    def subscriptions(self) -> list[str]:
        return [self._topic("NCMD")]

    def wants_rebirth(self, topic: str, payload: bytes) -> bool:
        return topic == self._topic("NCMD") and spb.rebirth_requested(payload)

    def _device(self, line: str) -> _Device:
        device = self.devices.get(line)
        if device is None:
            device = self.devices[line] = _Device(classes=self._model_classes(line))
        return device

    def _model_classes(self, line: str) -> list[str]:
        names = getattr(self.context.lines.get(line), "class_names", None)
        return list(names) if names else []

    def births(self, journal: ResultJournal) -> list[Message]:
        self.seq = 0
        self.birth_seq = journal.last_seq()
        backlog = 0  # the session reports the real backlog in NDATA once it knows it
        out = [
            Message(
                self._topic("NBIRTH"),
                spb.encode_payload(spb.node_metrics(self.bd_seq, backlog, self.version), seq=self._next()),
                self.qos,
                False,
            )
        ]
        self.last_backlog = backlog
        for line in sorted({*self.context.lines, *self.devices}):
            device = self._device(line)
            device.born = False
            out.append(self._dbirth(line, journal))
        return out

    def _dbirth(
        self, line: str, journal: ResultJournal | None, latest: InspectionResult | None = None
    ) -> Message:
        device = self._device(line)
        if latest is None and journal is not None:
            found = journal.query(line=line, limit=1, newest_first=True)
            latest = found[0] if found else None
        seen = [d.class_name for d in latest.defects] if latest is not None else []
        for name in [*self._model_classes(line), *seen]:  # the model may have been loaded or swapped since
            if name not in device.classes:
                device.classes.append(name)
        device.born = True
        device.ddata = spb.PayloadTemplate(spb.line_metric_types(device.classes))
        metrics = spb.birth_line_metrics(latest, device.classes, device.rates, device.state)
        return Message(
            self._topic("DBIRTH", line), spb.encode_payload(metrics, seq=self._next()), self.qos, False
        )

    def result(self, result: InspectionResult, historical: bool) -> list[Message]:
        device = self._device(result.line)
        out = []
        new_class = any(
            name not in device.classes  # a model loaded (or swapped) since, or a class it never named
            for name in (*self._model_classes(result.line), *(d.class_name for d in result.defects))
        )
        if not device.born or new_class:  # a new device, or a new metric: the spec wants a (re)birth
            out.append(self._dbirth(result.line, None, latest=result))
        device.rates.add(result)
        assert device.ddata is not None  # made by the birth
        payload = device.ddata.encode(
            spb.line_values(result, device.classes, device.rates),
            metric_ms=spb.ms(result.timestamp),
            historical=historical,
            seq=self._next(),
            timestamp_ms=spb.ms(time.time()),
        )
        out.append(Message(self._topic("DDATA", result.line), payload, self.qos, False))
        return out

    def status(self, line: str, status: dict[str, Any], send: bool = True) -> list[Message]:
        device = self._device(line)
        state, recipe = status.get("state"), status.get("recipe")
        if state is None or (state == device.state and recipe == device.recipe):
            return []
        device.state, device.recipe = str(state), recipe
        if not send or not device.born:
            return []  # its birth (sent before its first result) carries the state
        payload = spb.encode_payload(spb.state_metrics(device.state, recipe), seq=self._next())
        return [Message(self._topic("DDATA", line), payload, self.qos, False)]

    def periodic(self, backlog: int) -> list[Message]:
        if backlog == self.last_backlog:
            return []
        self.last_backlog = backlog
        metric = spb.Metric("Delivery/Backlog", spb.UINT64, backlog, spb.ms(time.time()))
        return [
            Message(self._topic("NDATA"), spb.encode_payload([metric], seq=self._next()), self.qos, False)
        ]


# -- one MQTT connection with its cursor ---------------------------------------------------------------


@dataclass
class _InFlight:
    seq: int
    result_id: str
    waiting: int  # messages of this result not yet acknowledged


class _Session:
    """One MQTT connection: connect with back-off, births, journal backlog, acks → cursor."""

    PERIODIC_S = 5.0
    ACK_GATHER_S = 0.002
    MARKER_WAIT_S = 3.0

    def __init__(self, owner: MqttPublisher, flavour: _Flavour) -> None:
        self.owner = owner
        self.config = owner.config
        self.flavour = flavour
        self.cursor_name = f"{owner.name}/{flavour.key}"
        self.marker_topic = (
            f"{self.config.topic_prefix}/{owner.context.site}/_delivered/{owner.name}-{flavour.key}"
        )
        self.client_id = f"{self.config.client_id or 'edge-inspect-' + owner.context.site}-{flavour.key}"
        self.events: deque[tuple[str, Any]] = deque()
        self.client: _BatchingClient | None = None
        self.online = False
        self.in_flight: OrderedDict[int, _InFlight] = OrderedDict()
        self.by_mid: dict[int, int] = {}
        self.cursor = 0
        self.next_seq = 0
        self.persisted = 0
        self.persisted_at = 0.0
        self.fill_due: float | None = 0.0  # when to read the journal next; None: nothing known to be owed
        self.more_owed = False  # the last read filled the window: read again as acks free it
        self.reader: ResultJournal | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.wake_pending = False
        self.thread = threading.Thread(target=self._run, name=f"{owner.name}-{flavour.key}", daemon=True)
        self.last_error: str | None = None
        self.counters = {
            "sent": 0,
            "delivered": 0,
            "connects": 0,
            "disconnects": 0,
            "births": 0,
            "skipped_by_marker": 0,
            "expired_undelivered": 0,
        }

    # -- called from other threads -----------------------------------------------------------------
    def post(self, kind: str, item: Any = None) -> None:
        self.events.append((kind, item))
        self.wake(always=True)

    def wake(self, always: bool = False) -> None:
        """A result was journaled (or, with `always`, an event posted or a stop asked for)."""
        if self.wake_pending and not always:  # a journal read is due anyway and will find the result
            return
        self.wake_pending = True
        with contextlib.suppress(OSError):  # buffer full: wake-ups are pending anyway
            self.wake_w.send(b"\x00")

    def close_wake(self) -> None:
        self.wake_r.close()
        self.wake_w.close()

    # -- session thread --------------------------------------------------------------------------
    def start(self, journal: ResultJournal) -> None:
        self.reader = ResultJournal(journal.path)
        self.cursor = self.next_seq = self.persisted = self.reader.cursor(self.cursor_name)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._loop()
                break
            except Exception:  # a bug or a journal error must not end delivery for good: log, reconnect
                log.exception(
                    "mqtt %s (%s): delivery loop failed; reconnecting", self.owner.name, self.flavour.key
                )
                self._close(graceful=False)
                if self.owner.stopping.is_set():
                    break
                time.sleep(1.0)
        try:
            self._persist_cursor(force=True)
        except Exception:  # journal already closed: the marker (or the consumers) absorb the resend
            log.exception(
                "mqtt %s (%s): could not save cursor %d at stop",
                self.owner.name,
                self.flavour.key,
                self.cursor,
            )
        self._close(graceful=True)

    def _loop(self) -> None:
        backoff = self.config.reconnect_initial_s
        retry_at = 0.0
        last_periodic = last_poll = 0.0
        owner = self.owner
        while not owner.stopping.is_set() or (
            self.online and self.in_flight and time.monotonic() < owner.deadline
        ):
            now = time.monotonic()
            if self.client is None and not owner.stopping.is_set() and now >= retry_at:
                if self._connect():
                    backoff = self.config.reconnect_initial_s
                else:
                    retry_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            self._handle_events()
            if now - last_poll >= 0.5 and self.fill_due is None:
                self.fill_due = now  # results journaled without a notify() (an earlier run) are found too
                last_poll = now
            if self.online and not owner.stopping.is_set():
                if self.fill_due is not None and now >= self.fill_due:
                    self._fill_window()
                if now - last_periodic >= self.PERIODIC_S:
                    last_periodic = now
                    self._publish_all(self.flavour.periodic(self.backlog()))
            self._persist_cursor()
            if self.client is None:
                timeout = max(0.0, min(0.5, retry_at - time.monotonic()))
            elif self.fill_due is not None and self.online:
                timeout = max(0.0, min(0.5, self.fill_due - time.monotonic()))
            else:
                timeout = 0.5
            if self.in_flight and self.fill_due is None and not self.events:
                time.sleep(self.ACK_GATHER_S)  # let acknowledgements gather: one wake-up reads several
            self._wait(timeout)
            self._handle_events()

    def _wait(self, timeout: float) -> None:
        client = self.client
        sock = client.socket() if client is not None else None
        readers: list[Any] = [self.wake_r]
        writers: list[Any] = []
        if sock is not None:
            readers.append(sock)
            if client.want_write():
                writers.append(sock)
            if getattr(sock, "pending", lambda: 0)() > 0 or client.buffered():
                timeout = 0.0
        if self.events:
            timeout = 0.0
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except (OSError, ValueError):  # the socket was closed under us: the next loop reconnects
            readable, writable = [], []
        if self.wake_r in readable:
            with contextlib.suppress(OSError):
                while self.wake_r.recv(4096):
                    pass
            # wake_pending stays set until the journal read that is now due (_fill_window clears it
            # just before reading): results journaled until then are found by that read, so their
            # notify() need not wake this thread again (at 1,000/s that was a wake-up per result).
            if self.fill_due is None:  # batch what arrives in the next batch_wait_s
                self.fill_due = time.monotonic() + self.config.batch_wait_s
        if client is not None and self.client is client:
            if (
                sock in readable
                or client.buffered()
                or (sock is not None and getattr(sock, "pending", lambda: 0)() > 0)
            ):
                client.loop_read()
            if self.client is client and sock in writable:
                client.loop_write()
            if self.client is client:
                client.loop_misc()

    def _connect(self) -> bool:
        """Connect, read back the marker, send births. False (and the reason logged once) on failure."""
        owner = self.owner
        sparkplug = isinstance(self.flavour, _SparkplugFlavour)
        if sparkplug:
            self.flavour.bd_seq = owner.bd_seq_connects() % 256  # the spec: a new bdSeq per CONNECT sent
        try:
            client = _new_client(self.config, self.client_id, _BatchingClient)
            will = self.flavour.will()
            client.will_set(will.topic, will.payload, will.qos, will.retain)
            client.on_connect = lambda _c, _u, _f, reason, _p: self.events.append(
                ("connack", _connack_code(reason))
            )
            client.on_disconnect = lambda _c, _u, _f, reason, _p: self.events.append(("disconnect", reason))
            client.on_publish = lambda _c, _u, mid, _r, _p: self._on_ack(mid)
            client.on_message = lambda _c, _u, msg: self.events.append(("message", (msg.topic, msg.payload)))
            client.on_subscribe = lambda _c, _u, mid, _r, _p: self.events.append(("suback", mid))
            errors = _socket_errors(client)
            client.connect(self.config.host, self.config.broker_port(), keepalive=self.config.keepalive_s)
        except Exception as exc:  # every failure is reported in one line and retried
            self._failed(explain_connect_failure(self.config, exc))
            return False
        if sparkplug:  # CONNECT (with this bdSeq in its will) went out: the next one gets the next bdSeq
            owner.bd_seq_sent()
        self.client = client
        code = self._await(client, "connack", self.config.connect_timeout_s)
        if code != 0:
            self._close(graceful=False)
            self._failed(
                closed_before_connack(self.config, errors)
                if code is None
                else refused_message(self.config, code)
            )
            return False
        self.counters["connects"] += 1
        # paho formats a log line for every packet while on_log is set; its errors only explain a failed
        # connect, and paho reports a lost link through on_disconnect
        client.on_log = None
        resume = self._read_marker(client)
        if self.client is not client:
            return False
        self.in_flight.clear()
        self.by_mid.clear()
        self.next_seq = max(self.cursor, resume)
        self.fill_due = 0.0
        if self.next_seq > self.cursor:
            self.counters["skipped_by_marker"] += self.next_seq - self.cursor
            self.cursor = self.next_seq
        for topic in self.flavour.subscriptions():
            client.subscribe(topic, qos=0)
        self.online = True
        assert self.reader is not None
        self._publish_all(self.flavour.births(self.reader))
        self.counters["births"] += 1
        if self.last_error is not None:
            log.warning(
                "mqtt %s (%s): connected to %s again", self.owner.name, self.flavour.key, self.config.where()
            )
        else:
            log.info(
                "mqtt %s (%s): connected to %s, from seq %d",
                self.owner.name,
                self.flavour.key,
                self.config.where(),
                self.next_seq,
            )
        self.last_error = None
        return True

    def _failed(self, message: str) -> None:
        if message != self.last_error:  # once per kind of failure, not once per retry
            log.error("mqtt %s (%s): %s", self.owner.name, self.flavour.key, message)
        self.last_error = message

    def _await(self, client: mqtt.Client, kind: str, timeout: float, match: Any = None) -> Any:
        """Run the network loop until an event `kind` (with `match`) arrives; None on timeout/disconnect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.client is client:
            for i, (k, item) in enumerate(list(self.events)):  # a copy: other threads append
                if k == kind and (match is None or item == match):
                    del self.events[i]
                    return item
                if k == "disconnect":
                    self._handle_events()
                    return None
            self._wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return None

    def _read_marker(self, client: mqtt.Client) -> int:
        """The last seq the broker holds for this session (its retained marker), or 0."""
        probe = f"{self.marker_topic}/probe/{self.owner.context.boot_id}"
        found: list[bytes] = []
        _rc, mid = client.subscribe([(self.marker_topic, 0), (probe, 0)])
        if self._await(client, "suback", self.MARKER_WAIT_S, mid) is None:
            return 0
        # Retained messages follow the SUBACK; our own probe, sent after it, comes back after them.
        client.publish(probe, b"", qos=0)
        deadline = time.monotonic() + self.MARKER_WAIT_S
        while time.monotonic() < deadline and self.client is client:
            for i, (k, item) in enumerate(list(self.events)):
                if k == "message" and item[0] in (self.marker_topic, probe):
                    del self.events[i]
                    if item[0] == probe:
                        deadline = 0.0
                    else:
                        found.append(item[1])
                    break
            else:
                self._wait(0.05)
        client.unsubscribe([self.marker_topic, probe])
        if not found or not found[-1]:
            return 0
        try:
            marker = json.loads(found[-1])
            seq, result_id = int(marker["seq"]), str(marker["result_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("mqtt %s: unreadable marker on %s ignored", self.owner.name, self.marker_topic)
            return 0
        assert self.reader is not None
        known = self.reader.get(seq)
        if known is None or known.result_id != result_id:
            log.warning(
                "mqtt %s (%s): the broker's marker (seq %d) names no result of this journal; "
                "resuming from the saved cursor %d",
                self.owner.name,
                self.flavour.key,
                seq,
                self.cursor,
            )
            return 0
        return seq

    def _on_ack(self, mid: int) -> None:
        seq = self.by_mid.pop(mid, None)
        entry = self.in_flight.get(seq) if seq is not None else None
        if entry is None:
            return  # the marker, a birth, a status: not part of a result
        entry.waiting -= 1
        if entry.waiting == 0:
            self._advance()

    def _advance(self) -> None:
        """Results leave the window in seq order: the cursor is the last of the fully acknowledged run."""
        while self.in_flight:
            first = next(iter(self.in_flight.values()))
            if first.waiting > 0:
                break
            self.in_flight.popitem(last=False)
            self.cursor = first.seq
            self.counters["delivered"] += 1
        if self.more_owed and self.fill_due is None:
            self.fill_due = 0.0  # a backlog: refill as soon as the window has room

    def _handle_events(self) -> None:
        while self.events:
            kind, item = self.events.popleft()
            if kind == "disconnect":
                self._lost(item)
                return
            if kind == "status":
                self._publish_all(self.flavour.status(*item, send=self.online))
            elif kind == "message" and self.online and self.flavour.wants_rebirth(*item):
                log.info("mqtt %s: rebirth requested", self.owner.name)
                assert self.reader is not None
                self._publish_all(self.flavour.births(self.reader))
                self.counters["births"] += 1

    def _lost(self, reason: Any) -> None:
        if self.client is None:
            return
        self.counters["disconnects"] += 1
        why = "" if str(reason) in ("Unspecified error", "Success") else f" ({reason})"  # paho's "link lost"
        self._failed(
            f"lost the connection to the MQTT broker at {self.config.where()}{why}; "
            f"{len(self.in_flight)} unacknowledged results will be sent again"
        )
        self._close(graceful=False)

    def _close(self, graceful: bool) -> None:
        client, self.client = self.client, None
        was_online, self.online = self.online, False
        # What was in flight goes again after the reconnect (the marker skips what the broker holds).
        self.in_flight.clear()
        self.by_mid.clear()
        self.next_seq = self.cursor
        if client is None:
            return
        with contextlib.suppress(Exception):
            if graceful and was_online:
                # A clean DISCONNECT makes the broker discard the will: say it ourselves (NDEATH, offline).
                will = self.flavour.will()
                client.publish(will.topic, will.payload, will.qos, will.retain)
                client.disconnect()
                deadline = time.monotonic() + 1.0
                while client.want_write() and time.monotonic() < deadline:
                    client.loop_write()
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _publish_all(self, messages: list[Message]) -> bool:
        client = self.client
        for msg in messages:
            if client is None or self.client is not client:
                return False
            client.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        return True

    def _fill_window(self) -> None:
        assert self.reader is not None
        free = self.config.window - len(self.in_flight)
        self.fill_due = None
        if free <= 0:
            return  # the window is full, so the last read filled it: _advance reads on as acks free room
        self.wake_pending = False  # from here on a notify() wakes us again: this read may miss its result
        batch = self.flavour.read(self.reader, self.next_seq, free)
        self.more_owed = len(batch) == free
        if not batch or self.client is None:
            return
        client = self.client
        self._send_batch(client, batch)
        if self.client is client:
            client.loop_write()  # the whole batch in one send() (_BatchingClient)

    def _send_batch(self, client: _BatchingClient, batch: list[Any]) -> None:
        last: Any = None
        for result in batch:
            if client is None or self.client is not client:
                return
            if result.seq > self.next_seq + 1:
                missing = result.seq - self.next_seq - 1
                self.counters["expired_undelivered"] += missing
                log.error(
                    "mqtt %s: %d results (seq %d..%d) were removed by journal retention before the "
                    "broker acknowledged them",
                    self.owner.name,
                    missing,
                    self.next_seq + 1,
                    result.seq - 1,
                )
            historical = result.seq <= getattr(self.flavour, "birth_seq", 0)
            messages = self.flavour.result(result, historical)
            entry = _InFlight(result.seq, result.result_id, 0)
            self.in_flight[result.seq] = entry
            for msg in messages:
                info = client.publish(msg.topic, msg.payload, msg.qos, msg.retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._handle_events()
                    return
                # QoS 1: on_publish comes with the PUBACK. QoS 0 (Sparkplug's default) has none: paho
                # calls on_publish once the message is written to the socket, which is all we get.
                entry.waiting += 1
                self.by_mid[info.mid] = result.seq
            self.next_seq = result.seq
            self.counters["sent"] += 1
            last = result
            if entry.waiting == 0:
                self._advance()
        if last is not None and self.client is client:
            marker = json.dumps({"seq": last.seq, "result_id": last.result_id}).encode()
            client.publish(self.marker_topic, marker, qos=1, retain=True)

    def _persist_cursor(self, force: bool = False) -> None:
        if self.cursor <= self.persisted:
            return
        now = time.monotonic()
        # Not on every emptied window: at 1,000 results/s that was ~30 journal writes a second per session
        # (the broker's marker, not this cursor, is what keeps a restart from resending).
        if force or now - self.persisted_at >= self.config.cursor_flush_s:
            self.owner.save_cursor(self.cursor_name, self.cursor)
            self.persisted, self.persisted_at = self.cursor, now

    def backlog(self) -> int:
        return max(0, self.owner.journal_last_seq() - self.cursor)


class MqttPublisher(Publisher):
    """Guaranteed delivery to an MQTT broker: plain JSON topics and/or Sparkplug B (module docstring)."""

    guaranteed = True
    config_model = MqttPublisherConfig

    def __init__(self, config: MqttPublisherConfig, context: PublisherContext) -> None:
        if config.reconnect_max_s < config.reconnect_initial_s:
            raise ValueError(f"publisher {config.name!r}: reconnect_max_s must be >= reconnect_initial_s")
        if not config.plain and not config.sparkplug.enabled:
            raise ValueError(
                f"publisher {config.name!r}: both plain and sparkplug are off: nothing to publish"
            )
        for what, value in (("site", context.site), *(("line", n) for n in context.lines)):
            if not value or any(c in value for c in _FORBIDDEN_IN_TOPIC_LEVEL):
                raise ValueError(
                    f"publisher {config.name!r}: the {what} name {value!r} cannot be an MQTT topic "
                    "level (no '/', '+' or '#')"
                )
        self.config = config
        self.context = context
        self.name = config.name
        self.stopping = threading.Event()
        self.deadline = float("inf")
        self._journal: ResultJournal | None = None
        self._cursor_lock = threading.Lock()
        self.sessions: list[_Session] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, journal: ResultJournal) -> None:
        self._journal = journal
        if self.config.plain:
            self.sessions.append(_Session(self, _PlainFlavour(self.config, self.context)))
        if self.config.sparkplug.enabled:
            self.sessions.append(_Session(self, _SparkplugFlavour(self.config, self.context, 0)))
        for session in self.sessions:
            session.start(journal)

    def stop(self, timeout: float = 5.0) -> None:
        """Give unacknowledged results `timeout` seconds; then a clean DISCONNECT (no will is sent)."""
        self.deadline = time.monotonic() + timeout
        self.stopping.set()
        for session in self.sessions:
            session.wake(always=True)
        for session in self.sessions:
            session.thread.join(timeout + 2.0)
            if session.reader is not None:
                session.reader.close()
            session.close_wake()

    def notify(self, result: InspectionResult) -> None:
        self.wake()

    def publish_status(self, line: str, status: dict[str, Any]) -> None:
        for session in self.sessions:
            session.post("status", (line, status))

    # -- shared by the sessions --------------------------------------------------------------------
    def wake(self) -> None:
        for session in self.sessions:
            session.wake()

    def journal_last_seq(self) -> int:
        return self._journal.last_seq() if self._journal is not None else 0

    def bd_seq_connects(self) -> int:
        """Sparkplug CONNECTs sent so far, kept in the journal: bdSeq (this mod 256) survives restarts."""
        assert self._journal is not None
        return self._journal.cursor(f"{self.name}/sparkplug.connects")

    def bd_seq_sent(self) -> None:
        assert self._journal is not None
        with self._cursor_lock:
            name = f"{self.name}/sparkplug.connects"
            self._journal.set_cursor(name, self._journal.cursor(name) + 1)

    def save_cursor(self, name: str, seq: int) -> None:
        assert self._journal is not None
        with self._cursor_lock:
            self._journal.set_cursor(name, seq)
            # `name` alone: the lowest session cursor, which journal retention must not pass
            self._journal.set_cursor(
                self.name, min(s.persisted if s.cursor_name != name else seq for s in self.sessions)
            )

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"dropped": 0}
        for s in self.sessions:
            prefix = s.flavour.key
            out[f"{prefix}_connected"] = float(s.online)
            out[f"{prefix}_in_flight"] = len(s.in_flight)
            out[f"{prefix}_backlog"] = s.backlog()
            out[f"{prefix}_cursor"] = s.cursor
            for key, value in s.counters.items():
                out[f"{prefix}_{key}"] = value
        out["backlog"] = max((out[f"{s.flavour.key}_backlog"] for s in self.sessions), default=0)
        oldest = 0.0
        if self.sessions and self._journal is not None:
            first = self._journal.since(min(s.cursor for s in self.sessions), limit=1)
            if first:
                oldest = max(0.0, time.time() - first[0].timestamp.timestamp())
        out["oldest_undelivered_s"] = oldest
        return out

    @classmethod
    def check(cls, config: MqttPublisherConfig) -> str | None:
        """`edge-inspect config check`: None when the broker takes our login, else the one-line reason."""
        return probe_broker(config)

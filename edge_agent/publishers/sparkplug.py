"""Sparkplug B v3.0 for the `mqtt` publisher: topics, sequence numbers and the metrics of a result.

Pure functions and small value objects; the MQTT session that sends them lives in `mqtt_pub`. The agent
is one *edge node* (`edge_node_id`, the site by default) and each line is a *device* under it:

    spBv1.0/<group>/NBIRTH/<node>            node birth: bdSeq, Node Control/Rebirth, delivery backlog
    spBv1.0/<group>/DBIRTH/<node>/<line>     device birth: every line metric with its datatype
    spBv1.0/<group>/DDATA/<node>/<line>      one per result (and per line state change)
    spBv1.0/<group>/NDATA/<node>             node metrics that changed (backlog)
    spBv1.0/<group>/NDEATH/<node>            the MQTT will: bdSeq of the session it ends
    spBv1.0/<group>/NCMD/<node>              from hosts: `Node Control/Rebirth` = true

Example:
    >>> from contract.result import InspectionResult, ModelInfo
    >>> r = InspectionResult(seq=7, site="s", line="press", part_id="P1", recipe="default", verdict="NG",
    ...                      model=ModelInfo(name="m", version="3"))
    >>> m = {x.name: x for x in birth_line_metrics(r, ["scratch"], LineRates(), state="running")}
    >>> m["Result/Verdict"].value, m["Result/Defects/scratch"].value, m["Result/Journal Seq"].datatype
    ('NG', 0, 8)
    >>> payload = encode_payload([Metric("Result/Verdict", STRING, "OK")], seq=255, timestamp_ms=1)
    >>> decode_payload(payload).seq
    255
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from contract.result import InspectionResult
from edge_agent.publishers import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"

# Sparkplug B data type numbers (specification v3.0, "Data Types")
INT32, INT64, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = 3, 4, 7, 8, 9, 10, 11, 12, 13
DATATYPE_NAMES = {
    INT32: "Int32",
    INT64: "Int64",
    UINT32: "UInt32",
    UINT64: "UInt64",
    FLOAT: "Float",
    DOUBLE: "Double",
    BOOLEAN: "Boolean",
    STRING: "String",
    DATETIME: "DateTime",
}

REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

#: per-result rates look back this far (by the results' own timestamps, so a backlog gives the same rates)
RATE_WINDOW_S = 60.0


class Metric(NamedTuple):  # a tuple: a result's DDATA builds ~15 of them, so creation must be cheap
    name: str
    datatype: int
    value: Any  # None: sent as is_null
    timestamp_ms: int | None = None
    is_historical: bool = False


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    return f"{NAMESPACE}/{group}/{kind}/{node}" + (f"/{device}" if device is not None else "")


def next_seq(seq: int) -> int:
    """Message sequence number: 0..255, then 0 again."""
    return (seq + 1) % 256


def ms(dt_or_s: Any) -> int:
    """Milliseconds since the epoch from a datetime or from seconds."""
    seconds = dt_or_s.timestamp() if hasattr(dt_or_s, "timestamp") else float(dt_or_s)
    return round(seconds * 1000)


# datatype -> (the value field of the Metric message, conversion)
_VALUE_FIELDS: dict[int, tuple[str, Any]] = {
    INT32: ("int_value", lambda v: int(v) & 0xFFFFFFFF),  # Int32 travels as two's complement in a uint32
    UINT32: ("int_value", int),
    INT64: ("long_value", lambda v: int(v) & 0xFFFFFFFFFFFFFFFF),
    UINT64: ("long_value", int),
    DATETIME: ("long_value", int),
    FLOAT: ("float_value", float),
    DOUBLE: ("double_value", float),
    BOOLEAN: ("boolean_value", bool),
    STRING: ("string_value", str),
}


def encode_payload(metrics: Iterable[Metric], *, seq: int | None, timestamp_ms: int | None = None) -> bytes:
    """A Sparkplug B payload (protobuf). Every metric carries its name and datatype (no aliases: hosts
    such as Node-RED read the names straight from each message)."""
    payload = pb.Payload(timestamp=timestamp_ms if timestamp_ms is not None else ms(time.time()), seq=seq)
    add = payload.metrics.add
    for name, datatype, value, timestamp, historical in metrics:
        fields: dict[str, Any] = {"name": name, "datatype": datatype}
        if timestamp is not None:
            fields["timestamp"] = timestamp
        if historical:
            fields["is_historical"] = True
        if value is None:
            fields["is_null"] = True
        else:
            try:
                field, convert = _VALUE_FIELDS[datatype]
            except KeyError:
                raise ValueError(f"unsupported Sparkplug datatype {datatype}") from None
            fields[field] = convert(value)
        add(**fields)
    return payload.SerializeToString()


# -- DDATA of a result, from a template ------------------------------------------------------------------
# A line's DDATA carries the same metric names and datatypes for every result: their bytes are encoded
# once (protobuf wire format), a result adds only its values. The bytes equal what the protobuf runtime
# writes for the same metrics (tests compare them); building a protobuf message per result cost more than
# the rest of a DDATA's work together.


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]


def _unsigned(value: Any, limit: int) -> int:
    n = int(value)
    if not 0 <= n <= limit:
        raise ValueError(f"{value!r} is outside the Sparkplug datatype's range")
    return n


def _string_field(value: Any) -> bytes:
    data = str(value).encode()
    return b"\x7a" + _varint(len(data)) + data  # string_value 15


_PACK_FLOAT, _PACK_DOUBLE = struct.Struct("<f").pack, struct.Struct("<d").pack
# datatype -> the Metric's value field: int_value 10, long_value 11, float_value 12, double_value 13,
# boolean_value 14, string_value 15 (as in _VALUE_FIELDS)
_VALUE_BYTES: dict[int, Any] = {
    INT32: lambda v: b"\x50" + _varint(int(v) & 0xFFFFFFFF),
    UINT32: lambda v: b"\x50" + _varint(_unsigned(v, 0xFFFFFFFF)),
    INT64: lambda v: b"\x58" + _varint(int(v) & 0xFFFFFFFFFFFFFFFF),
    UINT64: lambda v: b"\x58" + _varint(_unsigned(v, 0xFFFFFFFFFFFFFFFF)),
    DATETIME: lambda v: b"\x58" + _varint(_unsigned(v, 0xFFFFFFFFFFFFFFFF)),
    FLOAT: lambda v: b"\x65" + _PACK_FLOAT(float(v)),
    DOUBLE: lambda v: b"\x69" + _PACK_DOUBLE(float(v)),
    BOOLEAN: lambda v: b"\x70\x01" if v else b"\x70\x00",
    STRING: _string_field,
}
_NULL = b"\x38\x01"  # is_null 7


class PayloadTemplate:
    """Payloads of fixed metrics (names and datatypes) whose values, metric timestamp and historical flag
    change: `encode(values, ...)` equals `encode_payload([Metric(name, datatype, value, metric_ms,
    historical) ...], seq=seq, timestamp_ms=timestamp_ms)`.

    >>> t = PayloadTemplate([("Result/Verdict", STRING), ("Result/Defect Count", UINT32)])
    >>> m = [Metric("Result/Verdict", STRING, "NG", 5), Metric("Result/Defect Count", UINT32, 2, 5)]
    >>> t.encode(["NG", 2], metric_ms=5, seq=3, timestamp_ms=9) == encode_payload(m, seq=3, timestamp_ms=9)
    True
    """

    def __init__(self, metrics: Sequence[tuple[str, int]]) -> None:
        self.metrics = list(metrics)
        self._parts: list[tuple[bytes, bytes, Any]] = []  # per metric: name 1, datatype 4, value encoder
        for name, datatype in self.metrics:
            if datatype not in _VALUE_BYTES:
                raise ValueError(f"unsupported Sparkplug datatype {datatype}")
            data = name.encode()
            self._parts.append(
                (b"\x0a" + _varint(len(data)) + data, b"\x20" + _varint(datatype), _VALUE_BYTES[datatype])
            )

    def encode(
        self,
        values: Sequence[Any],
        *,
        metric_ms: int | None,
        historical: bool = False,
        seq: int | None,
        timestamp_ms: int,
    ) -> bytes:
        if len(values) != len(self._parts):
            raise ValueError(f"{len(values)} values for {len(self._parts)} metrics")
        stamp = b"" if metric_ms is None else b"\x18" + _varint(metric_ms)  # timestamp 3
        flag = b"\x28\x01" if historical else b""  # is_historical 5
        out = [b"\x08", _varint(timestamp_ms)]  # Payload.timestamp 1
        for (name, datatype, encode), value in zip(self._parts, values):  # lengths checked above
            value_bytes = _NULL if value is None else encode(value)
            size = len(name) + len(stamp) + len(datatype) + len(flag) + len(value_bytes)
            out += (b"\x12", _varint(size), name, stamp, datatype, flag, value_bytes)  # Payload.metrics 2
        if seq is not None:
            out += (b"\x18", _varint(seq))  # Payload.seq 3
        return b"".join(out)


def decode_payload(data: bytes) -> Any:
    """The protobuf message of a payload (for NCMD handling and diagnostics)."""
    payload = pb.Payload()
    payload.ParseFromString(data)
    return payload


def rebirth_requested(data: bytes) -> bool:
    """True when an NCMD payload sets `Node Control/Rebirth` to true."""
    try:
        payload = decode_payload(data)
    except Exception:  # a malformed command is ignored, never fatal
        return False
    return any(m.name == REBIRTH and m.HasField("boolean_value") and m.boolean_value for m in payload.metrics)


class LineRates:
    """Parts per minute and NG ratio of one line over the last `RATE_WINDOW_S` of result timestamps."""

    def __init__(self) -> None:
        self._recent: deque[tuple[float, bool]] = deque()
        self._ng = 0

    def add(self, result: InspectionResult) -> None:
        t = result.timestamp.timestamp()
        ng = result.verdict == "NG"
        self._recent.append((t, ng))
        self._ng += ng
        while self._recent and self._recent[0][0] <= t - RATE_WINDOW_S:
            _t, old_ng = self._recent.popleft()
            self._ng -= old_ng

    def parts_per_minute(self) -> float:
        return len(self._recent) * 60.0 / RATE_WINDOW_S

    def ng_ratio(self) -> float:
        return self._ng / len(self._recent) if self._recent else 0.0


def node_metrics(bd_seq: int, backlog: int, version: str) -> list[Metric]:
    """NBIRTH metrics (all of them, with datatypes)."""
    return [
        Metric(BDSEQ, INT64, bd_seq),
        Metric(REBIRTH, BOOLEAN, False),
        Metric("Properties/Software", STRING, "edge-inspect"),
        Metric("Properties/Version", STRING, version),
        Metric("Delivery/Backlog", UINT64, backlog),
    ]


def line_metric_types(classes: Sequence[str]) -> list[tuple[str, int]]:
    """(name, datatype) of a line's result metrics, in the order `line_values` gives their values."""
    return [
        ("Result/Verdict", STRING),
        ("Result/Part ID", STRING),
        ("Result/Result ID", STRING),
        ("Result/Journal Seq", UINT64),
        ("Result/Defect Count", UINT32),
        ("Result/Top Confidence", FLOAT),
        ("Result/Reasons", STRING),
        *((f"Result/Defects/{name}", UINT32) for name in classes),
        ("Model/Name", STRING),
        ("Model/Version", STRING),
        ("Recipe", STRING),
        ("Rates/Parts per Minute", DOUBLE),
        ("Rates/NG Ratio", DOUBLE),
    ]


def line_values(result: InspectionResult | None, classes: Sequence[str], rates: LineRates) -> list[Any]:
    """The values of `line_metric_types(classes)` for `result` (None before the first result: nulls).
    A defect of a class not in `classes` counts in the defect count only (the caller rebirths first)."""
    if result is None:
        return [None] * (12 + len(classes))
    per_class = dict.fromkeys(classes, 0)
    for defect in result.defects:
        if defect.class_name in per_class:
            per_class[defect.class_name] += 1
    return [
        result.verdict,
        result.part_id,
        result.result_id,
        result.seq,
        len(result.defects),
        max((d.confidence for d in result.defects), default=0.0),
        "; ".join(result.reasons),
        *per_class.values(),
        result.model.name,
        result.model.version,
        result.recipe,
        rates.parts_per_minute(),
        rates.ng_ratio(),
    ]


def line_metrics(
    result: InspectionResult | None,
    classes: Sequence[str],
    rates: LineRates,
    *,
    historical: bool = False,
) -> list[Metric]:
    """The result metrics of a line (device), valued from `result` (None before the first result: nulls).

    The DDATA of each result carries all of them; the DBIRTH carries them plus `Line/State`."""
    at = ms(result.timestamp) if result is not None else None
    return [
        Metric(name, datatype, value, at, historical)
        for (name, datatype), value in zip(
            line_metric_types(classes), line_values(result, classes, rates), strict=True
        )
    ]


def birth_line_metrics(
    result: InspectionResult | None, classes: Sequence[str], rates: LineRates, state: str | None
) -> list[Metric]:
    """DBIRTH: every metric of the line with its datatype, valued from its latest result and state."""
    return [*line_metrics(result, classes, rates), Metric("Line/State", STRING, state, ms(time.time()))]


def state_metrics(state: str, recipe: str | None) -> list[Metric]:
    """DDATA of a line's state change (live, never historical)."""
    now = ms(time.time())
    out = [Metric("Line/State", STRING, state, now)]
    if recipe:
        out.append(Metric("Recipe", STRING, recipe, now))
    return out


__all__ = [
    "BDSEQ",
    "DATATYPE_NAMES",
    "NAMESPACE",
    "REBIRTH",
    "LineRates",
    "Metric",
    "PayloadTemplate",
    "birth_line_metrics",
    "decode_payload",
    "encode_payload",
    "line_metric_types",
    "line_metrics",
    "line_values",
    "ms",
    "next_seq",
    "node_metrics",
    "rebirth_requested",
    "state_metrics",
    "topic",
]

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
    if result is None:
        per_class: dict[str, int | None] = dict.fromkeys(classes)
        values: dict[str, Any] = {}
    else:
        per_class = dict.fromkeys(classes, 0)
        for defect in result.defects:
            per_class[defect.class_name] = (per_class.get(defect.class_name) or 0) + 1
        values = {
            "verdict": result.verdict,
            "part": result.part_id,
            "rid": result.result_id,
            "seq": result.seq,
            "count": len(result.defects),
            "top": max((d.confidence for d in result.defects), default=0.0),
            "reasons": "; ".join(result.reasons),
            "model": result.model.name,
            "version": result.model.version,
            "recipe": result.recipe,
            "ppm": rates.parts_per_minute(),
            "ng": rates.ng_ratio(),
        }

    def metric(name: str, datatype: int, value: Any) -> Metric:
        return Metric(name, datatype, value, at, historical)

    return [
        metric("Result/Verdict", STRING, values.get("verdict")),
        metric("Result/Part ID", STRING, values.get("part")),
        metric("Result/Result ID", STRING, values.get("rid")),
        metric("Result/Journal Seq", UINT64, values.get("seq")),
        metric("Result/Defect Count", UINT32, values.get("count")),
        metric("Result/Top Confidence", FLOAT, values.get("top")),
        metric("Result/Reasons", STRING, values.get("reasons")),
        *(metric(f"Result/Defects/{name}", UINT32, n) for name, n in per_class.items()),
        metric("Model/Name", STRING, values.get("model")),
        metric("Model/Version", STRING, values.get("version")),
        metric("Recipe", STRING, values.get("recipe")),
        metric("Rates/Parts per Minute", DOUBLE, values.get("ppm")),
        metric("Rates/NG Ratio", DOUBLE, values.get("ng")),
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
    "birth_line_metrics",
    "decode_payload",
    "encode_payload",
    "line_metrics",
    "ms",
    "next_seq",
    "node_metrics",
    "rebirth_requested",
    "state_metrics",
    "topic",
]

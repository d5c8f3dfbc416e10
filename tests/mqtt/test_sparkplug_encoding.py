"""The Sparkplug DDATA of a result, encoded from a template, is byte for byte the payload the official
protobuf runtime writes for the same metrics, and the tests' own decoder reads every value back (no
broker needed)."""

from __future__ import annotations

import doctest

import pytest
from mqtt_support import decode_sparkplug, make_result

from edge_agent.publishers import sparkplug as spb


@pytest.mark.parametrize("historical", [False, True])
def test_ddata_template_equals_the_protobuf_runtime(historical: bool):
    classes = ["scratch", "dent", "Kratzer ü"]
    template = spb.PayloadTemplate(spb.line_metric_types(classes))
    rates = spb.LineRates()
    for n in range(1, 40):
        result = make_result(n, classes=("scratch", "Kratzer ü")).model_copy(update={"seq": n * 1000})
        if n == 5:  # a part id outside ASCII, and an empty reason list
            result = result.model_copy(update={"part_id": "Teil-ß-✓", "reasons": []})
        rates.add(result)
        values = spb.line_values(result, classes, rates)
        metrics = spb.line_metrics(result, classes, rates, historical=historical)
        kwargs = {"seq": n % 256, "timestamp_ms": 1_765_000_000_000 + n}
        ours = template.encode(values, metric_ms=spb.ms(result.timestamp), historical=historical, **kwargs)
        assert ours == spb.encode_payload(metrics, **kwargs)

        decoded = decode_sparkplug(ours)
        assert decoded.seq == n % 256 and decoded.timestamp == kwargs["timestamp_ms"]
        by_name = decoded.by_name()
        assert [m.name for m in decoded.metrics] == [name for name, _ in spb.line_metric_types(classes)]
        assert by_name["Result/Part ID"].value == result.part_id
        assert by_name["Result/Journal Seq"].value == n * 1000
        assert by_name["Result/Defects/Kratzer ü"].value == (1 if n % 3 == 0 else 0)
        assert by_name["Result/Defects/dent"].value == 0
        assert all(m.is_historical is historical for m in decoded.metrics)
        assert all(m.timestamp == spb.ms(result.timestamp) for m in decoded.metrics)


def test_template_nulls_every_datatype_and_ranges():
    kinds = [spb.INT32, spb.INT64, spb.UINT32, spb.UINT64, spb.DATETIME, spb.FLOAT, spb.DOUBLE]
    kinds += [spb.BOOLEAN, spb.STRING]
    template = spb.PayloadTemplate([(f"m{k}", k) for k in kinds])
    for values in (
        [-5, -(2**40), 2**32 - 1, 2**64 - 1, 1_765_000_000_000, 0.1, -1.5e300, False, ""],
        [2**31 - 1, 2**63 - 1, 0, 0, 0, -0.0, 0.0, True, "€" * 200],  # a string longer than 127 bytes
        [None] * len(kinds),
    ):
        metrics = [spb.Metric(f"m{k}", k, v, None) for k, v in zip(kinds, values, strict=True)]
        ours = template.encode(values, metric_ms=None, seq=None, timestamp_ms=1)
        assert ours == spb.encode_payload(metrics, seq=None, timestamp_ms=1)
    with pytest.raises(ValueError, match="range"):
        template.encode([0, 0, -1, 0, 0, 0.0, 0.0, False, ""], metric_ms=None, seq=0, timestamp_ms=1)
    with pytest.raises(ValueError, match="values for"):
        template.encode([0], metric_ms=None, seq=0, timestamp_ms=1)


def test_docstring_examples():
    result = doctest.testmod(spb)
    assert result.attempted > 0 and result.failed == 0

"""Drift flags on constructed shifts (SQLite and PostgreSQL): a line whose NG rate jumps, a line whose
detection confidence sinks, and a stable line, each against its own 7-day baseline."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from contract.result import Defect, InspectionResult, ModelInfo
from hub.config import DriftConfig
from hub.overview import Overview
from hub.registry import Registry
from hub.store import HubStore
from mes.store import StoreItem


def _results(
    line: str, n: int, ng_rate: float, conf: float, start: datetime, span: timedelta, rng: random.Random
) -> list[InspectionResult]:
    out = []
    for i in range(n):
        ng = rng.random() < ng_rate
        defects = [
            Defect(
                camera="top",
                class_name="scratch" if i % 2 else "pit",
                class_id=i % 2,
                confidence=min(0.99, max(0.05, rng.gauss(conf, 0.05))),
                xyxy=[1, 1, 9, 9],
                area_px=64.0,
                counts_for_verdict=ng,
            )
        ]
        out.append(
            InspectionResult(
                site="acme-north",
                line=line,
                part_id=f"{line}-{i}",
                recipe="r",
                verdict="NG" if ng else "OK",
                defects=defects,
                seq=i,
                model=ModelInfo(name="m", version="1"),
                timestamp=start + span * (i / n),
            )
        )
    return out


def test_drift_flags_follow_constructed_shifts(store_url: str):
    rng = random.Random(7)
    store = HubStore.open(store_url)
    try:
        now = datetime.now(timezone.utc)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week = today - timedelta(days=7)
        recent = now - timedelta(minutes=20)
        batches = []
        for line, (ng1, conf1) in {
            "jumps": (0.15, 0.85),
            "sinks": (0.02, 0.55),
            "steady": (0.02, 0.85),
        }.items():
            batches += _results(line, 4000, 0.02, 0.85, week, timedelta(days=7), rng)  # the baseline
            batches += _results(line, 600, ng1, conf1, recent, timedelta(minutes=19), rng)  # the last hour
        for i in range(0, len(batches), 1000):
            store.store_batch([StoreItem(result=r) for r in batches[i : i + 1000]])
        overview = Overview(store.db, Registry(store.db), DriftConfig())
        drift = overview.drift()
        assert (
            drift[("acme-north", "jumps")]["ng_flag"] and drift[("acme-north", "jumps")]["verdict"] == "drift"
        )
        assert not drift[("acme-north", "jumps")]["conf_flag"]
        assert drift[("acme-north", "sinks")]["conf_flag"] and not drift[("acme-north", "sinks")]["ng_flag"]
        assert drift[("acme-north", "steady")]["verdict"] == "stable"
        stats = overview.line_stats()
        assert stats[("acme-north", "jumps")]["drifting"] and not stats[("acme-north", "steady")]["drifting"]
        assert stats[("acme-north", "steady")]["parts_30d"] == 4600
        # too few parts in the window: no verdict rather than a false alarm
        quiet = Overview(store.db, Registry(store.db), DriftConfig(min_parts=10_000)).drift()
        assert quiet[("acme-north", "jumps")]["verdict"] == "not enough parts"
    finally:
        store.close()

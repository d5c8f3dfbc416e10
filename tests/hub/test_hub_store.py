"""`HubStore` on SQLite and on a real PostgreSQL: exactly once, exact roll-ups, quarantine, retention."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from contract.result import Defect, InspectionResult, ModelInfo
from hub.store import HubStore
from mes.store import StoreItem


def _result(
    i: int, line: str = "press", verdict: str = "OK", ts: datetime | None = None, conf: float = 0.9
) -> InspectionResult:
    defects = (
        [
            Defect(
                camera="top",
                class_name="scratch",
                class_id=0,
                confidence=conf,
                xyxy=[1, 2, 30, 40],
                area_px=1000.0,
            )
        ]
        if verdict == "NG"
        else []
    )
    return InspectionResult(
        site="plant-a",
        line=line,
        part_id=f"P{i}",
        recipe="default",
        verdict=verdict,
        defects=defects,
        seq=i,
        model=ModelInfo(name="m", version="3"),
        timestamp=ts or datetime.now(timezone.utc),
        timings_ms={"total": 4.0},
    )


def test_resends_are_stored_once_and_rollups_count_once(store_url: str):
    store = HubStore.open(store_url)
    try:
        results = [_result(i, verdict="NG" if i % 4 == 0 else "OK") for i in range(1, 101)]
        first = store.store_batch([StoreItem(result=r, boot_id="b1") for r in results[:60]])
        assert first == ["stored"] * 60
        # a resend of 40 already stored (lost acks) plus 40 new, and one repeated inside the batch
        again = store.store_batch(
            [StoreItem(result=r, boot_id="b1") for r in results[20:]]
            + [StoreItem(result=results[99], boot_id="b1")]
        )
        assert again.count("duplicate") == 41 and again.count("stored") == 40
        assert store.count() == 100
        assert sorted(store.result_ids()) == sorted(r.result_id for r in results)
        parts, ng = store.db.query("SELECT SUM(parts), SUM(ng) FROM rollup_day")[0]
        assert (int(parts), int(ng)) == (100, 25)
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_minute")) == 100
        by_class = "SELECT SUM(count) FROM rollup_day_class WHERE class_name = 'scratch'"
        assert int(store.db.scalar(by_class)) == 25
        row = store.db.query_dicts(
            "SELECT verdict, model_version, classes, review FROM results WHERE result_id = ?",
            (results[0].result_id,),
        )[0]
        assert row == {"verdict": "OK", "model_version": "3", "classes": "{}", "review": None}
    finally:
        store.close()


def test_bad_messages_are_quarantined_and_acknowledged(store_url: str):
    store = HubStore.open(store_url)
    try:
        bad = StoreItem(result=None, error="not JSON", raw_header=b"{", raw_body=b"x")
        statuses = store.store_batch([bad, StoreItem(result=_result(1), boot_id="b")])
        assert statuses == ["rejected", "stored"]
        assert store.rejected_count() == 1 and store.count() == 1
    finally:
        store.close()


def test_reviews_mark_rows(store_url: str):
    store = HubStore.open(store_url)
    try:
        r = _result(1, verdict="NG")
        store.store_batch([StoreItem(result=r)])
        assert (
            store.apply_reviews(
                "plant-a",
                [{"result_id": r.result_id, "line": "press", "review": "false_reject", "verdict": "NG"}],
            )
            == 1
        )
        review = store.db.scalar("SELECT review FROM results WHERE result_id = ?", (r.result_id,))
        assert review == "false_reject"
    finally:
        store.close()


def test_raw_and_rollup_retention_are_separate(store_url: str):
    store = HubStore.open(store_url)
    try:
        now = datetime.now(timezone.utc)
        old = [_result(i, ts=now - timedelta(days=40, minutes=i)) for i in range(1, 11)]
        new = [_result(i, ts=now - timedelta(minutes=i)) for i in range(11, 21)]
        store.store_batch([StoreItem(result=r) for r in old + new])
        out = store.enforce_retention(raw_days=30, minute_days=7, day_days=365, now=time.time())
        assert store.count() == 10  # raw rows older than 30 days are gone...
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_day")) == 20  # ...their day roll-ups stay
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_minute")) == 10
        if store.db.kind == "postgres":
            assert out["partitions"] >= 1  # dropped whole, not deleted row by row
    finally:
        store.close()

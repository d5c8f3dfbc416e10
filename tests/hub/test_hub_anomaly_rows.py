"""Hub rows carry the anomaly score of results from lines with an anomaly model (issue 29), on SQLite
and on a real PostgreSQL; a database made before the column existed gets it when the hub opens it."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from contract.result import AnomalyScore, InspectionResult, ModelInfo
from hub.schema import schema_sql
from hub.store import HubStore
from mes.store import StoreItem

ANOMALY_MODEL = ModelInfo(name="tiles-anomaly", version="1")


def _result(i: int, scores: list[float]) -> InspectionResult:
    return InspectionResult(
        site="plant-a",
        line="tiles",
        part_id=f"P{i}",
        recipe="default",
        verdict="NG" if any(s >= 0.5 for s in scores) else "OK",
        seq=i,
        model=ANOMALY_MODEL,
        anomaly=[
            AnomalyScore(camera=f"cam{k}", score=s, image_threshold=0.5, pixel_threshold=0.5,
                         anomalous=s >= 0.5, model=ANOMALY_MODEL)
            for k, s in enumerate(scores)
        ],
        timestamp=datetime.now(timezone.utc),
    )


def test_rows_keep_the_highest_anomaly_score(store_url: str) -> None:
    store = HubStore.open(store_url)
    try:
        results = [_result(1, [0.25, 0.75]), _result(2, [0.125]), _result(3, [])]
        assert store.store_batch([StoreItem(result=r, boot_id="b") for r in results]) == ["stored"] * 3
        rows = dict(store.db.query("SELECT seq, anomaly_score FROM results ORDER BY seq"))
        assert rows == {1: 0.75, 2: 0.125, 3: None}
    finally:
        store.close()


def test_an_older_database_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    old = schema_sql("sqlite").replace(" anomaly_score REAL,", "")
    with sqlite3.connect(path) as db:
        db.executescript(old)
        assert "anomaly_score" not in {r[1] for r in db.execute("PRAGMA table_info(results)")}
    store = HubStore.open(f"sqlite:///{path}")
    try:
        assert store.store_batch([StoreItem(result=_result(1, [0.875]), boot_id="b")]) == ["stored"]
        assert store.db.scalar("SELECT anomaly_score FROM results") == 0.875
    finally:
        store.close()
    HubStore.open(f"sqlite:///{path}").close()  # opening again: nothing to add, no error

"""`HubStore`: results in exactly once, with the per-line roll-ups the dashboards read.

It has the contract of the reference MES store (`store_batch(items) -> statuses`, `close()`), so the
hub's ingest is the reference receiver's ROUTER loop with this store behind it: receive a batch, store
it in **one committed transaction** (rows + roll-ups), then acknowledge. A resend (lost ack, agent or
hub killed) finds its `(result_id, ts)` key taken and is answered `duplicate`; roll-ups count only rows
that were really inserted, so they are exact too.

Example:
    >>> import tempfile, pathlib
    >>> from mes.store import StoreItem
    >>> from contract.result import InspectionResult, ModelInfo
    >>> store = HubStore.open(str(pathlib.Path(tempfile.mkdtemp()) / "hub.sqlite"))
    >>> r = InspectionResult(site="s", line="l", part_id="p1", recipe="r", verdict="NG", seq=1,
    ...                      model=ModelInfo(name="m", version="1"))
    >>> store.store_batch([StoreItem(result=r, boot_id="b"), StoreItem(result=r, boot_id="b")])
    ['stored', 'duplicate']
    >>> store.count(), store.db.scalar("SELECT SUM(ng) FROM rollup_day")
    (1, 1)
    >>> store.close()
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from contract.result import InspectionResult
from hub.db import Database
from hub.schema import migrate, partition_name, partition_sql
from mes.store import StoreItem, StoreStatus

log = logging.getLogger(__name__)

_ROW_COLUMNS = (
    "result_id",
    "ts",
    "site",
    "line",
    "seq",
    "part_id",
    "verdict",
    "recipe",
    "model_name",
    "model_version",
    "model_sha256",
    "classes",
    "n_defects",
    "max_conf",
    "timings",
    "boot_id",
    "received_at",
    "anomaly_score",
)
_PG_TYPES = (
    "text",
    "float8",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "float4",
    "text",
    "text",
    "float8",
    "float4",
)

# PostgreSQL ingest: one statement per received batch. The rows arrive as one array per column
# (`unnest`); `ins` inserts them, skipping keys already stored (a resend); the roll-ups are built from
# the rows `ins` really inserted, grouped per key and taken in key order (two hub processes updating the
# same roll-up rows lock them in the same order). One statement is one transaction: rows and roll-ups
# are committed together, in one round trip, before the receiver acknowledges anything.
_PG_ROLLUP_INPUT = (
    ("minute", "int8"),
    ("day", "int8"),
    ("ng", "int4"),
    ("conf_n", "int8"),
    ("conf_sum", "float8"),
    ("conf_sq", "float8"),
)


def _pg_rollup_upsert(table: str, keys: str, select: str, sets: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sets)
    return (
        f"INSERT INTO {table}({keys}, {', '.join(sets)}) {select} GROUP BY {keys} ORDER BY {keys} "
        f"ON CONFLICT ({keys}) DO UPDATE SET {assignments}"
    )


_PG_SUMS = ("parts", "ng", "conf_n", "conf_sum", "conf_sq")
_PG_BATCH = (
    "WITH input AS (SELECT * FROM unnest("
    + ", ".join(f"?::{t}[]" for t in (*_PG_TYPES, *(t for _, t in _PG_ROLLUP_INPUT)))
    + f") AS t({', '.join((*_ROW_COLUMNS, *(c for c, _ in _PG_ROLLUP_INPUT)))})), "
    + f"ins AS (INSERT INTO results({', '.join(_ROW_COLUMNS)}) SELECT {', '.join(_ROW_COLUMNS)} FROM input "
    "ON CONFLICT DO NOTHING RETURNING result_id, ts), "
    "fresh AS (SELECT input.* FROM input JOIN ins USING (result_id, ts)), "
    "m AS ("
    + _pg_rollup_upsert(
        "rollup_minute",
        "site, line, minute",
        "SELECT site, line, minute, COUNT(*), SUM(ng), SUM(conf_n), SUM(conf_sum), SUM(conf_sq) FROM fresh",
        _PG_SUMS,
    )
    + "), d AS ("
    + _pg_rollup_upsert(
        "rollup_day",
        "site, line, day",
        "SELECT site, line, day, COUNT(*), SUM(ng), SUM(conf_n), SUM(conf_sum), SUM(conf_sq) FROM fresh",
        _PG_SUMS,
    )
    + "), c AS ("
    + _pg_rollup_upsert(
        "rollup_day_class",
        "site, line, day, class_name",
        "SELECT site, line, day, k.key AS class_name, SUM(k.value::int8) FROM fresh "
        "CROSS JOIN LATERAL jsonb_each_text(fresh.classes::jsonb) AS k",
        ("count",),
    )
    + ") SELECT result_id FROM ins"
)

REVIEW_STATES = ("confirmed_ng", "false_reject", "escape", "confirmed_ok")


def _upsert(table: str, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
    cols = (*keys, *values)
    sets = ", ".join(f"{v} = {table}.{v} + excluded.{v}" for v in values)
    return (
        f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )


_UPSERT_MINUTE = _upsert(
    "rollup_minute", ("site", "line", "minute"), ("parts", "ng", "conf_n", "conf_sum", "conf_sq")
)
_UPSERT_DAY = _upsert("rollup_day", ("site", "line", "day"), ("parts", "ng", "conf_n", "conf_sum", "conf_sq"))
_UPSERT_CLASS = _upsert("rollup_day_class", ("site", "line", "day", "class_name"), ("count",))


@dataclass
class _Row:
    values: tuple[Any, ...]
    confidences: list[float]
    classes: dict[str, int]


def _row(result: InspectionResult, boot_id: str | None, now: float) -> _Row:
    classes: dict[str, int] = defaultdict(int)
    for d in result.defects:
        if d.counts_for_verdict:
            classes[d.class_name] += 1
    confidences = [float(d.confidence) for d in result.defects]
    values = (
        result.result_id,
        result.timestamp.timestamp(),
        result.site,
        result.line,
        result.seq,
        result.part_id,
        result.verdict,
        result.recipe,
        result.model.name,
        result.model.version,
        result.model.sha256,
        json.dumps(classes, separators=(",", ":")),
        len(result.defects),
        max(confidences) if confidences else None,
        json.dumps(result.timings_ms, separators=(",", ":")),
        boot_id,
        now,
        max((a.score for a in result.anomaly), default=None),
    )
    return _Row(values, confidences, dict(classes))


class HubStore:
    """The hub's database: ingest (`store_batch`), reviews and retention. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known_days: set[int] = set()

    @property
    def path(self) -> str:
        return self.db.url if self.db.kind == "sqlite" else "PostgreSQL"

    @classmethod
    def open(cls, url: str, *, durability: Literal["normal", "full"] = "full") -> HubStore:
        db = Database.connect(url, durability=durability)
        try:
            migrate(db)  # a newer database than this code is refused; an older one is upgraded
        except BaseException:
            db.close()
            raise
        return cls(db)

    # -- ingest ----------------------------------------------------------------------------------
    def store_batch(self, items: list[StoreItem]) -> list[StoreStatus]:
        """Store all items (rows + roll-ups + quarantine) in one committed transaction."""
        now = time.time()
        statuses: list[StoreStatus | None] = [None] * len(items)
        rows: dict[tuple[str, float], tuple[int, _Row]] = {}
        rejected = []
        for i, item in enumerate(items):
            if item.result is None:
                statuses[i] = "rejected"
                rejected.append((now, item.error or "unknown error", item.raw_header, item.raw_body))
                continue
            row = _row(item.result, item.boot_id, now)
            key = (row.values[0], row.values[1])
            if key in rows:
                statuses[i] = "duplicate"  # the same result twice in one batch (a quick resend)
            else:
                rows[key] = (i, row)
        if self.db.kind == "postgres":
            self._ensure_partitions({int(ts // 86400) for _, ts in rows})
            if rejected:
                with self.db.transaction():
                    self._insert_rejected(rejected)
                    inserted = self._insert_pg(list(rows.values()))
            else:  # one statement, so one transaction of its own: no BEGIN/COMMIT round trips
                inserted = self._insert_pg(list(rows.values()))
        else:
            with self.db.transaction():
                self._insert_rejected(rejected)
                inserted = self._insert_rows([row for _, row in rows.values()])
                self._add_to_rollups([row for key, (_, row) in rows.items() if key[0] in inserted])
        for key, (i, _) in rows.items():
            statuses[i] = "stored" if key[0] in inserted else "duplicate"
        return [s or "rejected" for s in statuses]

    def _insert_rejected(self, rejected: list[tuple]) -> None:
        if rejected:
            self.db.executemany(
                "INSERT INTO rejected(received_at, error, header, body) VALUES (?,?,?,?)", rejected
            )

    def _insert_pg(self, rows: list[tuple[int, _Row]]) -> set[str]:
        """PostgreSQL: rows and their roll-ups in **one** statement (`_PG_BATCH`); the ids inserted."""
        if not rows:
            return set()
        columns: list[list[Any]] = [[] for _ in range(len(_ROW_COLUMNS) + len(_PG_ROLLUP_INPUT))]
        for _, r in rows:
            ts = r.values[1]
            extra = (
                int(ts // 60),
                int(ts // 86400),
                1 if r.values[6] == "NG" else 0,
                len(r.confidences),
                float(sum(r.confidences)),
                float(sum(c * c for c in r.confidences)),
            )
            for column, value in zip(columns, (*r.values, *extra)):
                column.append(value)
        return {row[0] for row in self.db.query(_PG_BATCH, columns)}

    def _insert_rows(self, rows: list[_Row]) -> set[str]:
        """SQLite: insert, skipping keys already stored; returns the result_ids that were new."""
        if not rows:
            return set()
        cols = ", ".join(_ROW_COLUMNS)
        inserted = set()
        sql = f"INSERT OR IGNORE INTO results({cols}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))})"
        for r in rows:
            if self.db.execute(sql, r.values) == 1:
                inserted.add(r.values[0])
        return inserted

    def _add_to_rollups(self, rows: list[_Row]) -> None:
        """SQLite: add the rows just inserted to the minute, day and class roll-ups."""
        minute: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
        day: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
        by_class: dict[tuple[str, str, int, str], int] = defaultdict(int)
        for r in rows:
            ts, site, line, verdict = r.values[1], r.values[2], r.values[3], r.values[6]
            for key, acc in (((site, line, int(ts // 60)), minute), ((site, line, int(ts // 86400)), day)):
                a = acc[key]
                a[0] += 1
                a[1] += verdict == "NG"
                a[2] += len(r.confidences)
                a[3] += sum(r.confidences)
                a[4] += sum(c * c for c in r.confidences)
            for name, n in r.classes.items():
                by_class[(site, line, int(ts // 86400), name)] += n
        # sorted: two hub processes updating the same rows take their locks in the same order
        self.db.executemany(_UPSERT_MINUTE, [(*k, *v) for k, v in sorted(minute.items())])
        self.db.executemany(_UPSERT_DAY, [(*k, *v) for k, v in sorted(day.items())])
        self.db.executemany(_UPSERT_CLASS, [(*k, v) for k, v in sorted(by_class.items())])

    def _ensure_partitions(self, days: set[int]) -> None:
        missing = days - self._known_days
        if not missing:
            return
        existing = {
            r[0]
            for r in self.db.query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results'"
            )
        }
        for day in sorted(missing):
            if partition_name(day) not in existing:
                with self.db.transaction():
                    # several hub processes may meet a new day at once: one creates, the others wait
                    self.db.execute("SELECT pg_advisory_xact_lock(7431001)")
                    self.db.execute(partition_sql(day))
            self._known_days.add(day)

    # -- reviews ---------------------------------------------------------------------------------
    def apply_reviews(self, site: str, events: list[dict[str, Any]]) -> int:
        """Review events from an agent's console: `{result_id, line, review, verdict?, reviewed_at?}`.

        The latest review of a result wins; the result's row gets the review state when it is here
        (a review may arrive before its result: `review_events` keeps it either way)."""
        n = 0
        with self.db.transaction():
            for e in events:
                review = str(e["review"])
                if review not in REVIEW_STATES:
                    raise ValueError(f"review {review!r} is not one of {', '.join(REVIEW_STATES)}")
                self.db.execute(
                    "INSERT INTO review_events(result_id, site, line, review, verdict, reviewed_at) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (result_id) DO UPDATE SET review = excluded.review, "
                    "reviewed_at = excluded.reviewed_at",
                    (
                        e["result_id"],
                        site,
                        e["line"],
                        review,
                        e.get("verdict"),
                        float(e.get("reviewed_at") or time.time()),
                    ),
                )
                self.db.execute(
                    "UPDATE results SET review = ? WHERE result_id = ? AND site = ?",
                    (review, e["result_id"], site),
                )
                n += 1
        return n

    # -- retention -------------------------------------------------------------------------------
    def enforce_retention(
        self, raw_days: float, minute_days: float, day_days: float, now: float | None = None
    ) -> dict[str, int]:
        """Raw rows, minute and day roll-ups each have their own age limit. On PostgreSQL whole day
        partitions older than the limit are dropped (no row-by-row delete, no bloat)."""
        now = time.time() if now is None else now
        cutoff_ts = now - raw_days * 86400
        out = {"raw_rows": 0, "partitions": 0, "minute_rows": 0, "day_rows": 0}
        if self.db.kind == "postgres":
            cutoff_day = math.floor(cutoff_ts / 86400)
            names = [
                r[0]
                for r in self.db.query(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results'"
                )
            ]
            for name in names:
                with contextlib.suppress(ValueError):
                    day = int(name.removeprefix("results_d"))
                    if day < cutoff_day:  # the whole day is older than the limit
                        self.db.execute(f"DROP TABLE IF EXISTS {name}")
                        self._known_days.discard(day)
                        out["partitions"] += 1
        else:
            out["raw_rows"] = self.db.execute("DELETE FROM results WHERE ts < ?", (cutoff_ts,))
        out["minute_rows"] = self.db.execute(
            "DELETE FROM rollup_minute WHERE minute < ?", (int((now - minute_days * 86400) // 60),)
        )
        day_cutoff = int((now - day_days * 86400) // 86400)
        out["day_rows"] = self.db.execute("DELETE FROM rollup_day WHERE day < ?", (day_cutoff,))
        self.db.execute("DELETE FROM rollup_day_class WHERE day < ?", (day_cutoff,))
        return out

    # -- reading ---------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM results"))

    def result_ids(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT result_id FROM results ORDER BY site, line, seq")]

    def rejected_count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM rejected"))

    def close(self) -> None:
        self.db.close()


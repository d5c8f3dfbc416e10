"""`ResultJournal`: SQLite (WAL) store of every result, the source of truth for all publishers.

A result is appended (and committed) before anyone is told about it. The journal assigns a sequence
number that only grows, across restarts. Publishers keep their own cursor (last seq delivered) in the
same database, so an outage or a restart resumes from a number, never from memory.

Example:
    >>> import tempfile, pathlib
    >>> from edge_agent.result import InspectionResult, ModelInfo
    >>> j = ResultJournal(pathlib.Path(tempfile.mkdtemp()) / "j.sqlite")
    >>> r = InspectionResult(site="s", line="l", part_id="p1", recipe="r", verdict="OK",
    ...                      model=ModelInfo(name="m", version="1"))
    >>> j.append(r).seq, j.last_seq()
    (1, 1)
    >>> [x.part_id for x in j.since(0)]
    ['p1']
    >>> j.close()
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from edge_agent.result import InspectionResult

Durability = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id  TEXT NOT NULL UNIQUE,
    line       TEXT NOT NULL,
    part_id    TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    ts         REAL NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_ts ON results(ts);
CREATE INDEX IF NOT EXISTS results_line ON results(line, seq);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
"""


class ResultJournal:
    """Thread-safe append-only result store.

    durability="normal" (WAL + synchronous=NORMAL) survives a process crash; "full" also survives
    power loss at the cost of an fsync per commit.
    """

    def __init__(self, path: str | Path, durability: Durability = "normal") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)

    # -- writing -------------------------------------------------------------------------------
    def append(self, result: InspectionResult) -> InspectionResult:
        """Store `result`, give it the next seq, and return it with `seq` set."""
        return self.append_many([result])[0]

    def append_many(self, results: list[InspectionResult]) -> list[InspectionResult]:
        """Store several results in one transaction (one fsync)."""
        out: list[InspectionResult] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for result in results:
                    # AUTOINCREMENT never reuses a seq, even after retention deletes rows.
                    cur = self._db.execute(
                        "INSERT INTO results(result_id, line, part_id, verdict, ts, body) "
                        "VALUES (?,?,?,?,?,?)",
                        (
                            result.result_id,
                            result.line,
                            result.part_id,
                            result.verdict,
                            result.timestamp.timestamp(),
                            "",
                        ),
                    )
                    seq = int(cur.lastrowid)
                    stored = result.model_copy(update={"seq": seq})
                    self._db.execute("UPDATE results SET body=? WHERE seq=?", (stored.to_json(), seq))
                    out.append(stored)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    # -- reading -------------------------------------------------------------------------------
    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='results'").fetchone()
        return int(row[0]) if row else 0

    def get(self, seq: int) -> InspectionResult | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM results WHERE seq=?", (seq,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def get_by_id(self, result_id: str) -> InspectionResult | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM results WHERE result_id=?", (result_id,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def since(self, seq: int, limit: int = 1000, line: str | None = None) -> list[InspectionResult]:
        """Results with seq > `seq`, oldest first, at most `limit`."""
        sql = "SELECT body FROM results WHERE seq > ?"
        args: list[object] = [seq]
        if line is not None:
            sql += " AND line = ?"
            args.append(line)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [InspectionResult.from_json(r[0]) for r in rows]

    def iter_since(self, seq: int, batch: int = 1000, line: str | None = None) -> Iterator[InspectionResult]:
        while True:
            chunk = self.since(seq, batch, line)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq or seq

    def query(
        self,
        *,
        since_time: datetime | None = None,
        until_time: datetime | None = None,
        line: str | None = None,
        verdict: str | None = None,
        part_id: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[InspectionResult]:
        clauses, args = [], []
        for col, op, val in (
            ("ts", ">=", since_time.timestamp() if since_time else None),
            ("ts", "<=", until_time.timestamp() if until_time else None),
            ("line", "=", line),
            ("verdict", "=", verdict),
            ("part_id", "=", part_id),
        ):
            if val is not None:
                clauses.append(f"{col} {op} ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM results {where} ORDER BY seq {order} LIMIT ?", [*args, limit]
            ).fetchall()
        return [InspectionResult.from_json(r[0]) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- consumer cursors ------------------------------------------------------------------------
    def cursor(self, name: str) -> int:
        """Last seq the consumer `name` has been delivered (0 if it never was)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors(name, seq) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET seq=MAX(seq, excluded.seq)",
                (name, seq),
            )

    # -- retention -------------------------------------------------------------------------------
    def enforce_retention(self, max_age_s: float | None = None, max_rows: int | None = None) -> int:
        """Delete the oldest results beyond the limits; returns how many were deleted.

        Seq numbers are never reused (AUTOINCREMENT), so cursors stay valid.
        """
        deleted = 0
        with self._lock:
            if max_age_s is not None:
                cutoff = time.time() - max_age_s
                deleted += self._db.execute("DELETE FROM results WHERE ts < ?", (cutoff,)).rowcount
            if max_rows is not None:
                deleted += self._db.execute(
                    "DELETE FROM results WHERE seq <= (SELECT seq FROM results ORDER BY seq DESC "
                    "LIMIT 1 OFFSET ?)",
                    (max_rows,),
                ).rowcount
        return deleted

    def close(self) -> None:
        with self._lock:
            self._db.close()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)

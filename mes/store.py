"""`ResultStore`: the reference MES receiver's SQLite table, one row per `result_id`, ever.

The layout is versioned like the agent's journal and the hub (`contract.schema_migrations`): the version
lives in the file (`PRAGMA user_version`), the steps in `MES_MIGRATIONS` (step 1: the layout of release
62433ff, the first with versions; append a step for each later change, never edit a released one). At
open, a file without a version that holds the released layout is version 1; an older file is copied to
`<file>.v<N>.bak` and upgraded in one transaction; a file newer than the code is refused unchanged.

Example:
    >>> import tempfile, pathlib
    >>> from contract.result import InspectionResult, ModelInfo
    >>> store = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "mes.sqlite")
    >>> r = InspectionResult(site="s", line="l", part_id="p1", recipe="r", verdict="NG", seq=1,
    ...                      model=ModelInfo(name="m", version="1"))
    >>> store.store_batch([StoreItem(result=r, boot_id="b")])
    ['stored']
    >>> store.store_batch([StoreItem(result=r, boot_id="b")])  # a resend: stored once
    ['duplicate']
    >>> store.count(), store.get(r.result_id).part_id
    (1, 'p1')
    >>> store.close()
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from contract.result import InspectionResult
from contract.schema_migrations import Migration, latest_version, split_statements, upgrade_sqlite

StoreStatus = Literal["stored", "duplicate", "rejected"]

# Release 62433ff, as its receiver created the store (IF NOT EXISTS: idempotent, see upgrade_sqlite).
_RELEASED_LAYOUT = """
CREATE TABLE IF NOT EXISTS results (
    result_id   TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    line        TEXT NOT NULL,
    seq         INTEGER,
    part_id     TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    ts          REAL NOT NULL,
    boot_id     TEXT,
    received_at REAL NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_line_seq ON results(site, line, seq);
-- What could not be parsed is kept, never thrown away, so an integrator can see and fix it.
CREATE TABLE IF NOT EXISTS rejected (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    error       TEXT NOT NULL,
    header      BLOB,
    body        BLOB
)
"""


def _released_layout(db: sqlite3.Connection) -> None:
    for statement in split_statements(_RELEASED_LAYOUT):
        db.execute(statement)


#: every layout change, oldest first
MES_MIGRATIONS: tuple[Migration, ...] = (Migration(1, "layout of release 62433ff", _released_layout),)
MES_VERSION = latest_version(MES_MIGRATIONS)
_RELEASED_RESULTS_COLUMNS = {"result_id", "site", "line", "seq", "part_id", "verdict", "ts", "body"}


def migrate_mes_store(
    db: sqlite3.Connection, path: Path, steps: Sequence[Migration] = MES_MIGRATIONS
) -> int:
    """Bring the store at `path` (open as `db`, autocommit) to the newest layout; returns the version it
    had (0: new). Raises `SchemaTooNewError` / `MigrationError` with the file unchanged."""
    return upgrade_sqlite(
        db,
        path,
        steps,
        "MES result store",
        ("results", _RELEASED_RESULTS_COLUMNS),
        "give the receiver its own store file (--store)",
    )


@dataclass(frozen=True)
class StoreItem:
    """A received result, or (result None) a message that failed to parse and goes to `rejected`."""

    result: InspectionResult | None
    boot_id: str | None = None
    error: str | None = None
    raw_header: bytes = b""
    raw_body: bytes = b""


class ResultStore:
    """Thread-safe; `durability="full"` (default) fsyncs each batch before the receiver acknowledges it."""

    def __init__(self, path: str | Path, durability: Literal["normal", "full"] = "full") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        try:
            migrate_mes_store(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    def store_batch(self, items: list[StoreItem]) -> list[StoreStatus]:
        """Store all items in one committed transaction; returns one status per item."""
        statuses: list[StoreStatus] = []
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    if item.result is None:
                        self._db.execute(
                            "INSERT INTO rejected(received_at, error, header, body) VALUES (?,?,?,?)",
                            (now, item.error or "unknown error", item.raw_header, item.raw_body),
                        )
                        statuses.append("rejected")
                        continue
                    r = item.result
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO results(result_id, site, line, seq, part_id, verdict, ts, "
                        "boot_id, received_at, body) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (r.result_id, r.site, r.line, r.seq, r.part_id, r.verdict, r.timestamp.timestamp(),
                         item.boot_id, now, r.to_json()),
                    )
                    statuses.append("stored" if cur.rowcount == 1 else "duplicate")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return statuses

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def rejected_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def result_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT result_id FROM results ORDER BY site, line, seq")]

    def get(self, result_id: str) -> InspectionResult | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM results WHERE result_id=?", (result_id,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

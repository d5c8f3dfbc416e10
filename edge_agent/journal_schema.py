"""The journal's schema, as numbered migrations (`JOURNAL_MIGRATIONS`), and the upgrade run at open.

The version lives in the SQLite file itself (`PRAGMA user_version`). Step 1 is the layout of release
62433ff, the first one with versions; every later step is what a later release added. The newest layout
is therefore step 1 plus the steps after it; a new journal runs them all.

At open (`migrate_journal`), a journal older than the code is copied to `<journal>.v<N>.bak` (kept) and
upgraded in one transaction; a journal without a version that holds the released layout is version 1
(every journal written before versions were kept); a journal newer than the code is refused unchanged,
and the agent does not start. See docs/agent.md#upgrades.

Example:
    >>> import sqlite3, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "journal.sqlite"
    >>> db = sqlite3.connect(path, isolation_level=None)
    >>> migrate_journal(db, path), db.execute("PRAGMA user_version").fetchone()[0] == JOURNAL_VERSION
    (0, True)
    >>> db.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from contract.schema_migrations import (
    Migration,
    latest_version,
    split_statements,
    sqlite_version,
    upgrade_sqlite,
)

# Release 62433ff, as it created a journal (results, publisher cursors, the journal's id, reviews, audit).
_RELEASED_LAYOUT = """
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
CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    result_seq  INTEGER NOT NULL,
    result_id   TEXT NOT NULL,
    line        TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    boxes       TEXT NOT NULL,
    changes     TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    reviewer    TEXT NOT NULL,
    ts          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_result ON reviews(result_seq, id);
CREATE INDEX IF NOT EXISTS reviews_line ON reviews(line, id);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      REAL NOT NULL,
    user    TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL
)
"""

#: what a journal without a version must hold to be taken for the released layout (version 1)
_RELEASED_RESULTS_COLUMNS = {"seq", "result_id", "line", "part_id", "verdict", "ts", "body"}


def _released_layout(db: sqlite3.Connection) -> None:
    # IF NOT EXISTS throughout: on a journal taken as version 1 it only adds a table a pre-release
    # build had not made yet
    for statement in split_statements(_RELEASED_LAYOUT):
        db.execute(statement)


def _add_column(table: str, column: str, declaration: str):
    """A step adding `column`; a journal of an unreleased build between two releases may have it."""

    def apply(db: sqlite3.Connection) -> None:
        if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    return apply


#: every layout change, oldest first; append a step for each change (never edit a released one)
JOURNAL_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "layout of release 62433ff", _released_layout),
    Migration(
        2,
        'reviews.localised (0: an NG the reviewer could not box, "not localised")',
        _add_column("reviews", "localised", "INTEGER NOT NULL DEFAULT 1"),
    ),
)

JOURNAL_VERSION = latest_version(JOURNAL_MIGRATIONS)


def journal_version(db: sqlite3.Connection) -> int:
    """The journal's schema version (0: new, or written before versions were kept)."""
    return sqlite_version(db)


def migrate_journal(
    db: sqlite3.Connection, path: Path, steps: Sequence[Migration] = JOURNAL_MIGRATIONS
) -> int:
    """Bring the journal at `path` (open as `db`, autocommit) to the newest version; returns the version
    it had (0 for a new journal). Raises `SchemaTooNewError` (newer than the code) or `MigrationError` (a
    step failed: rolled back, the journal as it was), both from `contract.schema_migrations`, in both
    cases with nothing changed."""
    return upgrade_sqlite(
        db,
        path,
        steps,
        "journal",
        ("results", _RELEASED_RESULTS_COLUMNS),
        "point journal.path at the journal, or at a new file",
    )

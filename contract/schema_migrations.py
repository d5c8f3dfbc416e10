"""Numbered schema migrations: the rules our databases (the agent's journal, the hub) upgrade by.

Each database keeps its schema version in itself and its steps in one place, in order: step 1 is the
layout of the first versioned release (62433ff), each later step what a later release added. A new
database runs every step; an older one the steps it lacks, all in **one transaction**, so a failing step
leaves it exactly as it was. An SQLite file is also copied first (sqlite3's backup API, a consistent
copy) to `<db>.v<N>.bak`, N being the version the copy holds, and the copy is kept: it is the way back
to the previous release. A database *newer* than the code is refused, unchanged, with both versions and
what to do (`SchemaTooNewError`).

Example:
    >>> steps = [Migration(1, "first layout", print), Migration(2, "a column", print)]
    >>> latest_version(steps)
    2
    >>> too_new_message("journal /data/j.sqlite", 3, 2, "restore it")[:69]
    'journal /data/j.sqlite has schema version 3, newer than this edge-ins'
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One numbered step: `apply(connection)` runs inside the upgrade's transaction (no COMMIT in it)."""

    version: int
    name: str
    apply: Callable[[Any], None]


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer release than this code; nothing was changed."""

    def __init__(self, message: str, found: int, latest: int) -> None:
        super().__init__(message)
        self.found = found
        self.latest = latest


class MigrationError(RuntimeError):
    """A step failed (or the backup could not be made): the database is as it was before the upgrade."""


def latest_version(steps: Sequence[Migration]) -> int:
    """The version a database has after `steps`; they must be numbered 1, 2, 3 ... in order."""
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise ValueError(f"migration {step.name!r} is numbered {step.version}, expected {expected}")
    return len(steps)


def too_new_message(what: str, found: int, latest: int, way_back: str) -> str:
    return (
        f"{what} has schema version {found}, newer than this edge-inspect (it knows versions up "
        f"to {latest}): a newer release wrote it. Nothing was changed. Run the newer release again; or, "
        f"to go back to this one, {way_back}"
    )


def sqlite_way_back(db_path: Path, latest: int) -> str:
    """What to tell someone who runs an older release on an upgraded SQLite file."""
    backups = sorted(db_path.parent.glob(f"{db_path.name}.v{latest}*.bak"))
    named = ", ".join(str(b) for b in backups) or f"{db_path}.v{latest}.bak"
    return (
        f"stop it and put back the copy made before that upgrade ({named}): copy it over {db_path} and "
        f"delete {db_path.name}-wal and {db_path.name}-shm beside it (what was written since is lost)"
    )


def backup_sqlite(db_path: Path, version: int) -> Path:
    """Copy the SQLite database `db_path` (at schema `version`) to `<db>.v<version>.bak`; returns it.

    Call it while holding the write lock (`BEGIN IMMEDIATE`) on another connection: the copy is then
    exactly what the upgrade starts from. An existing backup is never overwritten (a second one gets
    the time in its name); the copy is written beside it and renamed, so a crash leaves no half copy."""
    target = db_path.with_name(f"{db_path.name}.v{version}.bak")
    if target.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = db_path.with_name(f"{db_path.name}.v{version}.{stamp}.bak")
    partial = target.with_name(target.name + ".partial")
    source = sqlite3.connect(db_path, timeout=30)
    try:
        pages = source.execute("PRAGMA page_count").fetchone()[0]
        size = pages * source.execute("PRAGMA page_size").fetchone()[0]
        free = shutil.disk_usage(db_path.parent).free
        if free < size + 16 * 2**20:
            raise MigrationError(
                f"cannot back up {db_path} before upgrading it: the copy needs {size / 2**20:.0f} MiB and "
                f"{free / 2**20:.0f} MiB are free on that disk; free some space and start again "
                "(nothing was changed)"
            )
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise MigrationError(f"cannot back up {db_path} to {target}: {exc} (nothing was changed)") from exc
    finally:
        source.close()
    partial.replace(target)
    return target


def run_steps(
    pending: Sequence[Migration],
    connection: Any,
    what: str,
    found: int,
    backup: Path | None,
    applied: Callable[[Migration], None] | None = None,
) -> None:
    """Apply `pending` in order inside the caller's transaction (`applied(step)` after each); a failing
    step raises `MigrationError` naming it, for the caller to roll back."""
    for step in pending:
        try:
            step.apply(connection)
        except Exception as exc:
            raise MigrationError(
                f"{what}: upgrade step {step.version} ({step.name}) failed: {exc}. Nothing was changed "
                f"(still at version {found}" + (f"; a copy is in {backup}" if backup else "")
                + "); this edge-inspect cannot run on it until that is mended"
            ) from exc
        if applied is not None:
            applied(step)


def too_new(what: str, found: int, latest: int, way_back: str) -> SchemaTooNewError:
    return SchemaTooNewError(too_new_message(what, found, latest, way_back), found, latest)


def split_statements(sql: str) -> list[str]:
    """The statements of a `;`-separated DDL script (run one by one: sqlite3's executescript would
    commit the upgrade's transaction)."""
    return [s.strip() for s in sql.split(";") if s.strip()]


def sqlite_version(db: sqlite3.Connection) -> int:
    """The schema version an SQLite file keeps in itself (`PRAGMA user_version`; 0: new or unversioned)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def upgrade_sqlite(
    db: sqlite3.Connection,
    path: Path,
    steps: Sequence[Migration],
    what: str,
    released: tuple[str, set[str]],
    not_ours: str,
) -> int:
    """Bring the SQLite file at `path` (open as `db`, autocommit) to the newest of `steps`, its version
    kept in `PRAGMA user_version`; returns the version it had (0 for a new file). The agent's journal and
    the reference MES store upgrade by it.

    A file without a version whose table `released[0]` has at least the columns `released[1]` is taken
    for the layout of step 1 (every file written before versions were kept) and runs step 1 again (its
    statements must be idempotent: they add what an unreleased build had not made yet); one without them
    is refused (`not_ours` says what to do). Before an upgrade the file is copied (`backup_sqlite`), then
    the steps run in one transaction under the write lock: another process opening the file meanwhile
    waits, then finds it done. Raises `SchemaTooNewError` (newer than the code) or `MigrationError` (a
    step failed: rolled back), in both cases with nothing changed.

        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "t.sqlite"
        >>> db = sqlite3.connect(path, isolation_level=None)
        >>> steps = [Migration(1, "t", lambda c: c.execute("CREATE TABLE IF NOT EXISTS t (a)"))]
        >>> upgrade_sqlite(db, path, steps, "test", ("t", {"a"}), ""), sqlite_version(db)
        (0, 1)
        >>> db.close()
    """
    latest = latest_version(steps)
    found = sqlite_version(db)
    if found > latest:
        raise too_new(f"{what} {path}", found, latest, sqlite_way_back(path, latest))
    if found == latest:
        return found
    db.execute("BEGIN IMMEDIATE")  # the writer lock: another process opening it waits, then finds it done
    if sqlite_version(db) >= latest:  # that process upgraded it while this one waited
        db.execute("ROLLBACK")
        return upgrade_sqlite(db, path, steps, what, released, not_ours)
    backup: Path | None = None
    try:
        found = sqlite_version(db)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        adopted = found == 0 and bool(tables)
        if adopted:
            table, columns = released
            if not {r[1] for r in db.execute(f"PRAGMA table_info({table})")} >= columns:
                raise MigrationError(
                    f"{path} is not an edge-inspect {what} (its tables: {', '.join(sorted(tables))}); "
                    + not_ours
                )
            found = 1  # written before versions were kept: the released layout
        if tables and found < latest:
            backup = backup_sqlite(path, found)
        # a file taken as version 1 runs step 1 too (idempotent): it creates a table it may lack
        run_steps(steps[0 if adopted else found :], db, f"{what} {path}", found, backup)
        db.execute(f"PRAGMA user_version = {latest}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if tables:
        log.warning("%s %s: upgraded from schema version %d to %d (copy kept: %s)", what, path, found, latest,
                    backup)
    return found

"""The hub's tables, for SQLite and PostgreSQL, as numbered migrations (`HUB_MIGRATIONS`), and the
upgrade the hub runs when it opens its database (`migrate`). Times are numbers (UTC): `ts` epoch
seconds, `minute` epoch minutes, `day` epoch days, so one set of queries serves both databases.

- `results`: one compact row per result (no image): verdict, classes and counts, model, recipe, timings,
  review state, the anomaly score (the highest of its cameras; NULL without an anomaly model). On
  PostgreSQL it is partitioned by day on `ts` (`results_d<epoch day>`), so raw retention drops whole
  partitions. The key is `(result_id, ts)`: a resend carries the same body, hence the same `ts`, so it
  meets its first copy in the same partition and is recognised as a duplicate.
- `rollup_minute`, `rollup_day`, `rollup_day_class`: per line, updated in the same transaction as the
  rows they count (never twice: only newly inserted rows are counted). Dashboards read only these.
- registry (`agents`, `lines`), rollout (`models`, `rollouts`, `assignments`, `line_history`), users,
  agent commands (image fetch, collect) and collect jobs.
- `sessions`: dashboard logins (`contract.session_store`: a hash of each cookie's token, the user, the
  stamp of their password and role, the expiry), shared by every hub process on the database.
- `schema_version`: one row per migration applied (version, name, when); the highest is the version.

Step 1 is the layout of release 62433ff (`schema_sql`), each later step what a later release added, so
the newest layout is step 1 plus the steps after it. A new database runs every step. An older one runs
the steps it lacks in one transaction (a failing step leaves it as it was); an SQLite file is first
copied to `<hub.sqlite>.v<N>.bak` (kept). A database without `schema_version` that holds the released
tables is version 1. A database newer than the code is refused unchanged, and the hub does not start.
See docs/hub.md#upgrades.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from contract.schema_migrations import (
    Migration,
    MigrationError,
    backup_sqlite,
    latest_version,
    run_steps,
    split_statements,
    sqlite_way_back,
    too_new,
)
from contract.session_store import SESSIONS_TABLE
from hub.db import Database

log = logging.getLogger(__name__)

_COMMON = """
CREATE TABLE IF NOT EXISTS rollup_minute (
    site TEXT NOT NULL, line TEXT NOT NULL, minute BIGINT NOT NULL,
    parts BIGINT NOT NULL, ng BIGINT NOT NULL,
    conf_n BIGINT NOT NULL, conf_sum DOUBLE PRECISION NOT NULL, conf_sq DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, line, minute));
CREATE INDEX IF NOT EXISTS rollup_minute_minute ON rollup_minute(minute);
CREATE TABLE IF NOT EXISTS rollup_day (
    site TEXT NOT NULL, line TEXT NOT NULL, day BIGINT NOT NULL,
    parts BIGINT NOT NULL, ng BIGINT NOT NULL,
    conf_n BIGINT NOT NULL, conf_sum DOUBLE PRECISION NOT NULL, conf_sq DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, line, day));
CREATE INDEX IF NOT EXISTS rollup_day_day ON rollup_day(day);
CREATE TABLE IF NOT EXISTS rollup_day_class (
    site TEXT NOT NULL, line TEXT NOT NULL, day BIGINT NOT NULL, class_name TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (site, line, day, class_name));
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, company TEXT NOT NULL, site TEXT, token_sha256 TEXT NOT NULL,
    version TEXT, boot_id TEXT, hostname TEXT, registered_at DOUBLE PRECISION,
    last_seen DOUBLE PRECISION, heartbeat_s DOUBLE PRECISION, info TEXT);
CREATE TABLE IF NOT EXISTS lines (
    site TEXT NOT NULL, line TEXT NOT NULL, agent_id TEXT NOT NULL, company TEXT NOT NULL,
    model_name TEXT, model_version TEXT, model_sha256 TEXT, recipe TEXT, state TEXT,
    hub_model_status TEXT, hub_model_error TEXT, last_seen DOUBLE PRECISION,
    PRIMARY KEY (site, line));
CREATE TABLE IF NOT EXISTS models (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, card TEXT NOT NULL,
    size BIGINT NOT NULL, file TEXT NOT NULL, uploaded_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    site TEXT NOT NULL, line TEXT NOT NULL, rollout_id BIGINT NOT NULL, sha256 TEXT NOT NULL,
    assigned_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (site, line));
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, created_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS review_events (
    result_id TEXT NOT NULL, site TEXT NOT NULL, line TEXT NOT NULL, review TEXT NOT NULL,
    verdict TEXT, reviewed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (result_id))
"""

_SQLITE = """
CREATE TABLE IF NOT EXISTS results (
    result_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, site TEXT NOT NULL, line TEXT NOT NULL,
    seq BIGINT, part_id TEXT NOT NULL, verdict TEXT NOT NULL, recipe TEXT, model_name TEXT,
    model_version TEXT, model_sha256 TEXT, classes TEXT, n_defects INTEGER, max_conf REAL, timings TEXT,
    boot_id TEXT, received_at DOUBLE PRECISION NOT NULL, review TEXT,
    PRIMARY KEY (result_id, ts));
CREATE INDEX IF NOT EXISTS results_line_ts ON results(site, line, ts);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at DOUBLE PRECISION NOT NULL, error TEXT NOT NULL,
    header BLOB, body BLOB);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, manifest TEXT NOT NULL,
    signature TEXT NOT NULL, targets TEXT NOT NULL, canary TEXT, stage TEXT NOT NULL,
    created_by TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS line_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, line TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, event TEXT NOT NULL, rollout_id BIGINT, sha256 TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, taken_at DOUBLE PRECISION, done_at DOUBLE PRECISION,
    status TEXT NOT NULL, result TEXT);
CREATE TABLE IF NOT EXISTS collect_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, company TEXT, site TEXT, line TEXT, selection TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT)
"""

_POSTGRES = """
CREATE TABLE IF NOT EXISTS results (
    result_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, site TEXT NOT NULL, line TEXT NOT NULL,
    seq BIGINT, part_id TEXT NOT NULL, verdict TEXT NOT NULL, recipe TEXT, model_name TEXT,
    model_version TEXT, model_sha256 TEXT, classes TEXT, n_defects INTEGER, max_conf REAL, timings TEXT,
    boot_id TEXT, received_at DOUBLE PRECISION NOT NULL, review TEXT,
    PRIMARY KEY (result_id, ts)) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS results_line_ts ON results(site, line, ts);
CREATE TABLE IF NOT EXISTS rejected (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL,
    error TEXT NOT NULL, header BYTEA, body BYTEA);
CREATE TABLE IF NOT EXISTS rollouts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sha256 TEXT NOT NULL, manifest TEXT NOT NULL,
    signature TEXT NOT NULL, targets TEXT NOT NULL, canary TEXT, stage TEXT NOT NULL,
    created_by TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS line_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, event TEXT NOT NULL, rollout_id BIGINT, sha256 TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS commands (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, agent_id TEXT NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, taken_at DOUBLE PRECISION,
    done_at DOUBLE PRECISION, status TEXT NOT NULL, result TEXT);
CREATE TABLE IF NOT EXISTS collect_jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, company TEXT, site TEXT, line TEXT,
    selection TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT)
"""


def schema_sql(kind: str) -> str:
    """The layout of release 62433ff (schema version 1) on SQLite or PostgreSQL."""
    return (_POSTGRES if kind == "postgres" else _SQLITE) + ";" + _COMMON




def partition_name(day: int) -> str:
    return f"results_d{int(day)}"


def partition_sql(day: int) -> str:
    """The PostgreSQL partition of `results` holding epoch day `day` (UTC)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF results "
        f"FOR VALUES FROM ({int(day) * 86400}) TO ({(int(day) + 1) * 86400})"
    )


# -- migrations ------------------------------------------------------------------------------------


def _released_layout(db: Database) -> None:
    # IF NOT EXISTS throughout: on a database taken as version 1 it only adds a table it lacked
    for statement in split_statements(schema_sql(db.kind)):
        db.execute(statement)


def table_columns(db: Database, table: str) -> set[str]:
    if db.kind == "postgres":
        rows = db.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    else:
        rows = [(r[1],) for r in db.query(f"PRAGMA table_info({table})")]
    return {r[0] for r in rows}


def _add_column(table: str, column: str, kind: str):
    """A step adding `column` (on PostgreSQL to the partitioned parent: every partition gets it); a
    database of an unreleased build between two releases may have it already."""

    def apply(db: Database) -> None:
        if column not in table_columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    return apply


def _statements(statements: Sequence[str]):
    """A step of idempotent statements (IF NOT EXISTS), the same on SQLite and PostgreSQL."""

    def apply(db: Database) -> None:
        for statement in statements:
            db.execute(statement)

    return apply


#: every layout change, oldest first; append a step for each change (never edit a released one)
HUB_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "layout of release 62433ff", _released_layout),
    Migration(2, "results.anomaly_score (the highest image score of the result's cameras)",
              _add_column("results", "anomaly_score", "REAL")),
    Migration(3, "sessions (dashboard logins, contract.session_store)", _statements(SESSIONS_TABLE)),
)

HUB_SCHEMA_VERSION = latest_version(HUB_MIGRATIONS)

#: what a database without a version must hold in `results` to be taken for the released layout
_RELEASED_RESULTS_COLUMNS = {"result_id", "ts", "site", "line", "seq", "part_id", "verdict", "received_at"}


def schema_version(db: Database) -> int:
    """The database's schema version (0: new, or written before versions were kept)."""
    if not table_columns(db, "schema_version"):
        return 0
    return int(db.scalar("SELECT MAX(version) FROM schema_version") or 0)


def migrate(db: Database, steps: Sequence[Migration] = HUB_MIGRATIONS) -> int:
    """Bring the hub's database to the newest version; returns the version it had (0: new). Raises
    `SchemaTooNewError` (newer than the code) or `MigrationError` (a step failed, rolled back), both from
    `contract.schema_migrations`, in both cases with the database unchanged."""
    latest = latest_version(steps)
    found = schema_version(db)
    if found < latest:
        found = _upgrade(db, steps, latest)  # the version it had, read again under the lock
    if found > latest:
        way_back = (
            sqlite_way_back(Path(db.url), latest)
            if db.kind == "sqlite"
            else "restore the dump of this database taken before that upgrade (pg_restore or psql; "
            "what was written since is lost)"
        )
        raise too_new(f"hub database {db.safe_url}", found, latest, way_back)
    return found


def _upgrade(db: Database, steps: Sequence[Migration], latest: int) -> int:
    backup: Path | None = None
    with db.transaction():  # SQLite: BEGIN IMMEDIATE, the writer lock; another hub process waits
        if db.kind == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(7431002)")  # hubs starting at once: one upgrades
        found = schema_version(db)
        if found >= latest:  # another process did it while this one waited
            return found
        results_columns = table_columns(db, "results")
        adopted = found == 0 and bool(results_columns)
        if adopted:
            if not results_columns >= _RELEASED_RESULTS_COLUMNS:
                raise MigrationError(
                    f"{db.safe_url} is not an edge-inspect hub database (its results table has "
                    f"{', '.join(sorted(results_columns))}); give the hub its own database"
                )
            found = 1  # written before versions were kept: the released layout
        if db.kind == "sqlite" and results_columns:
            backup = backup_sqlite(Path(db.url), found)
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        # a database taken as version 1 runs step 1 too (idempotent): it creates a table it may lack
        run_steps(
            steps[0 if adopted else found :], db, f"hub database {db.safe_url}", found, backup,
            applied=lambda step: db.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?,?,?) "
                "ON CONFLICT (version) DO NOTHING",
                (step.version, step.name, time.time()),
            ),
        )
    if results_columns:
        log.warning(
            "hub database %s: upgraded from schema version %d to %d%s",
            db.safe_url, found, latest, f" (copy kept: {backup})" if backup else "",
        )
    return found

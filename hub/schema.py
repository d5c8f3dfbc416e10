"""The hub's tables, for SQLite and PostgreSQL. Times are numbers (UTC): `ts` epoch seconds, `minute`
epoch minutes, `day` epoch days, so one set of queries serves both databases.

- `results`: one compact row per result (no image): verdict, classes and counts, model, recipe, timings,
  review state, the anomaly score (the highest of its cameras; NULL without an anomaly model). On
  PostgreSQL it is partitioned by day on `ts` (`results_d<epoch day>`), so raw retention drops whole
  partitions. The key is `(result_id, ts)`: a resend carries the same body, hence the same `ts`, so it
  meets its first copy in the same partition and is recognised as a duplicate.
- `rollup_minute`, `rollup_day`, `rollup_day_class`: per line, updated in the same transaction as the
  rows they count (never twice: only newly inserted rows are counted). Dashboards read only these.
- registry (`agents`, `lines`), rollout (`models`, `rollouts`, `assignments`, `line_history`), users,
  agent commands (image fetch, collect) and collect jobs.
"""

from __future__ import annotations

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
    boot_id TEXT, received_at DOUBLE PRECISION NOT NULL, review TEXT, anomaly_score REAL,
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
    boot_id TEXT, received_at DOUBLE PRECISION NOT NULL, review TEXT, anomaly_score REAL,
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
    return (_POSTGRES if kind == "postgres" else _SQLITE) + ";" + _COMMON


#: columns added since the first release: (table, column, type), added to older databases at open
ADDED_COLUMNS = (("results", "anomaly_score", "REAL"),)


def partition_name(day: int) -> str:
    return f"results_d{int(day)}"


def partition_sql(day: int) -> str:
    """The PostgreSQL partition of `results` holding epoch day `day` (UTC)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF results "
        f"FOR VALUES FROM ({int(day) * 86400}) TO ({(int(day) + 1) * 86400})"
    )

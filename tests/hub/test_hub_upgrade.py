"""Upgrading a hub database written by the released code (62433ff, tests/fixtures/release_62433ff), on
SQLite and on a real PostgreSQL (restored from the release's `pg_dump`): nothing lost, the version is the
latest, a kept backup (SQLite); a database newer than the code refused (the hub does not start); a
failing step leaves the database as it was (transaction; and the backup). And exactly once across the
upgrade: the released journal, upgraded, delivers to the upgraded hub over a real ingest only the
results the released hub had not acknowledged, each once."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.schema_migrations import Migration, MigrationError, SchemaTooNewError
from contract.zmq_security import ServerSecurity
from edge_agent.cli import app
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from hub.db import Database
from hub.schema import HUB_MIGRATIONS, HUB_SCHEMA_VERSION, migrate, schema_version, table_columns
from hub.store import HubStore
from mes.receiver import MesReceiver

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "release_62433ff"
DELIVERED, TOTAL = 25, 40  # what the released hub holds; what the released journal has journaled


def restore_dump(url: str, dump: Path) -> None:
    """Load a plain `pg_dump` into the (empty) database `url`, as psql would (its meta-commands aside)."""
    import psycopg

    sql = "\n".join(line for line in dump.read_text().splitlines() if not line.startswith("\\"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(params=["sqlite", "postgres"])
def released_hub(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a copy of the released hub's database: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        shutil.copy(RELEASE / "hub.sqlite", tmp_path / "hub.sqlite")
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    url = request.getfixturevalue("pg_server").new_database()
    restore_dump(url, RELEASE / "hub_postgres.sql")
    return url


_CONTENT = {
    "results": "SELECT result_id, ts, site, line, seq, part_id, verdict, recipe, model_name, model_version, "
    "classes, n_defects, max_conf, timings, boot_id, received_at, review FROM results ORDER BY result_id",
    "rollup_minute": "SELECT * FROM rollup_minute ORDER BY site, line, minute",
    "rollup_day": "SELECT * FROM rollup_day ORDER BY site, line, day",
    "rollup_day_class": "SELECT * FROM rollup_day_class ORDER BY site, line, day, class_name",
    "review_events": "SELECT * FROM review_events ORDER BY result_id",
    "agents": "SELECT agent_id, company, token_sha256 FROM agents",
    "users": "SELECT name, password_hash, role FROM users",
    "rejected": "SELECT error, header, body FROM rejected",
}


def content(url: str) -> dict[str, list[tuple]]:
    """The released tables' rows, read without upgrading anything."""
    db = Database.connect(url)
    try:
        return {
            name: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in db.query(sql)]
            for name, sql in _CONTENT.items()
        }
    finally:
        db.close()


def layout(url: str) -> dict[str, set[str]]:
    db = Database.connect(url)
    try:
        if db.kind == "postgres":
            tables = [
                r[0]
                for r in db.query(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
                )
            ]
        else:
            tables = [
                r[0]
                for r in db.query(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
                )
            ]
        return {t: table_columns(db, t) for t in tables}
    finally:
        db.close()


def test_a_released_hub_database_is_upgraded_with_nothing_lost(released_hub: str) -> None:
    before = content(released_hub)
    assert len(before["results"]) == DELIVERED and len(before["review_events"]) == 3
    assert "anomaly_score" not in layout(released_hub)["results"]

    store = HubStore.open(released_hub)
    try:
        assert schema_version(store.db) == HUB_SCHEMA_VERSION
        applied = store.db.query("SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in applied] == list(range(1, HUB_SCHEMA_VERSION + 1))
        assert store.db.scalar("SELECT COUNT(*) FROM results WHERE anomaly_score IS NOT NULL") == 0
        reviews = dict(store.db.query("SELECT seq, review FROM results WHERE review IS NOT NULL"))
        assert reviews == {4: "confirmed_ng", 8: "false_reject", 13: "confirmed_ok"}
        if store.db.kind == "postgres":  # the day partitions are still the parent's
            days = store.db.query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results' ORDER BY 1"
            )
            assert [d for (d,) in days] == ["results_d20788", "results_d20789"]
    finally:
        store.close()
    assert content(released_hub) == before

    if released_hub.startswith("sqlite"):
        path = Path(released_hub.removeprefix("sqlite:///"))
        backup = path.with_name("hub.sqlite.v1.bak")
        assert content(f"sqlite:///{backup}") == before and "schema_version" not in layout(
            f"sqlite:///{backup}"
        )
        HubStore.open(released_hub).close()  # opening again: nothing to do, no second backup
        assert [p.name for p in path.parent.glob("*.bak")] == ["hub.sqlite.v1.bak"]


def test_a_new_hub_database_has_the_latest_layout_and_an_upgraded_one_the_same(
    released_hub: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    new = (
        f"sqlite:///{tmp_path / 'new' / 'hub.sqlite'}"
        if released_hub.startswith("sqlite")
        else request.getfixturevalue("pg_server").new_database()
    )
    HubStore.open(new).close()
    HubStore.open(released_hub).close()
    assert layout(new) == layout(released_hub) and "anomaly_score" in layout(new)["results"]
    if new.startswith("sqlite"):
        assert not list((tmp_path / "new").glob("*.bak"))


def test_exactly_once_across_the_upgrade_of_agent_and_hub(released_hub: str, tmp_path: Path) -> None:
    for name in ("journal.sqlite", "journal.sqlite.id"):
        shutil.copy(RELEASE / name, tmp_path / name)
    journal = ResultJournal(tmp_path / "journal.sqlite")  # today's code: upgraded at open
    receiver = MesReceiver(
        "tcp://127.0.0.1:*",
        None,
        ServerSecurity(security="plain"),
        store_factory=lambda: HubStore.open(released_hub),
    )
    receiver.start()  # today's hub ingest: upgrades the hub's database at open
    # no resend within the test (an ack that is merely slow would otherwise be answered 'duplicate')
    publisher = MesDeliveryPublisher(
        MesDeliveryConfig(
            name="hub",
            endpoint=receiver.endpoint,
            security="plain",
            cursor_flush_s=0,
            resend_initial_s=300,
            resend_max_s=300,
        ),
        PublisherContext(site="plant-a", boot_id="after-upgrade", journal=journal),
    )
    try:
        assert journal.cursor("hub") == DELIVERED  # the released hub had acknowledged up to here
        publisher.start(journal)
        publisher.notify(journal.get(TOTAL))
        deadline = time.monotonic() + 60
        while journal.cursor("hub") < TOTAL and time.monotonic() < deadline:
            time.sleep(0.02)
        assert journal.cursor("hub") == TOTAL
        # only the 15 results the released hub never acknowledged went out, each once
        assert publisher.counters["sent"] == TOTAL - DELIVERED and publisher.counters["resent"] == 0
        assert receiver.counters["received"] == receiver.counters["stored"] == TOTAL - DELIVERED
        assert receiver.counters["duplicate"] == 0
    finally:
        publisher.stop()
        receiver.stop()
    store = HubStore.open(released_hub)
    try:
        assert store.count() == TOTAL
        seqs = [s for (s,) in store.db.query("SELECT seq FROM results ORDER BY seq")]
        assert seqs == list(range(1, TOTAL + 1))  # retention had deleted 1-5 from the journal, not the hub
        ids = {r.result_id for r in journal.since(0, limit=1000)}
        assert ids <= set(store.result_ids())
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_day")) == TOTAL  # roll-ups exact too
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_minute")) == TOTAL
    finally:
        store.close()
        journal.close()


def test_a_hub_database_newer_than_the_code_is_refused(released_hub: str, tmp_path: Path) -> None:
    HubStore.open(released_hub).close()
    db = Database.connect(released_hub)
    db.execute(
        "INSERT INTO schema_version(version, name, applied_at) VALUES (?, 'next release', 0)",
        (HUB_SCHEMA_VERSION + 1,),
    )
    db.close()
    before = content(released_hub)

    with pytest.raises(SchemaTooNewError) as exc:
        HubStore.open(released_hub)
    message = str(exc.value)
    assert f"schema version {HUB_SCHEMA_VERSION + 1}" in message and f"up to {HUB_SCHEMA_VERSION}" in message
    assert "Nothing was changed" in message
    assert (
        f"hub.sqlite.v{HUB_SCHEMA_VERSION}.bak" if released_hub.startswith("sqlite") else "dump"
    ) in message

    served = CliRunner().invoke(
        app,
        [
            "hub",
            "serve",
            "--data",
            str(tmp_path / "hubdata"),
            "--store",
            released_hub,
            "--plain",
            "--ingest",
            "tcp://127.0.0.1:0",
            "--http-port",
            "0",
        ],
    )
    assert served.exit_code == 1 and "newer than this edge-inspect" in served.output, served.output
    assert content(released_hub) == before


def _breaks_midway(db: Database) -> None:
    db.execute("ALTER TABLE results ADD COLUMN half_done TEXT")
    db.execute("DELETE FROM agents")
    raise RuntimeError("disk said no")


def test_a_failing_step_leaves_the_hub_database_as_it_was(released_hub: str) -> None:
    before, shape = content(released_hub), layout(released_hub)
    steps = (*HUB_MIGRATIONS, Migration(HUB_SCHEMA_VERSION + 1, "breaks midway", _breaks_midway))
    db = Database.connect(released_hub)
    try:
        with pytest.raises(MigrationError) as exc:
            migrate(db, steps)
        assert schema_version(db) == 0  # still the released, unversioned database
    finally:
        db.close()
    assert f"step {HUB_SCHEMA_VERSION + 1} (breaks midway) failed: disk said no" in str(exc.value)
    # all steps rolled back together: no schema_version, no anomaly_score (step 2), no sessions (step 3),
    # no half_done, agents kept
    assert layout(released_hub) == shape and content(released_hub) == before
    if released_hub.startswith("sqlite"):
        backup = Path(released_hub.removeprefix("sqlite:///")).with_name("hub.sqlite.v1.bak")
        assert content(f"sqlite:///{backup}") == before

    store = HubStore.open(released_hub)  # today's code, without the broken step, upgrades it
    assert schema_version(store.db) == HUB_SCHEMA_VERSION and store.count() == DELIVERED
    store.close()


def test_a_database_that_is_not_a_hub_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE results (id INTEGER, body TEXT)")
    other.close()
    with pytest.raises(MigrationError, match="is not an edge-inspect hub database"):
        HubStore.open(f"sqlite:///{path}")

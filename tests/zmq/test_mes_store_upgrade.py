"""Upgrading the reference MES receiver's store written by the released code (62433ff,
tests/fixtures/release_62433ff/mes.sqlite, made by make_release_mes_db.py there): the file opens, gets
its version, keeps every row; results sent again by an agent over ZeroMQ are still stored once; a later
step upgrades it with a kept copy; a failing step changes nothing; a store newer than the code is refused
unchanged (and `edge-inspect mes listen` says so)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from zmq_support import wait_for

from contract.result import InspectionResult
from contract.schema_migrations import Migration, MigrationError, SchemaTooNewError
from contract.zmq_security import ServerSecurity
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from mes.receiver import MesReceiver
from mes.store import MES_MIGRATIONS, MES_VERSION, ResultStore, StoreItem, migrate_mes_store

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "release_62433ff"
REPO = Path(__file__).resolve().parents[2]


def released_store(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(RELEASE / "mes.sqlite", folder / "mes.sqlite")
    return folder / "mes.sqlite"


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of the released tables, read without our code."""
    with sqlite3.connect(path) as db:
        out = {
            "results": db.execute("SELECT * FROM results ORDER BY result_id").fetchall(),
            "rejected": db.execute("SELECT * FROM rejected ORDER BY id").fetchall(),
        }
    db.close()
    return out


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.close()
    return version


def test_the_released_store_opens_keeps_its_rows_and_still_stores_once(tmp_path: Path) -> None:
    assert user_version(RELEASE / "mes.sqlite") == 0  # written before versions were kept
    path = released_store(tmp_path)
    before = rows(path)
    assert len(before["results"]) == 12 and len(before["rejected"]) == 1

    store = ResultStore(path)
    try:
        assert user_version(path) == MES_VERSION == len(MES_MIGRATIONS)
        assert rows(path) == before  # every row, byte for byte
        assert store.count() == 12 and store.rejected_count() == 1
        released = [InspectionResult.from_json(r[-1]) for r in before["results"]]
        assert store.get(released[0].result_id) == released[0]
    finally:
        store.close()

    # an agent whose journal holds the same results (its cursor lost) sends them all again over
    # ZeroMQ to a receiver on the upgraded file, then new ones: each result is stored once
    journal = ResultJournal(tmp_path / "agent" / "journal.sqlite")
    for r in sorted(released, key=lambda r: r.seq or 0):
        journal.append(r.model_copy(update={"seq": None}))
    fresh = [journal.append(released[0].model_copy(update={"result_id": f"new-{i}", "seq": None}))
             for i in range(3)]
    receiver = MesReceiver("tcp://127.0.0.1:*", path, ServerSecurity(security="plain"), durability="normal")
    receiver.start()
    publisher = MesDeliveryPublisher(
        MesDeliveryConfig(name="mes", endpoint=receiver.endpoint, security="plain", cursor_flush_s=0),
        PublisherContext(site="plant-m", boot_id="after-upgrade", journal=journal),
    )
    publisher.start(journal)
    try:
        publisher.notify(fresh[-1])
        wait_for(lambda: journal.cursor("mes") == fresh[-1].seq, what="every result acknowledged")
        assert receiver.counters["duplicate"] == 12 and receiver.counters["stored"] == 3
        assert receiver.store.count() == 15
    finally:
        publisher.stop()
        receiver.stop()
        journal.close()
    kept = {r[0]: r for r in rows(path)["results"]}
    assert all(kept[r[0]] == r for r in before["results"])  # the released rows untouched by the resend
    assert not list(tmp_path.glob("*.bak"))  # taking the released layout as version 1 changes nothing


def _with_step_2(apply) -> tuple[Migration, ...]:
    return (*MES_MIGRATIONS, Migration(2, "results.reviewed (test)", apply))


def test_a_later_step_upgrades_with_a_kept_copy_and_a_failing_one_changes_nothing(tmp_path: Path) -> None:
    path = released_store(tmp_path)
    before = rows(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE results ADD COLUMN half_done INTEGER")
        raise RuntimeError("disk on fire")

    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(MigrationError, match=r"step 2 .* failed: disk on fire"):
        migrate_mes_store(db, path, _with_step_2(broken))
    assert user_version(path) == 0 and rows(path) == before
    assert "half_done" not in {r[1] for r in db.execute("PRAGMA table_info(results)")}
    assert rows(tmp_path / "mes.sqlite.v1.bak") == before  # the copy made before the failed try

    def add_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE results ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0")

    assert migrate_mes_store(db, path, _with_step_2(add_column)) == 1
    db.close()
    assert user_version(path) == 2
    after = rows(path)
    assert [r[:-1] for r in after["results"]] == before["results"]
    assert {r[-1] for r in after["results"]} == {0}
    assert after["rejected"] == before["rejected"]
    copies = sorted(tmp_path.glob("mes.sqlite.v1*.bak"))  # the first copy is never overwritten
    assert len(copies) == 2 and all(user_version(c) == 0 and rows(c) == before for c in copies)


def test_a_store_newer_than_the_code_is_refused_unchanged(tmp_path: Path) -> None:
    path = released_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {MES_VERSION + 1}")
    db.close()
    before = rows(path)
    with pytest.raises(SchemaTooNewError, match="newer than this edge-inspect"):
        ResultStore(path)
    assert rows(path) == before and user_version(path) == MES_VERSION + 1
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "mes", "listen", "--plain", "--store", str(path),
         "--endpoint", "tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert run.returncode == 1 and "newer than this edge-inspect" in run.stderr, run.stderr[-2000:]


def test_a_file_that_is_not_a_result_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (seq INTEGER, body TEXT)")  # a journal's shape, say
    db.close()
    with pytest.raises(MigrationError, match="is not an edge-inspect MES result store"):
        ResultStore(path)
    store = ResultStore(tmp_path / "new.sqlite")  # a new file gets the latest layout
    assert store.store_batch([StoreItem(result=None, error="x")]) == ["rejected"]
    store.close()
    assert user_version(tmp_path / "new.sqlite") == MES_VERSION

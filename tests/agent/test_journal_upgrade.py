"""Upgrading a journal written by the released code (62433ff, tests/fixtures/release_62433ff): nothing
lost, cursors and the journal's identity kept, a kept backup; a journal newer than the code refused (the
agent does not start); a failing step leaves the journal as it was. Exactly-once delivery after the
upgrade is tested against a real hub ingest in tests/hub/test_hub_upgrade.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from agent_helpers import folder_line, write_site
from typer.testing import CliRunner

from contract.schema_migrations import Migration, MigrationError, SchemaTooNewError
from edge_agent.cli import app
from edge_agent.journal import ResultJournal, identity_file
from edge_agent.journal_schema import JOURNAL_MIGRATIONS, JOURNAL_VERSION, migrate_journal

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "release_62433ff"


def released_journal(folder: Path) -> Path:
    """A copy of the released journal (and its identity file) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("journal.sqlite", "journal.sqlite.id"):
        shutil.copy(RELEASE / name, folder / name)
    return folder / "journal.sqlite"


def table_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of the released tables (released columns only), read without our code."""
    with sqlite3.connect(path) as db:
        out = {
            "results": db.execute(
                "SELECT seq, result_id, line, part_id, verdict, ts, body FROM results ORDER BY seq"
            ).fetchall(),
            "cursors": db.execute("SELECT name, seq FROM cursors ORDER BY name").fetchall(),
            "reviews": db.execute(
                "SELECT id, result_seq, result_id, line, verdict, decision, boxes, changes, comment, "
                "reviewer, ts FROM reviews ORDER BY id"
            ).fetchall(),
            "audit": db.execute("SELECT * FROM audit ORDER BY id").fetchall(),
            "journal_meta": db.execute("SELECT * FROM journal_meta").fetchall(),
            "sequence": db.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall(),
        }
    db.close()
    return out


def layout(path: Path) -> dict[str, list[tuple]]:
    """Each table's columns (name, type, not null, default, key) and the index names."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out = {t: [tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
        out["indexes"] = db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type='index' ORDER BY name"
        ).fetchall()
    db.close()
    return out


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    return int(version)


def test_the_fixture_is_the_released_layout_without_a_version() -> None:
    rows = table_rows(RELEASE / "journal.sqlite")
    assert user_version(RELEASE / "journal.sqlite") == 0
    assert len(rows["results"]) == 35 and rows["sequence"] == [("audit", 2), ("results", 40), ("reviews", 5)]
    assert rows["cursors"] == [("hub", 25), ("mes", 33)] and len(rows["reviews"]) == 5
    assert "localised" not in {c[0] for c in layout(RELEASE / "journal.sqlite")["reviews"]}


def test_a_released_journal_is_upgraded_with_nothing_lost(tmp_path: Path) -> None:
    path = released_journal(tmp_path)
    before = table_rows(path)
    journal_id = json.loads(identity_file(path).read_text())["journal_id"]

    journal = ResultJournal(path)
    try:
        assert journal.journal_id == journal_id  # the same journal, not a new one
        assert table_rows(path) == before  # every row, byte for byte
        assert user_version(path) == JOURNAL_VERSION
        # the reviews read as before, with the column added since (no review was "not localised")
        assert [r["decision"] for r in journal.review_history(8)] == ["confirmed_ng", "false_reject"]
        current = {r["result_seq"]: r["decision"] for r in journal.current_reviews()}
        assert current == {4: "confirmed_ng", 8: "false_reject", 13: "confirmed_ok", 33: "escape"}
        assert not any(r["not_localised"] for r in journal.reviews_since(0))
        assert [a["action"] for a in journal.audit_log()] == ["setup.saved", "login"]
        assert (journal.cursor("hub"), journal.cursor("mes")) == (25, 33)
        assert [r.seq for r in journal.since(0, limit=1000)] == list(range(6, 41))
        # the next result gets seq 41: retention's deleted seqs 1-5 are never given again
        appended = journal.append(
            journal.get(40).model_copy(update={"result_id": "after-upgrade", "seq": None})
        )
        assert appended.seq == 41
    finally:
        journal.close()

    # the copy made before the upgrade holds the released journal as it was
    backup = tmp_path / "journal.sqlite.v1.bak"
    assert user_version(backup) == 0 and table_rows(backup) == before
    assert layout(backup) == layout(RELEASE / "journal.sqlite")
    ResultJournal(path).close()  # opening again: nothing to do, no second backup
    assert sorted(p.name for p in tmp_path.glob("*.bak")) == ["journal.sqlite.v1.bak"]


def test_a_new_journal_has_the_latest_layout_and_an_upgraded_one_the_same(tmp_path: Path) -> None:
    ResultJournal(tmp_path / "new" / "journal.sqlite").close()
    assert user_version(tmp_path / "new" / "journal.sqlite") == JOURNAL_VERSION == len(JOURNAL_MIGRATIONS)
    assert not list((tmp_path / "new").glob("*.bak"))  # nothing to keep a copy of
    upgraded = released_journal(tmp_path / "old")
    ResultJournal(upgraded).close()
    assert layout(upgraded) == layout(tmp_path / "new" / "journal.sqlite")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_journal_newer_than_the_code_is_refused_unchanged(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    site = write_site(tmp_path, [folder_line("a", synthetic_images, tiny_detect_onnx)])
    path = released_journal(tmp_path / "data")
    ResultJournal(path).close()
    with sqlite3.connect(path) as db:  # as the next release would leave it
        db.execute(f"PRAGMA user_version = {JOURNAL_VERSION + 1}")
    db.close()
    digest = _digest(path)

    with pytest.raises(SchemaTooNewError) as exc:
        ResultJournal(path)
    message = str(exc.value)
    assert f"schema version {JOURNAL_VERSION + 1}" in message and f"up to {JOURNAL_VERSION}" in message
    assert f"journal.sqlite.v{JOURNAL_VERSION}.bak" in message and "Nothing was changed" in message
    assert _digest(path) == digest and user_version(path) == JOURNAL_VERSION + 1

    refused = CliRunner().invoke(app, ["run", "--config", str(site), "--for", "1", "--quiet"])
    assert refused.exit_code == 1, refused.output
    assert f"has schema version {JOURNAL_VERSION + 1}, newer than this edge-inspect" in refused.output
    assert _digest(path) == digest


def _breaks_midway(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE results ADD COLUMN half_done TEXT")
    db.execute("UPDATE cursors SET seq = 0")
    raise RuntimeError("disk said no")


def test_a_failing_step_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    path = released_journal(tmp_path)
    before, shape = table_rows(path), layout(path)
    steps = (*JOURNAL_MIGRATIONS, Migration(JOURNAL_VERSION + 1, "breaks midway", _breaks_midway))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(MigrationError) as exc:
            migrate_journal(db, path, steps)
    finally:
        db.close()
    message = str(exc.value)
    assert "step 3 (breaks midway) failed: disk said no" in message and "still at version 1" in message
    # every step rolled back together: no localised (step 2), no half_done, the cursors as they were
    assert table_rows(path) == before and layout(path) == shape and user_version(path) == 0
    assert table_rows(tmp_path / "journal.sqlite.v1.bak") == before

    journal = ResultJournal(path)  # today's code, without the broken step, upgrades it
    assert journal.cursor("hub") == 25 and user_version(path) == JOURNAL_VERSION
    journal.close()


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (result_id TEXT, body BLOB)")  # the MES receiver's, say
    db.close()
    with pytest.raises(MigrationError, match="is not an edge-inspect journal"):
        ResultJournal(path)
    assert layout(path)["results"] == [("result_id", "TEXT", 0, None, 0), ("body", "BLOB", 0, None, 0)]


@pytest.mark.parametrize("name", ["contract.schema_migrations", "edge_agent.journal_schema"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

"""An emptied, deleted or replaced journal is refused with a clear message (the earlier results would be
gone without a word); `--accept-new-journal` starts a new one on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import folder_line, write_site
from typer.testing import CliRunner

from contract.result import InspectionResult, ModelInfo
from edge_agent.cli import app
from edge_agent.journal import JournalIdentityError, ResultJournal, identity_file


def _result(n: int) -> InspectionResult:
    return InspectionResult(
        site="s", line="l", part_id=f"p{n}", recipe="r", verdict="OK", model=ModelInfo(name="m", version="1")
    )


def _journal_with(path: Path, n: int) -> str:
    j = ResultJournal(path)
    j.append_many([_result(i) for i in range(n)])
    journal_id = j.journal_id
    j.close()
    return journal_id


def test_reopening_the_same_journal_is_fine_and_the_identity_file_notes_the_seq(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal_id = _journal_with(path, 5)
    record = json.loads(identity_file(path).read_text())
    assert record["journal_id"] == journal_id and record["last_seen_seq"] == 5
    j = ResultJournal(path)
    assert j.journal_id == journal_id and j.last_seq() == 5
    j.close()


@pytest.mark.parametrize("how", ["truncated", "deleted", "replaced"])
def test_an_emptied_or_replaced_journal_is_refused_and_left_as_found(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal.sqlite"
    _journal_with(path, 7)
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    if how == "truncated":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    else:
        _journal_with(tmp_path / "other.sqlite", 2)
        (tmp_path / "other.sqlite").replace(path)
    size_before = path.stat().st_size if path.exists() else None
    with pytest.raises(JournalIdentityError) as exc:
        ResultJournal(path)
    message = str(exc.value)
    assert f"{path} is not this site's journal" in message and "results up to seq 7" in message
    assert "--accept-new-journal" in message
    if how == "truncated":
        assert path.stat().st_size == size_before == 0  # nothing written into it

    new = ResultJournal(path, accept_new=True)  # deliberately: a new journal and a new identity
    new.append(_result(99))
    new.close()
    assert json.loads(identity_file(path).read_text())["journal_id"] == new.journal_id
    ResultJournal(path).close()  # and from then on it is this site's journal


def test_a_journal_from_before_identities_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _journal_with(path, 3)
    identity_file(path).unlink()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE journal_meta")
    j = ResultJournal(path)
    assert j.last_seq() == 3 and identity_file(path).exists()
    j.close()


def test_run_refuses_an_emptied_journal_and_accepts_it_on_purpose(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
) -> None:
    site = write_site(tmp_path, [folder_line("a", synthetic_images, tiny_detect_onnx)])
    runner = CliRunner()
    first = runner.invoke(app, ["run", "--config", str(site), "--for", "3", "--quiet"])
    assert first.exit_code == 0, first.output
    journal = tmp_path / "data" / "journal.sqlite"
    journal.write_bytes(b"")
    refused = runner.invoke(app, ["run", "--config", str(site), "--for", "1", "--quiet"])
    assert refused.exit_code == 1 and "is not this site's journal" in refused.output
    accepted = runner.invoke(
        app, ["run", "--config", str(site), "--for", "3", "--quiet", "--accept-new-journal"]
    )
    assert accepted.exit_code == 0, accepted.output

"""NG archive (quota, full disk degrades archiving only) and the journal's retention and export CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
from agent_helpers import folder_line, wait_until, write_site
from typer.testing import CliRunner

from contract.result import Defect, InspectionResult, ModelInfo
from edge_agent.archive import Archive, render_annotated
from edge_agent.cli import app
from edge_agent.config import ArchiveConfig
from edge_agent.journal import ResultJournal
from edge_agent.outcome import Outcome
from edge_agent.sources.base import Frame
from vision.detections import Detections
from vision.images import read_image_file

REPO = Path(__file__).resolve().parents[2]


def outcome(seq: int, verdict: str, image: np.ndarray) -> Outcome:
    det = Detections(
        xyxy=np.array([[10, 10, 40, 30]], dtype=np.float32),
        confidence=np.array([0.9], dtype=np.float32),
        class_id=np.array([0]),
        names={0: "scratch"},
    )
    result = InspectionResult(
        seq=seq,
        site="s",
        line="l/1",
        part_id=f"P {seq}",
        recipe="r",
        verdict=verdict,
        model=ModelInfo(name="m", version="1"),
    )
    return Outcome(
        result, {"top": Frame(image, "top", "x.png", seq)}, {"top": det}, {"top": np.array([True])}
    )


def test_archive_keeps_ng_parts_and_deletes_oldest_beyond_quota(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    size = len(cv2.imencode(".png", image)[1])
    # quota for about 3 raw+annotated pairs
    config = ArchiveConfig(
        path=tmp_path / "arch",
        format="png",
        quota_mb=size * 6.5 / 1e6,
        min_free_mb=0,
        ok_sample_rate=0.0,
        annotated=True,
    )
    archive = Archive(config, seed=0)
    archive.start()
    assert archive.submit(outcome(1, "OK", image)) is False  # OK parts only when sampled
    for seq in range(1, 7):
        assert archive.submit(outcome(seq, "NG", image))
    archive.stop()
    files = sorted(p.name for p in (tmp_path / "arch").rglob("*.png"))
    assert archive.stats.written == 12 and archive.stats.deleted_for_quota >= 5
    assert archive.stats.bytes_used <= config.quota_mb * 1e6
    # the newest survive; names are safe and say seq, part, verdict, camera
    assert files[-1] == "0000000006_P_6_NG_top_annotated.png" and "0000000006_P_6_NG_top.png" in files
    assert not any(name.startswith("0000000001_") for name in files)
    assert (tmp_path / "arch" / "l_1").is_dir()


def test_a_source_jpeg_is_kept_byte_for_byte_and_annotated_when_asked(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    source = tmp_path / "cam.jpg"
    source.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes())
    pixels, file = read_image_file(source)
    assert file is not None and file.ext == ".jpg"
    part = outcome(7, "NG", pixels)
    part.frames["top"].file = file
    part.result.defects = [
        Defect(
            camera="top",
            class_name="scratch",
            class_id=0,
            confidence=0.9,
            xyxy=[10, 40, 60, 80],
            area_px=2000,
        )
    ]
    part.result.reasons = ["scratch: 1 found, at most 0 allowed"]
    archive = Archive(ArchiveConfig(path=tmp_path / "arch", min_free_mb=0), seed=0)  # jpg, no annotated copy
    archive.start()
    assert archive.submit(part)
    archive.stop()
    files = list((tmp_path / "arch").rglob("*.jpg"))
    assert [p.name for p in files] == ["0000000007_P_7_NG_top.jpg"]
    assert files[0].read_bytes() == source.read_bytes()  # the camera's file, not a second JPEG generation
    assert archive.stats.bytes_used == source.stat().st_size

    jpeg = render_annotated(files[0], part.result, "top")
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == pixels.shape
    banner = drawn[2, 64].astype(int)  # the verdict banner across the top: red for NG (BGR 40, 40, 220)
    assert banner[2] > 150 and banner[0] < 100 and banner[1] < 100
    edge = drawn[50:70, 10].mean(0)  # the box's left edge, in class 0's colour (BGR 56, 56, 255)
    assert edge[2] > 180 and edge[2] - edge[:2].max() > 80 and pixels[50:70, 10, 2].mean() < 180


def test_full_disk_degrades_archiving_never_inspection(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    site = write_site(
        tmp_path,
        [folder_line("l1", synthetic_images, tiny_detect_onnx)],
        archive={"path": "data/archive", "ok_sample_rate": 1.0, "min_free_mb": 1e12},  # "no space left"
    )
    agent = agent_factory(site)
    agent.start()
    wait_until(lambda: agent.lines["l1"].state == "stopped")
    wait_until(lambda: agent.archive.stats.skipped_disk == 6)
    assert agent.journal.count() == 6 and agent.archive.stats.written == 0
    _healthy, detail = agent.health()
    assert detail["archive"]["degraded"] and "archiving paused" in detail["archive"]["last_error"]


def test_ok_parts_are_sampled_into_the_archive(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    site = write_site(
        tmp_path,
        [folder_line("l1", synthetic_images, tiny_detect_onnx)],
        archive={"path": "data/archive", "ok_sample_rate": 1.0, "min_free_mb": 0, "annotated": True},
    )
    agent = agent_factory(site)
    agent.start()
    wait_until(lambda: agent.lines["l1"].state == "stopped")
    wait_until(lambda: agent.archive.stats.written == 12)  # 6 parts x (raw + annotated)
    images = list((tmp_path / "data" / "archive" / "l1").rglob("*.jpg"))
    assert len(images) == 12 and all(cv2.imread(str(p)).shape == (96, 128, 3) for p in images)


def make_journal(path: Path, n: int = 5) -> list[InspectionResult]:
    journal = ResultJournal(path)
    t0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
    results = [
        InspectionResult(
            site="s",
            line="l1" if i % 2 else "l2",
            part_id=f"P{i}",
            recipe="r",
            verdict="NG" if i == 3 else "OK",
            reasons=["scratch: 1 found, at most 0 allowed"] if i == 3 else [],
            defects=[
                Defect(
                    camera="top",
                    class_name="scratch",
                    class_id=0,
                    confidence=0.9,
                    xyxy=[1, 2, 3, 4],
                    area_px=4.0,
                )
            ]
            if i == 3
            else [],
            model=ModelInfo(name="m", version="1"),
            timestamp=t0 + timedelta(minutes=i),
            timings_ms={"total": 5.0},
        )
        for i in range(1, n + 1)
    ]
    stored = journal.append_many(results)
    journal.close()
    return stored


def test_results_export_and_tail_cli(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    stored = make_journal(path)
    runner = CliRunner()

    out = runner.invoke(app, ["results", "export", "--journal", str(path), "--since", "2"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["seq"] for x in lines] == [3, 4, 5] and lines[0]["defects"][0]["class"] == "scratch"

    csv_file = tmp_path / "out.csv"
    out = runner.invoke(
        app,
        [
            "results",
            "export",
            "-j",
            str(path),
            "--since",
            "2026-11-25T08:04",
            "--format",
            "csv",
            "-o",
            str(csv_file),
        ],
    )
    assert out.exit_code == 0 and "exported 2 result(s)" in out.output
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert [r["part_id"] for r in rows] == ["P4", "P5"] and rows[0]["timings_ms"] == '{"total":5.0}'

    out = runner.invoke(app, ["results", "export", "-j", str(path), "--line", "l1", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert (
        [r["seq"] for r in rows] == ["1", "3", "5"]
        and rows[1]["verdict"] == "NG"
        and rows[1]["n_defects"] == "1"
    )

    out = runner.invoke(app, ["results", "tail", "-j", str(path), "-n", "2", "--json"])
    assert [json.loads(x)["seq"] for x in out.stdout.splitlines()] == [4, 5]
    out = runner.invoke(app, ["results", "tail", "-j", str(path), "-n", "1"])
    assert "#5" in out.stdout and "P5" in out.stdout

    out = runner.invoke(app, ["results", "export", "-j", str(path), "--since", "yesterday"])
    assert out.exit_code == 2 and "give a sequence number" in out.output
    out = runner.invoke(app, ["results", "export", "-j", str(tmp_path / "none.sqlite")])
    assert out.exit_code == 1 and "no journal there yet" in out.output
    assert stored[-1].seq == 5


def test_results_schema_matches_the_committed_schema() -> None:
    out = CliRunner().invoke(app, ["results", "schema"])
    assert json.loads(out.stdout) == json.loads((REPO / "schemas" / "result.schema.json").read_text())


def test_journal_retention_by_rows_age_and_size_keeps_seq_growing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    make_journal(path, n=5)  # timestamps in 2026-11-25 08:0x
    journal = ResultJournal(path)
    journal.set_cursor("mes", 5)
    assert journal.enforce_retention(max_rows=3) == 2
    assert [r.seq for r in journal.since(0)] == [3, 4, 5]
    big = InspectionResult(
        site="s",
        line="l1",
        part_id="X",
        recipe="r",
        verdict="OK",
        model=ModelInfo(name="m", version="1"),
        reasons=["x" * 20000],
    )
    journal.append_many([big.model_copy(update={"result_id": f"id{i}"}) for i in range(40)])
    before = journal.used_bytes()
    journal.enforce_retention(max_bytes=before // 2)
    assert journal.used_bytes() <= before // 2 and journal.count() < 43
    assert journal.append(big.model_copy(update={"result_id": "last"})).seq == 46  # never reused
    assert journal.cursor("mes") == 5
    journal.close()


def test_agent_applies_journal_retention_at_start(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    make_journal(tmp_path / "data" / "journal.sqlite", n=5)  # from an earlier run
    site = write_site(
        tmp_path,
        [folder_line("l1", synthetic_images, tiny_detect_onnx)],
        journal={"path": "data/journal.sqlite", "retention": {"max_rows": 3, "max_age_days": None}},
    )
    agent = agent_factory(site)
    agent.start()
    wait_until(lambda: agent.lines["l1"].state == "stopped")
    seqs = [r.seq for r in agent.journal.since(0)]
    assert seqs[0] >= 3 and seqs[-1] == 11  # old rows trimmed; the sequence went on from 5


def test_retention_never_deletes_what_a_guaranteed_consumer_has_not_received(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    make_journal(path, n=6)  # old timestamps: every row is past any age limit
    journal = ResultJournal(path)
    journal.set_cursor("mes", 2)  # the MES acknowledged seq 1 and 2, then went away
    journal.set_cursor("other-mes", 4)
    deleted = journal.enforce_retention(max_age_s=60, max_rows=1, keep_after_cursors=["mes", "other-mes"])
    assert deleted == 2
    assert [r.seq for r in journal.since(0)] == [3, 4, 5, 6]
    journal.enforce_retention(max_bytes=1, keep_after_cursors=["mes"])
    assert [r.seq for r in journal.since(0)] == [3, 4, 5, 6]
    journal.set_cursor("mes", 6)
    journal.set_cursor("other-mes", 6)
    journal.enforce_retention(max_rows=1, keep_after_cursors=["mes", "other-mes"])
    assert [r.seq for r in journal.since(0)] == [6]
    journal.close()

"""`edge-inspect dataset from-reviews`: reviewed results become an Ultralytics dataset."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone

import cv2
import numpy as np
import yaml
from console_helpers import result
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.journal import ResultJournal


def archive_image(root, r) -> None:
    folder = root / r.line / r.timestamp.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(folder / f"{r.seq:010d}_{r.part_id}_{r.verdict}_top.jpg"), np.full((48, 64, 3), 128, np.uint8)
    )


def test_from_reviews_writes_corrected_labels(tmp_path) -> None:
    jpath, archive = tmp_path / "j.sqlite", tmp_path / "archive"
    j = ResultJournal(jpath)
    now = datetime.now(timezone.utc)
    ng, ok, gone = j.append_many(
        [result("a", "NG", ["pit"], now), result("a", "OK", [], now), result("a", "NG", ["stain"], now)]
    )
    for r in (ng, ok):
        archive_image(archive, r)
    j.add_review(ng.seq, "false_reject", [], "qa")  # the pit was dust: a good part
    missed = {"camera": "top", "class": "crack", "class_id": 2, "xyxy": [8.0, 8.0, 40.0, 24.0]}
    j.add_review(ok.seq, "escape", [missed], "qa")  # a crack the model missed
    stain = {"camera": "top", "class": "stain", "class_id": 3, "xyxy": [1.0, 1.0, 5.0, 5.0]}
    j.add_review(gone.seq, "confirmed_ng", [stain], "qa")  # its image is not archived: listed, skipped
    j.close()
    runner = CliRunner()
    out = tmp_path / "ds"
    args = ["dataset", "from-reviews", str(out), "--journal", str(jpath), "--archive", str(archive)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "wrote 2 image(s) from 3 review(s)" in done.output and "no archived image" in done.output
    assert (out / "labels" / f"a_{ng.seq:010d}_top.txt").read_text() == ""
    label = (out / "labels" / f"a_{ok.seq:010d}_top.txt").read_text().split()
    assert label[0] == "2" and [round(float(v), 3) for v in label[1:]] == [0.375, 0.333, 0.5, 0.333]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "class_0", 1: "pit", 2: "crack", 3: "stain"}  # ids as the model's
    assert data["train"] == "images"

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
    named = runner.invoke(app, [*args, "--overwrite", "--classes", "scratch,pit,crack,stain"])
    assert named.exit_code == 0 and yaml.safe_load((out / "data.yaml").read_text())["names"][0] == "scratch"
    none = runner.invoke(app, [*args[:2], str(tmp_path / "x"), *args[3:], "--line", "nope"])
    assert none.exit_code == 1 and "no reviews" in none.output


def test_from_reviews_and_hub_collect_write_the_same_labels(console_agent, tmp_path) -> None:
    """One road: the same reviewed journal through `dataset from-reviews` and the agent's answer to
    `hub collect` gives the same label files (clipped boxes, empty false rejects), and both leave out the
    same reviews (a contradictory one refused, a "not localised" one left out)."""
    import io
    import zipfile

    from console_helpers import wait_until

    from edge_agent.hub_collect import collect_zip

    agent = console_agent()

    def four_ng() -> list | None:
        found = [r for r in agent.journal.query(verdict="NG", limit=20) if r.defects]
        return found[:4] if len(found) >= 4 else None

    ngs = wait_until(four_ng, timeout=60)
    for r in ngs:
        wait_until(lambda r=r: agent.console.archive.image(r, "top", False), timeout=20)
    fr, clipped, contradictory, vague = ngs
    d = clipped.defects[0]
    w = clipped.frames[0].width
    beyond = {"camera": "top", "class": d.class_name, "class_id": d.class_id, "xyxy": [w - 20, 5, w + 50, 30]}
    agent.journal.add_review(fr.seq, "false_reject", [], "qa")
    agent.journal.add_review(clipped.seq, "confirmed_ng", [beyond], "qa")
    with sqlite3.connect(agent.config.site.journal.path, timeout=30) as db:  # as an older console stored it
        db.execute(
            "INSERT INTO reviews(result_seq, result_id, line, verdict, decision, boxes, changes, comment,"
            " reviewer, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                contradictory.seq,
                contradictory.result_id,
                contradictory.line,
                "NG",
                "confirmed_ng",
                "[]",
                "{}",
                "",
                "old",
                time.time(),
            ),
        )
    agent.journal.add_review(vague.seq, "confirmed_ng", [], "qa", not_localised=True)

    site = agent.config.site
    out = tmp_path / "ds"
    args = ["dataset", "from-reviews", str(out), "--journal", str(site.journal.path)]
    done = CliRunner().invoke(app, [*args, "--archive", str(site.archive.path)])
    assert done.exit_code == 0, done.output
    assert f"refused #{contradictory.seq}" in done.output and f"left out #{vague.seq}" in done.output
    from_reviews = {int(p.stem.split("_")[-2]): p.read_text() for p in (out / "labels").glob("*.txt")}

    with zipfile.ZipFile(io.BytesIO(collect_zip(agent, {"selection": ["reviewed"]}))) as z:
        collected = {
            int(n.split("__")[2]): z.read(n).decode() for n in z.namelist() if n.startswith("labels/")
        }
        missing = {m["seq"]: m["why"] for m in map(json.loads, z.read("missing.jsonl").decode().splitlines())}

    assert from_reviews == collected
    assert set(collected) == {fr.seq, clipped.seq}
    assert collected[fr.seq] == ""
    cls, cx, _, bw, _ = collected[clipped.seq].split()
    assert int(cls) == d.class_id and round(float(cx) + float(bw) / 2, 6) == 1.0  # clipped at the right edge
    assert missing[contradictory.seq].startswith("refused") and missing[vague.seq].startswith("left out")

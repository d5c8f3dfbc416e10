"""`edge-inspect dataset from-reviews`: reviewed results become an Ultralytics dataset."""

from __future__ import annotations

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

"""`edge-inspect hub collect`: a real agent answers the hub's collect command with its archived NG
images and labels; the dataset is imported with `dataset import --format yolo` and trained on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_support import REPO, hub_config, provision, wait_for, write_site

from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from hub.server import HubServer


@pytest.mark.train
def test_collect_imports_and_trains(tmp_path: Path, tiny_classify_onnx: Path, synthetic_images: Path):
    store = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    server = HubServer(hub_config(tmp_path, store))
    server.start()
    images = tmp_path / "images"
    images.mkdir()
    for i, src in enumerate(sorted(synthetic_images.glob("*.png")) * 3):
        shutil.copy(src, images / f"part_{i:04d}.png")
    site = tmp_path / "site"
    provision(server, "acme-pc1", "Acme", site / "hub.token")
    site_file = write_site(
        site,
        images,
        tiny_classify_onnx,
        server.ingest.endpoint,
        site="acme-north",
        max_fps=20,
        hub={
            "url": server.http_url,
            "agent_id": "acme-pc1",
            "token_file": "hub.token",
            "heartbeat_s": 0.5,
            "command_poll_s": 5,
        },
        site_extra={"capture": {"enabled": True, "band": [0.0, 1.0]}},  # every part "uncertain"
    )
    agent = Agent(load_agent_config(site_file))
    agent.start()
    try:
        wait_for(
            lambda: agent.archive.stats.written >= 18 and agent.hub_link.registered,
            timeout=90,
            what="18 NG parts archived and the agent registered",
        )
        # two parts reviewed on the line console: a false reject (a background image) and a confirmed NG
        # whose box the reviewer redrew; they come as `reviewed`, with the reviewer's labels
        ng = agent.journal.query(line="press", verdict="NG", limit=2)
        agent.journal.add_review(ng[0].seq, "false_reject", [], reviewer="qe")
        d = ng[1].defects[0]
        box = {
            "camera": "top",
            "class": d.class_name,
            "class_id": d.class_id,
            "xyxy": [10.0, 20.0, 50.0, 60.0],
        }
        agent.journal.add_review(ng[1].seq, "confirmed_ng", [box], reviewer="qe")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = tmp_path / "collected"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "hub",
                "collect",
                "--company",
                "Acme",
                "--ng",
                "--reviewed",
                "--uncertain",
                "--out",
                str(out),
                "--store",
                store,
                "--data",
                str(server.config.data_dir),
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        agent.stop()
        server.stop()
    report = json.loads((out / "collect_report.json").read_text())
    entry = report["agents"]["acme-pc1"]
    assert entry["status"] == "done" and entry["images"] == 18 == report["images"]
    # reviewed first, then the capture archive's uncertain parts (the same parts are not sent twice)
    assert entry["by_selection"] == {"reviewed": 2, "uncertain": 16} and entry["missing"] == []
    labels = sorted((out / "labels").glob("*.txt"))
    assert len(labels) == 18
    by_stem = {p.stem: p.read_text().split() for p in labels}
    assert by_stem[f"acme-north__press__{ng[0].seq}__top"] == []  # the false reject: background
    _cid, cx, cy, w, h = by_stem[f"acme-north__press__{ng[1].seq}__top"]
    assert [float(v) for v in (cx, cy, w, h)] == pytest.approx(
        [30 / 128, 40 / 96, 40 / 128, 40 / 96], abs=1e-5
    )  # redrawn box
    assert sum(1 for v in by_stem.values() if v) == 17  # every other part has the model's box
    assert sorted(p.stem for p in (out / "images").iterdir()) == [p.stem for p in labels]
    assert all(p.name.startswith("acme-north__press__") for p in labels)

    from training.datasets import import_dataset, split_dataset
    from training.train import train

    imported = import_dataset(out, tmp_path / "canon", fmt="yolo")
    # 18 parts of 6 distinct pictures (PNG from the capture archive, JPEG from the NG archive for the two
    # reviewed ones): identical pixels are reported as duplicates and kept once
    dup = imported.counts().get("duplicate_image", 0)
    assert imported.images_imported + dup == 18 and 6 <= imported.images_imported <= 8
    split_dataset(tmp_path / "canon", val=0.34, test=0.0, seed=0)
    run_dir = train(
        tmp_path / "canon",
        model="yolov8n.yaml",
        epochs=1,
        imgsz=64,
        batch=4,
        project=tmp_path / "runs",
        name="from-hub",
        extra={"val": False},
    )
    assert (run_dir / "weights" / "last.pt").is_file()

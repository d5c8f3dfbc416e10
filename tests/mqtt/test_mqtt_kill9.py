"""Three kill -9s of the real daemon (`edge-inspect run`: folder camera → real ONNX model → journal → mqtt
publisher) against a real mosquitto: an independent subscriber ends with every journaled result exactly
once (plain topic and Sparkplug DDATA), sees an NDEATH (the will) after each kill with the bdSeq of the
session it ends, the next NBIRTH with the next bdSeq, and unbroken seq numbers within each session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from mqtt_support import SITE, Recorder, check_seq_continuity, sparkplug_messages, wait_for

from edge_agent.journal import ResultJournal

REPO = Path(__file__).resolve().parents[2]
PARTS_PER_RUN = 150
KILLS = 3


def _site(root: Path, images: Path, model: Path, port: int) -> Path:
    line = {
        "name": "press",
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(images), "mode": "once"}}],
        "trigger": {"type": "free_run", "max_fps": 60},  # a cap, so each kill lands mid-stream
        "model": {"path": str(model), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
    }
    site = {
        "site": SITE,
        "lines": ["lines/*.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"enabled": False},
        "metrics": {"enabled": False},
        "reload": {"enabled": False},
        "publishers": [
            {
                "type": "mqtt",
                "port": port,
                "reconnect_initial_s": 0.1,
                "reconnect_max_s": 0.5,
                "keepalive_s": 5,
            }
        ],
    }
    (root / "lines").mkdir(parents=True)
    (root / "lines" / "press.yaml").write_text(yaml.safe_dump(line))
    (root / "agent.yaml").write_text(yaml.safe_dump(site))
    return root / "agent.yaml"


def _run_agent(site_file: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site_file), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
        )


def test_three_kill_9s_lose_and_duplicate_nothing(
    broker, tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path
):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted(synthetic_images.glob("*.png"))
    for i in range(PARTS_PER_RUN):  # "once": each run inspects them all again
        shutil.copy(sources[i % len(sources)], images / f"part_{i:04d}.png")
    site_file = _site(tmp_path / "site", images, tiny_detect_onnx, broker.port)
    journal_path = tmp_path / "site" / "data" / "journal.sqlite"
    log = tmp_path / "agent.log"
    result_topic = f"edge-inspect/{SITE}/+/result"
    recorder = Recorder(broker.port, [result_topic, f"edge-inspect/{SITE}/status", "spBv1.0/#"]).start()

    def plain_results() -> list[dict]:
        return [json.loads(m.payload) for m in recorder.snapshot(f"edge-inspect/{SITE}/press/result")]

    agents: list[subprocess.Popen] = []
    try:
        for kill in range(KILLS):
            agent = _run_agent(site_file, log)
            agents.append(agent)
            already = len(plain_results())
            wait_for(
                lambda a=already + 30 + 15 * kill, p=agent: len(plain_results()) >= a or p.poll() is not None,
                120,
                f"results of run {kill + 1} at the subscriber",
            )
            assert agent.poll() is None, log.read_text()[-3000:]
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(10)
            wait_for(
                lambda k=kill: (
                    sum(m[0] == "NDEATH" for m in sparkplug_messages(recorder, "edge-inspect")) == k + 1
                ),
                10,
                f"NDEATH after kill {kill + 1}",
            )

        journal = ResultJournal(journal_path)
        total = journal.last_seq() + PARTS_PER_RUN
        last = _run_agent(site_file, log)
        agents.append(last)
        wait_for(
            lambda: (
                (journal.last_seq() == total and len(plain_results()) >= total) or last.poll() is not None
            ),
            120,
            "the last run inspected and delivered",
        )
        assert last.poll() is None, log.read_text()[-3000:]
        last.send_signal(signal.SIGTERM)
        assert last.wait(30) == 0
        ids = [r.result_id for r in journal.iter_since(0)]
        journal.close()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
        recorder.stop()

    assert len(ids) == total
    plain_ids = [r["result_id"] for r in plain_results()]
    assert len(plain_ids) - len(set(plain_ids)) == 0, "duplicates on the plain topic"
    assert plain_ids == ids, "every journaled result once, in journal order"

    messages = sparkplug_messages(recorder, "edge-inspect")
    check_seq_continuity(messages)
    ddata_ids = [
        p.by_name()["Result/Result ID"].value
        for k, _d, p, _r in messages
        if k == "DDATA" and "Result/Result ID" in p.by_name()
    ]
    assert ddata_ids == ids, "every result once as Sparkplug DDATA, in order"
    # Each session: NBIRTH(bdSeq n) ... NDEATH(bdSeq n); the next NBIRTH has n + 1.
    lifecycle = [(k, p.by_name()["bdSeq"].value) for k, _d, p, _r in messages if k in ("NBIRTH", "NDEATH")]
    assert lifecycle == [(kind, n) for n in range(KILLS + 1) for kind in ("NBIRTH", "NDEATH")], lifecycle
    first_data = next(
        i for i, (k, _d, p, _r) in enumerate(messages) if k == "DDATA" and "Result/Result ID" in p.by_name()
    )
    dbirth = next(p.by_name() for k, _d, p, _r in reversed(messages[:first_data]) if k == "DBIRTH")
    assert {n for n in dbirth if n.startswith("Result/Defects/")}, (
        "the model's classes are metrics in the birth"
    )
    # The plain will: the agent's retained status says offline after each kill.
    online = [json.loads(m.payload)["online"] for m in recorder.snapshot(f"edge-inspect/{SITE}/status")]
    assert online == [True, False] * (KILLS + 1), online

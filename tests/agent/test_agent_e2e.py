"""End to end with real parts: folder source → real ONNX model → journal → real ZeroMQ subscriber;
metrics and health over real HTTP; several cameras per line; dropped frames of a live source counted."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from agent_helpers import folder_line, wait_until, write_site

from contract.zmq_wire import decode

ZMQ_FREE_PORTS = {
    "type": "zmq",
    "pub_endpoint": "tcp://127.0.0.1:*",
    "router_endpoint": None,
    "security": "plain",
}


def drop_in(src: Path, folder: Path) -> None:
    """Atomically add an image to a watched folder (as a camera PC writing files would)."""
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    shutil.copy(src, staging / src.name)
    os.replace(staging / src.name, folder / src.name)


def test_every_result_reaches_a_zeromq_subscriber(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    camera = {
        "name": "top",
        "source": {"type": "folder", "path": str(incoming), "mode": "watch", "poll_s": 0.02, "settle_s": 0},
    }
    site = write_site(
        tmp_path, [folder_line("l1", incoming, tiny_detect_onnx, cameras=[camera])], [ZMQ_FREE_PORTS]
    )
    agent = agent_factory(site)
    agent.start()
    publisher = agent.publishers[0]

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    sub.connect(publisher.pub_endpoint)
    sub.subscribe(b"insp.v1/test-site/l1/result")
    wait_until(lambda: publisher.stats()["subscriptions"] >= 1)  # no slow-joiner race: it is subscribed

    images = sorted(synthetic_images.glob("*.png"))
    for image in images:
        drop_in(image, incoming)

    received = []
    try:
        while len(received) < len(images):
            received.append(decode(sub.recv_multipart()))
    finally:
        sub.close(linger=0)

    journaled = agent.journal.since(0)
    assert len(journaled) == len(images) == 6
    results = [m.result() for m in received]
    # every journaled result, in order, with the journal's seq and the same body
    assert [r.seq for r in results] == [r.seq for r in journaled] == list(range(1, 7))
    assert [r.model_dump() for r in results] == [r.model_dump() for r in journaled]
    assert [Path(r.frames[0].source_ref).name for r in results] == [p.name for p in images]
    first = results[0]
    assert first.site == "test-site" and first.line == "l1" and first.recipe == "default"
    assert first.model.name == Path(tiny_detect_onnx).stem and first.model.sha256 and first.model.version
    assert {"capture", "preprocess", "inference", "postprocess", "rules", "total"} <= set(first.timings_ms)
    assert first.frames[0].width == 128 and first.frames[0].height == 96
    assert [m.header["prev_seq"] for m in received] == [None, 1, 2, 3, 4, 5]


def test_metrics_and_health_over_http(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    site = write_site(tmp_path, [folder_line("l1", synthetic_images, tiny_detect_onnx)])
    agent = agent_factory(site)
    agent.start()
    line = agent.lines["l1"]
    wait_until(lambda: line.state == "stopped")  # mode once: 6 images then done
    url = agent.metrics_server.url

    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    total = sum(
        float(row.rsplit(" ", 1)[1])
        for row in text.splitlines()
        if row.startswith('edge_inspect_results_total{line="l1"')
    )
    assert total == 6
    assert 'edge_inspect_stage_latency_seconds_count{line="l1",stage="inference"} 6.0' in text
    assert "edge_inspect_journal_last_seq 6.0" in text
    assert 'edge_inspect_camera_reconnects_total{camera="top",line="l1"} 0.0' in text
    assert 'edge_inspect_queue_depth{line="l1",queue="results"} 0.0' in text

    # all parts done, the line is "stopped": not healthy for a daemon that should be inspecting
    try:
        urllib.request.urlopen(url + "/healthz", timeout=5)
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        health = json.loads(exc.read())
    assert health["lines"]["l1"]["state"] == "stopped" and health["journal_last_seq"] == 6


def test_healthz_is_200_while_lines_run(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    line = folder_line("l1", synthetic_images, tiny_detect_onnx, trigger={"type": "free_run", "max_fps": 20})
    line["cameras"][0]["source"]["mode"] = "loop"
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    wait_until(lambda: agent.lines["l1"].counts["inspected"] >= 2)
    reply = urllib.request.urlopen(agent.metrics_server.url + "/healthz", timeout=5)
    health = json.loads(reply.read())
    assert reply.status == 200 and health["status"] == "ok" and health["lines"]["l1"]["state"] == "running"
    # where the cores go, per thread: the line's own threads by name (what `top -H` cannot tell apart)
    text = urllib.request.urlopen(agent.metrics_server.url + "/metrics", timeout=5).read().decode()
    cpu = {
        row.split('thread="', 1)[1].split('"', 1)[0]: float(row.rsplit(" ", 1)[1])
        for row in text.splitlines()
        if row.startswith("edge_inspect_thread_cpu_seconds_total{")
    }
    assert {"l1/top/capture", "l1/inspect", "l1/journal"} <= set(cpu), sorted(cpu)
    assert all(seconds >= 0 for seconds in cpu.values()) and sum(cpu.values()) > 0


def test_one_verdict_per_part_across_cameras(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    side = tmp_path / "side"
    side.mkdir()
    for p in sorted(synthetic_images.glob("*.png"))[:4]:
        cv2.imwrite(str(side / p.name), cv2.flip(cv2.imread(str(p)), 1))
    line = folder_line("two", synthetic_images, tiny_detect_onnx)
    line["cameras"].append({"name": "side", "source": {"type": "folder", "path": str(side), "mode": "once"}})
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    wait_until(lambda: agent.lines["two"].state == "stopped")
    results = agent.journal.since(0)
    # the part count follows the camera with fewer frames: 4 parts, each seen by both cameras
    assert len(results) == 4
    for r in results:
        assert [f.camera for f in r.frames] == ["top", "side"]
        assert Path(r.frames[0].source_ref).name == Path(r.frames[1].source_ref).name


def test_live_source_latest_frame_wins_and_drops_are_counted(tmp_path, tiny_detect_onnx, agent_factory):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 200, (128, 96))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    writer.release()
    line = folder_line(
        "live",
        tmp_path,
        tiny_detect_onnx,
        cameras=[
            {"name": "cam", "source": {"type": "video", "path": str(video), "loop": True, "realtime": True}}
        ],
        trigger={"type": "free_run", "max_fps": 10},
    )
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    runtime = agent.lines["live"]
    wait_until(lambda: runtime.counts["inspected"] >= 5)
    cam = runtime.status()["cameras"][0]
    # 200 fps in, at most 10 fps inspected: the newest frame wins, the others are counted, never queued
    assert cam["dropped"] > runtime.counts["inspected"]
    assert cam["frames"] >= cam["dropped"] + runtime.counts["inspected"] - 1
    assert runtime.status()["queues"]["results"] <= 1


def test_watched_folder_skips_old_files_and_survives_its_loss(tmp_path, synthetic_images):
    from edge_agent.sources.base import SourceError
    from edge_agent.sources.folder import FolderSource, FolderSourceConfig

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    images = sorted(synthetic_images.glob("*.png"))
    drop_in(images[0], incoming)  # there before the start: not ours
    config = FolderSourceConfig(path=incoming, mode="watch", poll_s=0.01, settle_s=0)
    source = FolderSource(config, "top")
    source.open()
    drop_in(images[1], incoming)
    assert Path(source.read().source_ref).name == images[1].name
    # the share disappears: the source reports it lost; when it is back, nothing is inspected twice
    staging = tmp_path / "elsewhere"
    incoming.rename(staging)
    with pytest.raises(SourceError, match="is not a folder"):
        source.open()
    staging.rename(incoming)
    source.open()
    drop_in(images[2], incoming)
    assert Path(source.read().source_ref).name == images[2].name
    source.close()

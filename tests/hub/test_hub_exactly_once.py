"""Exactly once into the hub across a hub `kill -9` and an agent `kill -9`, on SQLite and PostgreSQL.

Real processes: `edge-inspect hub serve` and `edge-inspect run` (folder camera → real ONNX model →
journal → acknowledged delivery to the hub)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from hub_support import free_port, start_agent, start_hub, stop, wait_for, write_site

from edge_agent.journal import ResultJournal
from hub.store import HubStore

PARTS_PER_RUN = 400


def test_hub_and_agent_kill_9_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, store_url: str, tiny_detect_onnx: Path, synthetic_images: Path
):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted(synthetic_images.glob("*.png"))
    for i in range(PARTS_PER_RUN):
        shutil.copy(sources[i % len(sources)], images / f"part_{i:04d}.png")
    port = free_port()
    site_file = write_site(tmp_path / "site", images, tiny_detect_onnx, f"tcp://127.0.0.1:{port}", max_fps=20)
    journal_path = tmp_path / "site" / "data" / "journal.sqlite"
    hub_data = tmp_path / "hub"
    procs = []
    store = HubStore.open(store_url)  # the test's own connection, to watch
    try:
        hub = start_hub(hub_data, store_url, port)
        procs.append(hub)
        agent = start_agent(site_file)
        procs.append(agent)
        wait_for(
            lambda: store.count() >= 20 or agent.poll() is not None or hub.poll() is not None,
            timeout=120,
            what="the first results in the hub",
        )
        assert agent.poll() is None and hub.poll() is None, (hub_data / "hub.log").read_text()

        os.kill(hub.pid, signal.SIGKILL)  # the hub dies between commits and acks, anywhere
        hub.wait(10)
        at_hub_kill = store.count()
        time.sleep(0.5)  # the agent goes on inspecting and journaling; delivery waits
        hub = start_hub(hub_data, store_url, port)
        procs.append(hub)
        wait_for(
            lambda: store.count() >= at_hub_kill + 20 or agent.poll() is not None,
            timeout=120,
            what="delivery to resume after the hub restart",
        )

        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        journal = ResultJournal(journal_path)
        at_agent_kill = journal.last_seq()
        assert at_agent_kill < PARTS_PER_RUN, "the agent kill must land in the middle of the stream"

        agent = start_agent(site_file)
        procs.append(agent)
        total = at_agent_kill + PARTS_PER_RUN
        wait_for(
            lambda: (
                (journal.last_seq() == total and store.count() == total)
                or agent.poll() is not None
                or hub.poll() is not None
            ),
            timeout=180,
            what="second agent run inspected and delivered",
        )
        assert agent.poll() is None and hub.poll() is None
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(30) == 0

        ids = [r.result_id for r in journal.iter_since(0)]
        journal.close()
        assert len(ids) == total == store.count()
        assert sorted(store.result_ids()) == sorted(ids)  # none lost, none twice
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_day")) == total  # roll-ups exact too
        assert int(store.db.scalar("SELECT SUM(parts) FROM rollup_minute")) == total
    finally:
        for p in procs:
            stop(p)
        store.close()

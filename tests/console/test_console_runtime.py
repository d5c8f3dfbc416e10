"""The console's model page says which runtime runs the line's model and how it was chosen, and lists the
card's accuracy-gate results (docs/openvino.md)."""

from __future__ import annotations

import html

import httpx
import pytest
from console_helpers import demo_site, wait_until

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")


def test_model_page_shows_the_runtime_and_the_gate(tmp_path) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    site = demo_site(tmp_path)
    line_file = tmp_path / "lines" / "demo.yaml"
    text = line_file.read_text()
    runtime = (
        "  threads: 1\n  backend: openvino\n  precision: bf16\n  force: true\n"
        f"  cache_dir: {tmp_path / 'cache'}\n"
    )
    assert text.count("  threads: 1\n") == 1
    line_file.write_text(text.replace("  threads: 1\n", runtime))
    agent = Agent(load_agent_config(site))
    try:
        agent.start()
        wait_until(lambda: agent.journal.last_seq() >= 2, timeout=60)
        with httpx.Client(base_url=agent.console.url, timeout=30) as c:
            page = html.unescape(c.get("/model/demo").text)
    finally:
        agent.stop()
    assert "<dt>Runtime</dt>" in page and "openvino:CPU:bf16 <small>(forced:" in page
    assert "Runtimes (accuracy gate)" in page  # the shipped card's gate results
    assert "<td>openvino:CPU:bf16</td><td>refused</td>" in page

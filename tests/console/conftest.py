"""Fixtures of the console tests: a real agent running the demo line with its console."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # console_helpers

from console_helpers import demo_site, wait_until


@pytest.fixture
def console_agent(tmp_path):
    """Start an in-process agent on the demo site with `console` options; stopped at the end."""
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    agents = []

    def start(console: dict | None = None, **site_kwargs):
        site = demo_site(tmp_path / f"site{len(agents)}", console=console, **site_kwargs)
        agent = Agent(load_agent_config(site))
        agents.append(agent)
        agent.start()
        wait_until(lambda: agent.journal.last_seq() >= 3, timeout=60)
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """A headless Chromium (Debian's, console_browser.py) shared by one test module's tests."""
    from console_browser import start_browser

    d = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    d.set_page_load_timeout(60)
    yield d
    d.quit()

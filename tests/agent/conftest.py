"""Fixtures of the agent tests (the shared model/image fixtures live in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # agent_helpers


@pytest.fixture
def agent_factory():
    """Build agents from a site file and make sure every one is stopped at the end of the test."""
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    agents = []

    def make(site_file: Path, **kwargs) -> Agent:
        agent = Agent(load_agent_config(site_file), **kwargs)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()

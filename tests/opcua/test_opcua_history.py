"""Issue 28 item 21: a client that was away catches up on ResultReadyEvents with HistoryRead, no polling.

Real asyncua server and client on 127.0.0.1. The history is the journal: results that were never
published to anybody (journaled while the client was away, or before the server listened after an
agent restart) come back as events, in time order, paged with continuation points.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.common.events import Event, get_filter_from_event_type

from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from edge_agent.publishers.opcua_publisher import OpcUaPublisher
from tests.agent.agent_helpers import folder_line, wait_until, write_site
from tests.opcua.conftest import RunningServer, demo_profile_server
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import namespaces, vision_node
from tests.opcua.test_opcua_states import Events


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("history")
    with demo_profile_server(root, hist1="triggered", hist2="triggered") as running:
        yield running


async def result_ready_filter(client: Client) -> ua.EventFilter:
    ns = await namespaces(client)
    etype = await client.nodes.base_event_type.get_child(f"{ns.mv}:ResultReadyEventType")
    return await get_filter_from_event_type([etype])


async def read_result_events(
    client: Client, node_id: ua.NodeId, since: datetime, until: datetime, evfilter: ua.EventFilter
) -> list[Event]:
    """docs/opcua.md, "Catching up after a disconnect": HistoryRead of events, continuation points
    followed until the server has no more."""
    details = ua.ReadEventDetails(StartTime=since, EndTime=until, NumValuesPerNode=0, Filter=evfilter)
    events: list[Event] = []
    point = None
    while True:
        params = ua.HistoryReadParameters(
            HistoryReadDetails=details,
            ReleaseContinuationPoints=False,  # asyncua's default is True: "free them, send nothing"
            NodesToRead=[ua.HistoryReadValueId(NodeId=node_id, ContinuationPoint=point)],
        )
        (result,) = await client.uaclient.history_read(params)
        result.StatusCode.check()
        select = evfilter.SelectClauses
        events += [Event.from_event_fields(select, e.EventFields) for e in result.HistoryData.Events]
        point = result.ContinuationPoint
        if not point:
            return events


async def test_history_read_returns_results_nobody_was_told_of(server):
    base = datetime.now(timezone.utc) - timedelta(minutes=5)
    stored = []
    for i in range(9):  # journaled, never submitted to the server: no live event was ever sent
        line = "hist1" if i % 3 else "hist2"
        result = make_result(line, part_id=f"H-{i}" + ("X" if i == 4 else ""), meas_id=f"M-{i}")
        result = result.model_copy(update={"timestamp": base + timedelta(seconds=i)})
        stored.append(server.journal.append(result))
    async with Client(server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        evfilter = await result_ready_filter(client)
        until = datetime.now(timezone.utc)
        events = await read_result_events(client, client.nodes.server.nodeid, base, until, evfilter)
        assert [e.ResultId.Id for e in events] == [r.result_id for r in stored]  # time order, every line
        ng = events[4]
        assert (ng.PartId.Id, ng.MeasId.Id, ng.SourceName, ng.Severity) == ("H-4X", "M-4", "hist1", 500)
        assert ng.Time == stored[4].timestamp and ng.CreationTime == stored[4].timestamp
        assert ng.ResultContent[0].Value.Seq == stored[4].seq
        assert ng.Message.Text == f"NG part H-4X (seq {stored[4].seq})"

        # one line: its VisionSystem's history; both notifiers say so
        system = await vision_node(client, "hist2")
        only = await read_result_events(client, system.nodeid, base, until, evfilter)
        assert [e.ResultId.Id for e in only] == [r.result_id for r in stored if r.line == "hist2"]
        for node in (system, client.nodes.server):
            assert ua.EventNotifier.HistoryRead in await node.read_event_notifier()

        # paged: at most max_results_per_call per answer, continuation points carry on exactly
        config = server.server.vision.config
        config.max_results_per_call = 2
        try:
            paged = await read_result_events(client, client.nodes.server.nodeid, base, until, evfilter)
        finally:
            config.max_results_per_call = 1000
        assert [e.ResultId.Id for e in paged] == [r.result_id for r in stored]

        # StartTime after EndTime: newest first; NumValuesPerNode limits
        ns = await namespaces(client)
        result_ready = ua.NodeId(1024, ns.mv)  # ResultReadyEventType; asyncua builds the filter itself
        newest = await client.nodes.server.read_event_history(until, base, numvalues=3, evtypes=result_ready)
        assert [e.ResultId.Id for e in newest] == [r.result_id for r in reversed(stored)][:3]

        # a WhereClause for another event type matches none of them
        other = await client.nodes.base_event_type.get_child(
            ["0:TransitionEventType", f"{ns.mv}:StateChangedEventType"]
        )
        none = await read_result_events(
            client, client.nodes.server.nodeid, base, until, await get_filter_from_event_type([other])
        )
        assert none == []


def free_port() -> int:
    """A port free now, for an endpoint the restarted agent binds again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_run_site(root, images, model, opcua: dict) -> Path:
    """A site with one free-run line looping over `images` (25 parts/s) and the `opcua` publisher."""
    loop = {"type": "folder", "path": str(images), "mode": "loop"}
    trigger = {"type": "free_run", "max_fps": 25}
    line = folder_line("cell1", images, model, trigger=trigger, cameras=[{"name": "top", "source": loop}])
    return write_site(root, [line], publishers=[{"type": "opcua", "security": "none", **opcua}])


async def test_a_client_catches_up_on_an_agent_restart(tmp_path, tiny_detect_onnx, synthetic_images):
    """Kill-and-restart as an MES sees it: events before the stop, then the agent restarts; the results
    of its first seconds (journaled while the server was still starting, and while the client was
    reconnecting) are delivered by HistoryRead since the last event seen, the rest live."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/ei/"
    site = free_run_site(tmp_path, synthetic_images, tiny_detect_onnx, {"endpoint": url})

    async def subscribe(client: Client) -> Events:
        ns = await namespaces(client)
        etype = await client.nodes.base_event_type.get_child(f"{ns.mv}:ResultReadyEventType")
        live = Events()
        sub = await client.create_subscription(10, live)
        await sub.subscribe_events(client.nodes.server, etype)
        return live

    first = Agent(load_agent_config(site))
    await asyncio.to_thread(first.start)
    try:
        await asyncio.to_thread(_publisher(first).server.wait_started, 60)
        async with Client(url, timeout=30) as client:
            await client.load_data_type_definitions()
            live = await subscribe(client)
            while len(live.items) < 3:
                live.changed.clear()
                await asyncio.wait_for(live.changed.wait(), 30)
            last = live.items[-1]
    finally:
        await asyncio.to_thread(first.stop)
    last_seq = last.ResultContent[0].Value.Seq

    second = Agent(load_agent_config(site))
    await asyncio.to_thread(second.start)  # lines run at once; the server starts in the background
    try:
        await asyncio.to_thread(_publisher(second).server.wait_started, 60)
        at_listen = second.journal.last_seq()
        await asyncio.sleep(1.0)  # the client takes its time to come back
        async with Client(url, timeout=30) as client:
            await client.load_data_type_definitions()
            live = await subscribe(client)  # first live, then history: nothing falls between
            evfilter = await result_ready_filter(client)
            since = last.Time - timedelta(seconds=10)  # margin: dedupe by ResultId
            history = await read_result_events(
                client, client.nodes.server.nodeid, since, datetime.now(timezone.utc), evfilter
            )
            covered = second.journal.last_seq()
            while not any(e.ResultContent[0].Value.Seq >= covered for e in [*history, *live.items]):
                live.changed.clear()
                await asyncio.wait_for(live.changed.wait(), 30)
        expected = [r for r in second.journal.since(last_seq, limit=100_000) if r.seq <= covered]
    finally:
        await asyncio.to_thread(second.stop)
    got = {e.ResultId.Id for e in [*history, *live.items]}
    assert at_listen > last_seq  # the restarted line journaled before its server listened
    assert len(expected) >= at_listen - last_seq
    assert [r.result_id for r in expected if r.result_id not in got] == []
    restarted = [e for e in history if e.ResultContent[0].Value.Seq > last_seq]
    assert {e.ResultContent[0].Value.Seq for e in restarted} >= set(range(last_seq + 1, at_listen + 1))


def _publisher(agent: Agent) -> OpcUaPublisher:
    return next(p for p in agent.publishers if isinstance(p, OpcUaPublisher))


async def test_hold_lines_until_started(tmp_path, tiny_detect_onnx, synthetic_images, caplog):
    """`hold_lines_until_started: true`: the agent starts its lines once the server listens, so the first
    result of a start is made after it (without the option the line runs while the server starts)."""
    opcua = {"endpoint": "opc.tcp://127.0.0.1:0/ei/", "hold_lines_until_started": True}
    site = free_run_site(tmp_path, synthetic_images, tiny_detect_onnx, opcua)
    caplog.set_level("INFO", logger="opcua.server")
    agent = Agent(load_agent_config(site))
    await asyncio.to_thread(agent.start)
    try:
        assert _publisher(agent).server.started  # agent.start() returned with the server listening
        serving = next(r for r in caplog.records if "opcua: serving" in r.getMessage())
        await asyncio.to_thread(wait_until, lambda: agent.journal.last_seq())
        first = agent.journal.get(1)
    finally:
        await asyncio.to_thread(agent.stop)
    assert first is not None and first.timestamp.timestamp() > serving.created

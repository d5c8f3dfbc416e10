"""OPC UA server throughput: results/s with one subscribed client receiving every event and change.

The server runs as in the agent (`opcua.server.ServerThread`, its own thread and loop); this process
feeds it journaled results at fixed rates, and a client in a separate process subscribes to
ResultReadyEvent on the Server object and to LatestResult data changes (queue size 10000, sampling
interval 0, so no change is coalesced). For each rate it prints what was sent, what the client
received (distinct results, so a loss shows), and the CPU of the server thread as % of one core.
The last row sends as fast as it can and reports the sustained rate the client confirmed.

    .venv/bin/python bench/opcua.py                     # rates 50, 200, 400 for 10 s each + max
    .venv/bin/python bench/opcua.py --rates 50 --seconds 20 --security production
    .venv/bin/python bench/opcua.py --start 3          # agent start -> first result, with/without OPC UA
    .venv/bin/python bench/opcua.py --server-start 5   # agent start -> first result / OPC UA listening

Goal (issue 6): >= 200 results/s per agent with no loss; < 30 % of one core at 50/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MV = "http://opcfoundation.org/UA/MachineVision"
APP = "urn:edge-inspect:opcua"


# -- client process ---------------------------------------------------------------------------------
async def run_client(url: str, security: str, pki: str | None) -> None:
    """Subscribe, count distinct result seqs from events and from LatestResult; answer 'report' lines."""
    import logging

    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    logging.basicConfig(level=getattr(logging, os.environ.get("BENCH_CLIENT_LOG", "CRITICAL")))

    client = Client(url, timeout=30)
    if security == "production":
        assert pki is not None
        client.application_uri = "urn:edge-inspect:bench-client"
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            f"{pki}/client/cert.der",
            f"{pki}/client/key.pem",
            server_certificate=f"{pki}/server/own/cert.der",
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        client.set_user("bench")
        client.set_password("bench-password")
    event_seqs: set[int] = set()
    change_seqs: set[int] = set()
    counts = {"events": 0, "changes": 0}

    class Handler:
        def event_notification(self, event):
            counts["events"] += 1
            event_seqs.add(event.ResultContent[0].Value.Seq)

        def datachange_notification(self, node, value, data):
            counts["changes"] += 1
            seq = value.ResultContent[0].Value.Seq if value.ResultContent else 0  # [] before the first
            if seq:
                change_seqs.add(seq)

    async with client:
        await client.load_data_type_definitions()
        mv, app = await client.get_namespace_index(MV), await client.get_namespace_index(APP)
        etype = await client.nodes.base_event_type.get_child(f"{mv}:ResultReadyEventType")
        latest = await client.nodes.objects.get_child(
            [f"{app}:bench", f"{mv}:ResultManagement", f"{mv}:Results", f"{app}:LatestResult"]
        )
        sub = await client.create_subscription(20, Handler())
        await sub.subscribe_events(client.nodes.server, etype, queuesize=10000)
        await sub.subscribe_data_change(latest, queuesize=10000, sampling_interval=0)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                await sub.delete()
                return
            print(
                json.dumps(
                    {
                        **counts,
                        "event_seqs": len(event_seqs),
                        "change_seqs": len(change_seqs),
                        "max_seq": max(event_seqs, default=0),
                    }
                ),
                flush=True,
            )


# -- bench process ----------------------------------------------------------------------------------
class BenchLine:
    """The minimal LineBackend: results come from the bench, not from triggers."""

    name, state, mode = "bench", "running", "free_run"
    recipes, active_recipe, model_version = ["default"], "default", "1"

    def set_recipe(self, name: str) -> None:
        raise KeyError(name)

    def trigger(self, *args, **kwargs):
        raise RuntimeError("the bench line is not triggered")

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def add_listener(self, callback) -> None: ...

    def configuration(self):
        from datetime import datetime, timezone

        from opcua.backend import LineConfiguration, configuration_id

        return LineConfiguration(
            configuration_id("bench", "bench-model"),
            "1",
            "00" * 32,
            "bench line",
            datetime(2026, 1, 1, tzinfo=timezone.utc),
        )


def _agent_bench(prefix: str) -> tuple[Any, Path, Path, Path]:
    """bench/agent.py as a module, a temporary folder, the sample images copied into it, the demo model."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("bench_agent", REPO / "bench" / "agent.py")
    agent_bench = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(agent_bench)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    frames = tmp / "frames"
    frames.mkdir()
    for image in sorted((REPO / "images").glob("*.jpg")):
        shutil.copy(image, frames / image.name)
    return agent_bench, tmp, frames, REPO / "models" / "demo" / "model.onnx"


def start_bench(runs: int) -> None:
    """`edge-inspect run` of a one-line site (the demo model on its sample images), from process start to
    the first journaled result, with the zmq publisher only and with an `opcua` publisher added (the
    goal: <= 2 s either way; the OPC UA server starts in the background)."""
    import statistics

    import yaml

    agent_bench, tmp, frames, model = _agent_bench("opcua-start-")
    results: dict[str, list[float]] = {"zmq only": [], "zmq + opcua": []}
    for i in range(runs):
        for label in results:
            root = tmp / f"{label.replace(' ', '')}-{i}"
            site = agent_bench.write_config(root, frames, model, agent_bench.free_port(), None)
            if "opcua" in label:
                doc = yaml.safe_load(site.read_text())
                doc["publishers"].append(
                    {"type": "opcua", "security": "none", "endpoint": "opc.tcp://127.0.0.1:0/edge-inspect/"}
                )
                site.write_text(yaml.safe_dump(doc, sort_keys=False))
            journal = root / "journal.sqlite"
            t0 = time.perf_counter()
            proc = agent_bench.start_agent(site)
            try:
                while agent_bench.journal_count(journal) == 0:
                    if proc.poll() is not None:
                        raise SystemExit(f"agent exited: {proc.stderr.read() if proc.stderr else ''}")
                    time.sleep(0.005)
                results[label].append(time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.wait(60)
    for label, times in results.items():
        print(
            f"start -> first result, {label:12s} median {statistics.median(times):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in times)})"
        )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")


def server_start_bench(runs: int, hold: bool) -> None:
    """`edge-inspect run` of a one-line free-run site at full speed (the demo model on its sample images)
    with an `opcua` publisher: from process start to the first journaled result and to the OPC UA server
    accepting connections, and how many results were journaled before it did (issue 28 item 21)."""
    import socket
    import statistics

    import yaml

    agent_bench, tmp, frames, model = _agent_bench("opcua-server-start-")
    first, listening, before = [], [], []
    for i in range(runs):
        root = tmp / f"run-{i}"
        site = agent_bench.write_config(root, frames, model, agent_bench.free_port(), None)
        port = agent_bench.free_port()
        doc = yaml.safe_load(site.read_text())
        entry = {"type": "opcua", "security": "none", "endpoint": f"opc.tcp://127.0.0.1:{port}/edge-inspect/"}
        if hold:
            entry["hold_lines_until_started"] = True
        doc["publishers"].append(entry)
        site.write_text(yaml.safe_dump(doc, sort_keys=False))
        journal = root / "journal.sqlite"
        t0 = time.perf_counter()
        proc = agent_bench.start_agent(site)
        t_first = t_listen = None
        try:
            while t_first is None or t_listen is None:
                if proc.poll() is not None:
                    raise SystemExit(f"agent exited: {proc.stderr.read() if proc.stderr else ''}")
                if t_first is None and agent_bench.journal_count(journal) > 0:
                    t_first = time.perf_counter() - t0
                if t_listen is None:
                    with socket.socket() as probe:
                        probe.settimeout(0.2)
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            t_listen = time.perf_counter() - t0
                            before.append(agent_bench.journal_count(journal))
                time.sleep(0.005)
            first.append(t_first)
            listening.append(t_listen)
        finally:
            proc.terminate()
            proc.wait(60)
    for label, times in (("first result", first), ("OPC UA listening", listening)):
        print(
            f"start -> {label:16s} median {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, max {max(times):.2f}; {', '.join(f'{t:.2f}' for t in times)})"
        )
    print(f"results journaled before the server listened: {', '.join(str(n) for n in before)}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")


def thread_cpu_s(native_id: int) -> float:
    import psutil

    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    raise RuntimeError("server thread not found")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="50,200,400", help="results/s to sustain, comma separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each fixed rate")
    parser.add_argument("--max-count", type=int, default=3000, help="results for the as-fast-as-possible row")
    parser.add_argument("--security", choices=["none", "production"], default="none")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument(
        "--start",
        type=int,
        metavar="N",
        help="instead: agent start -> first result, N runs with and without OPC UA",
    )
    parser.add_argument(
        "--server-start",
        type=int,
        metavar="N",
        help="instead: agent start -> first result and -> OPC UA listening, N runs of a free-run line",
    )
    parser.add_argument("--hold", action="store_true", help="with --server-start: hold_lines_until_started")
    args = parser.parse_args()
    if args.server_start:
        server_start_bench(args.server_start, args.hold)
        return
    if args.client:
        asyncio.run(run_client(args.client, args.security, args.pki))
        return
    if args.start:
        start_bench(args.start)
        return

    import logging

    import psutil

    from contract import Defect, InspectionResult, ModelInfo
    from contract.passwords import hash_password
    from edge_agent.journal import ResultJournal
    from edge_agent.publishers.opcua_publisher import JournalResultStore
    from opcua.config import OpcUaServerConfig, UserConfig
    from opcua.thread import ServerThread

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(getattr(logging, os.environ.get("BENCH_SERVER_LOG", "CRITICAL")))
    tmp = Path(tempfile.mkdtemp(prefix="opcua-bench-"))
    journal = ResultJournal(tmp / "journal.sqlite")
    config_kwargs: dict = {"security": "none"}
    if args.security == "production":
        from opcua.security import make_certificate, trust_certificate

        make_certificate(
            tmp / "server/own/cert.der",
            tmp / "server/own/key.pem",
            application_uri="urn:edge-inspect:opcua:server",
            hostnames=["127.0.0.1", "localhost"],
        )
        make_certificate(
            tmp / "client/cert.der",
            tmp / "client/key.pem",
            application_uri="urn:edge-inspect:bench-client",
            hostnames=["localhost"],
        )
        trust_certificate(tmp / "client/cert.der", tmp / "server/trusted")
        config_kwargs = {
            "security": "production",
            "pki_dir": tmp / "server",
            "policies": ["Basic256Sha256"],
            "users": [UserConfig(name="bench", role="viewer", password_hash=hash_password("bench-password"))],
        }
    config = OpcUaServerConfig(endpoint="opc.tcp://127.0.0.1:0/edge-inspect/", **config_kwargs)
    server = ServerThread(config, {"bench": BenchLine()}, JournalResultStore(journal))
    server.start()

    client = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--client",
            server.endpoint_url,
            "--security",
            args.security,
            "--pki",
            str(tmp),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline().strip() == "ready", "bench client failed to start"
    client_ps = psutil.Process(client.pid)

    def report() -> dict:
        client.stdin.write("report\n")
        client.stdin.flush()
        return json.loads(client.stdout.readline())

    def make_bodies(n: int) -> list[InspectionResult]:
        results = []
        for i in range(n):
            ng = i % 10 == 0
            results.append(
                InspectionResult(
                    site="bench",
                    line="bench",
                    part_id=f"B{i:07d}",
                    recipe="default",
                    verdict="NG" if ng else "OK",
                    reasons=["scratch"] if ng else [],
                    model=ModelInfo(name="bench", version="1"),
                    defects=[
                        Defect(
                            camera="top",
                            class_name="scratch",
                            class_id=1,
                            confidence=0.9,
                            xyxy=[1.0, 2.0, 30.0, 40.0],
                            area_px=1036.0,
                        )
                    ]
                    if ng
                    else [],
                    timings_ms={"capture": 1.0, "inference": 5.0, "total": 8.0},
                )
            )
        return journal.append_many(results)

    server_tid = server._thread.native_id  # type: ignore[union-attr]
    cpu = psutil.cpu_count(logical=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpu} logical cores, "
        f"Python {platform.python_version()}, security={args.security}, pid {os.getpid()}"
    )
    print(
        f"{'target/s':>9} {'sent':>6} {'events':>7} {'changes':>8} {'lost':>5} {'achieved/s':>10} "
        f"{'server CPU % core':>17} {'client CPU % core':>17}"
    )

    def run(rate: float | None, count: int) -> None:
        bodies = make_bodies(count)
        before = report()
        cpu0, ccpu0 = thread_cpu_s(server_tid), sum(client_ps.cpu_times()[:2])
        t0 = time.perf_counter()
        for i, body in enumerate(bodies):
            if rate is not None:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            server.submit_result(body)
        t_sent = time.perf_counter()
        deadline = t_sent + 60
        while True:
            now = report()
            got_events = now["event_seqs"] - before["event_seqs"]
            got_changes = now["change_seqs"] - before["change_seqs"]
            if (got_events >= count and got_changes >= count) or time.perf_counter() > deadline:
                break
            time.sleep(0.05)
        t_done = time.perf_counter()
        cpu1, ccpu1 = thread_cpu_s(server_tid), sum(client_ps.cpu_times()[:2])
        window = t_done - t0
        lost = count - min(got_events, got_changes)
        achieved = min(got_events, got_changes) / window
        label = f"{rate:.0f}" if rate is not None else "max"
        print(
            f"{label:>9} {count:>6} {got_events:>7} {got_changes:>8} {lost:>5} {achieved:>10.1f} "
            f"{100 * (cpu1 - cpu0) / window:>17.1f} {100 * (ccpu1 - ccpu0) / window:>17.1f}",
            flush=True,
        )

    for rate in [float(r) for r in args.rates.split(",") if r]:
        run(rate, int(rate * args.seconds))
    run(None, args.max_count)

    stats = server.stats()
    print(
        f"server stats: published={stats['published']:.0f} errors={stats['publish_errors']:.0f} "
        f"backlog={stats['backlog']:.0f}"
    )
    client.stdin.write("quit\n")
    client.stdin.flush()
    client.wait(10)
    server.stop()


if __name__ == "__main__":
    main()

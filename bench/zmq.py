"""Benchmark of the ZeroMQ outputs: live PUB stream, acknowledged MES delivery, slow-subscriber isolation.

    .venv/bin/python bench/zmq.py                   # everything (trains a tiny model once for part 3)
    .venv/bin/python bench/zmq.py --model m.onnx    # part 3 with your model
    .venv/bin/python bench/zmq.py --skip-inference  # parts 1 and 2 only

1. PUB: results/s from `notify()` to a subscriber in another process (JSON and msgpack). Goal >= 20,000/s.
2. Acknowledged delivery: results/s from the journal to `edge-inspect mes listen` (another process,
   storing with synchronous=FULL before each ack), for both journal durability settings; once draining a
   backlog, once live (journal append + notify while delivering). Goal >= 2,000/s.
3. Inference rate of a real ONNX model with the publishers fed after each journal commit, without and
   with a subscriber that never reads: the ratio shows a slow subscriber does not slow inference.

Prints measured numbers and the machine they ran on; nothing is asserted.
"""

from __future__ import annotations

import os
import sys

# This file is called zmq.py: keep its own folder off sys.path, or `import zmq` would import itself.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repo

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import zmq  # noqa: E402

from contract.result import Defect, FrameInfo, InspectionResult, ModelInfo  # noqa: E402
from edge_agent.journal import ResultJournal  # noqa: E402
from edge_agent.publishers.base import PublisherContext  # noqa: E402
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher  # noqa: E402
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig  # noqa: E402

REPO = Path(_HERE).parent

_SUBSCRIBER = r"""
import json, sys, time, zmq
endpoint, expected = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.rcvhwm = 0
sub.subscribe(b"insp.v1/")
sub.connect(endpoint)
print("ready", flush=True)
count, first, last = 0, None, None
while count < expected and sub.poll(5000):
    frames = sub.recv_multipart()
    if frames[0].endswith(b"/result"):
        count += 1
        last = time.monotonic()
        first = first or last
print(json.dumps({"count": count, "first": first, "last": last, "cpu": time.process_time()}), flush=True)
"""


def sample_result(i: int, seq: int | None = None) -> InspectionResult:
    """A typical body: two cameras, one defect on NG parts (about 700 bytes of JSON)."""
    ng = i % 10 == 0
    return InspectionResult(
        seq=seq, site="plant-a", line=f"line-{i % 2 + 1}", part_id=f"P-{i:08d}", recipe="default",
        verdict="NG" if ng else "OK", reasons=["scratch area > 20 mm2"] if ng else [],
        defects=[Defect(camera="top", class_name="scratch", class_id=0, confidence=0.87,
                        xyxy=[101.0, 52.5, 180.0, 97.0], area_px=3555.0, area_mm2=24.1)] if ng else [],
        frames=[FrameInfo(camera=c, width=2448, height=2048) for c in ("top", "side")],
        model=ModelInfo(name="pcb-defects", version="3"), timings_ms={"infer": 8.1, "total": 12.4},
    )


def machine() -> str:
    import psutil

    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} logical CPUs "
            f"(load avg {os.getloadavg()[0]:.1f}), Python {platform.python_version()}, "
            f"libzmq {zmq.zmq_version()}")


# -- 1. PUB -----------------------------------------------------------------------------------------
def bench_pub(n: int, encoding: str, workdir: Path) -> None:
    journal = ResultJournal(workdir / f"pub-{encoding}.sqlite")
    context = PublisherContext(site="plant-a", boot_id=uuid.uuid4().hex, journal=journal)
    config = ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*", router_endpoint=None, security="plain",
                                encoding=encoding, send_hwm=n, queue_size=n)
    publisher = ZmqPublisher(config, context)
    publisher.start(journal)
    results = [sample_result(i, seq=i + 1) for i in range(n)]  # journaling is measured in part 2
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, publisher.pub_endpoint, str(n)],
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    sub.stdout.readline()  # ready
    while publisher.stats()["subscriptions"] < 1:
        time.sleep(0.01)
    cpu0 = time.process_time()
    start = time.monotonic()
    for result in results:
        publisher.notify(result)
    notify_s = time.monotonic() - start
    report = json.loads(sub.stdout.readline())
    sub.wait()
    while publisher.stats()["backlog"]:
        time.sleep(0.001)
    agent_cpu_us = (time.process_time() - cpu0) / n * 1e6  # notify + encode + send, all threads
    stats = publisher.stats()
    publisher.stop()
    journal.close()
    delivered_s = (report["last"] or start) - start
    print(f"  PUB {encoding:7s}: {n} results, notify() {n / notify_s:,.0f}/s "
          f"({notify_s / n * 1e6:.1f} us each); received by the subscriber process "
          f"{report['count']:,} at {report['count'] / delivered_s:,.0f} results/s; "
          f"dropped {stats['dropped']:.0f}")
    print(f"           CPU per result: agent side {agent_cpu_us:.1f} us "
          f"(= {1e6 / agent_cpu_us:,.0f}/s per core), "
          f"subscriber {report['cpu'] / max(report['count'], 1) * 1e6:.1f} us")


# -- 2. acknowledged delivery -------------------------------------------------------------------------
def _start_listener(workdir: Path, tag: str) -> tuple[subprocess.Popen, str]:
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    listener = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "mes", "listen", "--plain", "--quiet",
         "--durability", "full", "--endpoint", endpoint, "--store", str(workdir / f"mes-{tag}.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    assert listener.stdout is not None
    listener.stdout.readline()  # "listening on ..."
    return listener, endpoint


def bench_acked(n: int, durability: str, window: int, workdir: Path) -> None:
    journal = ResultJournal(workdir / f"acked-{durability}.sqlite", durability=durability)  # type: ignore[arg-type]
    t0 = time.monotonic()
    for i in range(n):
        journal.append(sample_result(i))
    append_rate = n / (time.monotonic() - t0)

    listener, endpoint = _start_listener(workdir, f"{durability}-backlog")
    context = PublisherContext(site="plant-a", boot_id=uuid.uuid4().hex, journal=journal)
    delivery = MesDeliveryPublisher(MesDeliveryConfig(endpoint=endpoint, security="plain", window=window),
                                    context)
    t0 = time.monotonic()
    delivery.start(journal)
    while delivery.cursor < n:
        time.sleep(0.005)
    drain_rate = n / (time.monotonic() - t0)
    delivery.stop()
    listener.terminate()
    listener.wait()

    # Live: the journal grows while delivery runs (the agent's real situation).
    listener, endpoint = _start_listener(workdir, f"{durability}-live")
    delivery = MesDeliveryPublisher(
        MesDeliveryConfig(name="mes-live", endpoint=endpoint, security="plain", window=window), context)
    delivery.start(journal)
    while delivery.cursor < n:  # let it catch up with the backlog first
        time.sleep(0.005)
    t0 = time.monotonic()
    for i in range(n):
        delivery.notify(journal.append(sample_result(i)))
    while delivery.cursor < 2 * n:
        time.sleep(0.005)
    live_rate = n / (time.monotonic() - t0)
    resent = delivery.stats()["resent"]
    delivery.stop()
    listener.terminate()
    listener.wait()
    journal.close()
    print(f"  acked, journal synchronous={durability.upper():6s} (receiver FULL, window {window}): "
          f"journal append {append_rate:,.0f}/s; backlog drained {drain_rate:,.0f} results/s; "
          f"live append+deliver {live_rate:,.0f} results/s; resent {resent}")


# -- 3. slow subscriber vs inference ------------------------------------------------------------------
def bench_isolation(model_path: Path, frames: int, rounds: int, workdir: Path) -> None:
    """Alternate runs without and with a stalled subscriber (load on a shared machine drifts)."""
    import statistics

    import numpy as np

    from vision import Model

    model = Model(model_path)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for _ in range(20):
        model.predict(image)  # warm-up

    def run(tag: str, stalled: bool) -> tuple[float, float]:
        journal = ResultJournal(workdir / f"iso-{tag}-{uuid.uuid4().hex[:6]}.sqlite")
        context = PublisherContext(site="plant-a", boot_id=uuid.uuid4().hex, journal=journal)
        publisher = ZmqPublisher(ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*", router_endpoint=None,
                                                    security="plain", send_hwm=1), context)
        publisher.start(journal)
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm = 1
        sub.rcvbuf = 4096  # small kernel buffer: the stall reaches the publisher quickly
        if stalled:
            sub.subscribe(b"")
            sub.connect(publisher.pub_endpoint)
            while publisher.stats()["subscriptions"] < 1:
                time.sleep(0.01)
        t0 = time.monotonic()
        for i in range(frames):
            model.predict(image)
            publisher.notify(journal.append(sample_result(i)))
        rate = frames / (time.monotonic() - t0)
        while publisher.stats()["backlog"]:
            time.sleep(0.01)
        dropped = publisher.stats()["dropped"]
        sub.close(0)
        ctx.term()
        publisher.stop()
        journal.close()
        return rate, dropped

    free, slow, drops = [], [], []
    for _ in range(rounds):
        free.append(run("free", stalled=False)[0])
        rate, dropped = run("stalled", stalled=True)
        slow.append(rate)
        drops.append(dropped)
    print(f"  model {model_path}, 640x480 input, {frames} inspections per run, {rounds} rounds alternated")
    print(f"  no subscriber              : median {statistics.median(free):7.1f} inspections/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in free)})")
    print(f"  subscriber that never reads: median {statistics.median(slow):7.1f} inspections/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in slow)}); results dropped on the PUB side per run: "
          f"{', '.join(f'{d:.0f}' for d in drops)}")
    ratio = statistics.median(slow) / statistics.median(free)
    print(f"  ratio stalled / no subscriber (medians): {ratio:.3f}")


def tiny_model_path(workdir: Path) -> Path:
    cache = Path(os.environ.get("EDGE_INSPECT_TEST_CACHE", workdir / "models"))
    from tests.model_factory import tiny_model

    return tiny_model("yolov8n", cache)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="results through PUB")
    parser.add_argument("--acked-n", type=int, default=10_000, help="results through acknowledged delivery")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--frames", type=int, default=1500, help="inspections per isolation run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated pairs of isolation runs")
    parser.add_argument("--model", type=Path, help="ONNX model for part 3 (default: train a tiny one)")
    parser.add_argument("--skip-inference", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--skip-pub", action="store_true", help="part 3 only")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.skip_pub:
            print("1. live PUB stream")
            for encoding in ("json", "msgpack"):
                bench_pub(args.n, encoding, workdir)
            print("2. acknowledged delivery to `edge-inspect mes listen` (separate process)")
            for durability in ("normal", "full"):
                bench_acked(args.acked_n, durability, args.window, workdir)
        if not args.skip_inference:
            print("3. a slow subscriber vs the inference rate")
            model = args.model or tiny_model_path(workdir)
            bench_isolation(model, args.frames, args.rounds, workdir)


if __name__ == "__main__":
    main()

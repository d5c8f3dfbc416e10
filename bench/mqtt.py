"""Benchmark of the mqtt publisher against a local Debian mosquitto (started here on a free port).

    .venv/bin/python bench/mqtt.py                     # 20,000 results, 3 rounds, plain + Sparkplug
    .venv/bin/python bench/mqtt.py --results 5000 --rounds 2

1. Drain: results/s from the journal to the broker (every message acknowledged, cursor saved) and the
   publisher's CPU per result, against a limit that does the same work on the wire: raw paho clients
   publishing the same pre-encoded payloads (the JSON body on one connection, the Sparkplug DDATA on
   another) at QoS 1 with the same window, one thread per connection, stock paho. The two sides
   alternate.
2. Live: journal append + notify at 1,000 results/s for a few seconds; the publisher threads' share of
   one core (CPU time of its session threads over the run's wall time), with the load average after
   each run (the host is shared: give ranges). Goal: >= 1,000 results/s with < 25 % of a core.

Prints measured numbers and the machine they ran on; nothing is asserted. On a busy host a thread is
woken late and finds several results at once, which hides per-wake-up costs; `chrt -f 10 python
bench/mqtt.py --live-only` (root) runs the live row with prompt wake-ups, as on an idle host.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "mqtt"))  # the tests' mosquitto launcher

import paho.mqtt.client as mqtt  # noqa: E402
from mqtt_support import MOSQUITTO, Mosquitto  # noqa: E402

from edge_agent.journal import ResultJournal  # noqa: E402
from edge_agent.publishers import sparkplug as spb  # noqa: E402
from edge_agent.publishers.base import PublisherContext  # noqa: E402
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig  # noqa: E402
from edge_agent.thread_cpu import thread_cpu_seconds  # noqa: E402

WINDOW = 256


def _sample_result():
    """bench/zmq.py's typical body (two cameras, a defect on every tenth part, ~700 bytes of JSON)."""
    spec = importlib.util.spec_from_file_location("bench_zmq", REPO / "bench" / "zmq.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.sample_result


sample_result = _sample_result()


def fill_journal(path: Path, count: int) -> list:
    journal = ResultJournal(path, durability="normal")
    results = journal.append_many([sample_result(i) for i in range(count)])
    journal.close()
    return results


def _publisher(port: int, journal: ResultJournal) -> MqttPublisher:
    """Plain + Sparkplug, under a fresh name: a new cursor (the whole journal is owed), own client ids."""
    name = f"b{uuid.uuid4().hex[:6]}"
    config = MqttPublisherConfig(name=name, port=port, window=WINDOW, client_id=name)
    return MqttPublisher(config, PublisherContext(site="plant-a", boot_id=uuid.uuid4().hex, journal=journal))


def _session_cpu(publisher: MqttPublisher, before: dict[str, float], after: dict[str, float]) -> float:
    threads = [s.thread.name for s in publisher.sessions]
    return sum(after.get(t, 0.0) - before.get(t, 0.0) for t in threads)


def run_publisher(port: int, journal_path: Path, count: int) -> tuple[float, float]:
    """(seconds, CPU seconds of the publisher's threads) to drain `count` results."""
    journal = ResultJournal(journal_path)
    publisher = _publisher(port, journal)
    cpu0 = thread_cpu_seconds()
    t0 = time.perf_counter()
    publisher.start(journal)
    while min(s.cursor for s in publisher.sessions) < count:
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    cpu1 = thread_cpu_seconds()
    publisher.stop()
    journal.close()
    return seconds, _session_cpu(publisher, cpu0, cpu1)


def _raw_sender(port: int, payloads: list[tuple[str, bytes]], name: str, out: dict) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    acked = [0]
    client.on_publish = lambda *_a: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port)
    while not client.is_connected():
        client.loop(0.01)
    t0 = time.thread_time()
    sent = 0
    while acked[0] < len(payloads):
        while sent < len(payloads) and sent - acked[0] < WINDOW:
            topic, payload = payloads[sent]
            client.publish(topic, payload, qos=1)
            sent += 1
        client.loop(0.01)
    out[name] = time.thread_time() - t0
    client.disconnect()


def run_limit(port: int, results: list) -> tuple[float, float]:
    """The same messages, pre-encoded, from raw paho clients: (seconds, CPU seconds of their threads)."""
    plain = [(f"edge-inspect/plant-a/{r.line}/result", r.to_json().encode()) for r in results]
    rates = spb.LineRates()
    sparkplug = []
    for i, r in enumerate(results):
        rates.add(r)
        metrics = spb.line_metrics(r, ["scratch"], rates)
        sparkplug.append(
            (spb.topic("edge-inspect", "DDATA", "plant-a", r.line), spb.encode_payload(metrics, seq=i % 256))
        )
    cpu: dict[str, float] = {}
    threads = [
        threading.Thread(target=_raw_sender, args=(port, msgs, f"limit-{i}", cpu))
        for i, msgs in enumerate((plain, sparkplug))
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(cpu.values())


def run_live(port: int, folder: Path, rate: float, seconds: float) -> tuple[float, float]:
    """Append + notify at `rate`/s for `seconds`: (achieved results/s delivered, publisher core share)."""
    journal = ResultJournal(folder / f"live-{uuid.uuid4().hex[:6]}.sqlite", durability="normal")
    publisher = _publisher(port, journal)
    publisher.start(journal)
    while not all(s.online for s in publisher.sessions):
        time.sleep(0.01)
    cpu0 = thread_cpu_seconds()
    t0 = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate)
        while n < due:
            publisher.notify(journal.append(sample_result(n)))
            n += 1
        time.sleep(0.001)
    while min(s.cursor for s in publisher.sessions) < n:
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    cpu1 = thread_cpu_seconds()
    publisher.stop()
    journal.close()
    return n / wall, _session_cpu(publisher, cpu0, cpu1) / wall


def drain(port: int, folder: Path, count: int, rounds: int) -> None:
    """Row 1: the publisher and the limit drain `count` journaled results, alternating."""
    results = fill_journal(folder / "journal.sqlite", count)
    print(f"1. drain {count} results (plain JSON + Sparkplug DDATA, QoS 1, window {WINDOW}):")
    ours, limit = [], []
    for r in range(rounds):
        for side in ("publisher", "limit") if r % 2 == 0 else ("limit", "publisher"):
            if side == "publisher":
                seconds, cpu = run_publisher(port, folder / "journal.sqlite", count)
                ours.append((seconds, cpu))
            else:
                seconds, cpu = run_limit(port, results)
                limit.append((seconds, cpu))
            print(
                f"   round {r + 1} {side:9s}: {count / seconds:8.0f} results/s, "
                f"{cpu / count * 1e6:6.1f} us CPU per result"
            )

    def rng(values: list[float], fmt: str) -> str:
        return f"{format(min(values), fmt)}-{format(max(values), fmt)}"

    rate = [count / s for s, _ in ours]
    rate_l = [count / s for s, _ in limit]
    cpu_r = [c / count * 1e6 for _, c in ours]
    cpu_l = [c / count * 1e6 for _, c in limit]
    ratio = [(c / count) / (cl / count) for (_, c), (_, cl) in zip(ours, limit, strict=True)]
    print(
        f"   publisher {rng(rate, '.0f')} results/s, {rng(cpu_r, '.1f')} us CPU/result; "
        f"limit (raw paho, same messages) {rng(rate_l, '.0f')} results/s, {rng(cpu_l, '.1f')} us; "
        f"CPU ratio publisher/limit {rng(ratio, '.2f')}"
    )


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {psutil.cpu_count()} logical CPUs, load {', '.join(f'{x:.2f}' for x in psutil.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--live-runs", type=int, default=3)
    parser.add_argument("--live-only", action="store_true", help="skip the drain (e.g. under py-spy)")
    args = parser.parse_args()
    if MOSQUITTO is None:
        sys.exit("mosquitto is not installed (Debian: apt-get install mosquitto)")
    from importlib.metadata import version

    print(f"host: {machine()}; python {platform.python_version()}; paho-mqtt {version('paho-mqtt')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "broker").start()
        try:
            if not args.live_only:
                drain(broker.port, folder, args.results, args.rounds)
            print(f"2. live at 1,000 results/s for {args.live_seconds:g} s:")
            for _ in range(args.live_runs):
                achieved, share = run_live(broker.port, folder, 1000.0, args.live_seconds)
                print(
                    f"   delivered {achieved:7.0f} results/s; publisher threads "
                    f"{share * 100:5.1f} % of one core (goal < 25 %); load {os.getloadavg()[0]:.2f}"
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()

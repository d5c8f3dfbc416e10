"""Memory soak: the agent (`edge-inspect run`) for hours with every output on, its RSS sampled (issue 28/22).

    python bench/soak.py /work/soak/run1 --hours 6            # start (runs in the foreground; nohup it)
    python bench/soak.py --report /work/soak/run1             # summary of a running or finished soak
    nohup setsid python bench/soak.py /work/soak/run1 --hours 6 > /dev/null 2>&1 &

It starts the real servers itself, as the tests do: a mosquitto on a free port, `edge-inspect mes listen`
(acknowledged ZeroMQ delivery, SQLite store), `edge-inspect hub serve` (SQLite store, the agent provisioned
with `hub agent add`), and the agent with EVERY output on:
journal with retention (max_rows, so deletions run), NG archive with annotated copies and a quota that
fills in ~12 minutes and is then deleted from all along, with ~27,000 images in the day folder as in the
issue's run (`--quota-mb 40`: ~700 images), OPC UA server (a real asyncua client here subscribes to
ResultReadyEvents),
ZeroMQ PUB (a subscriber here reads every message), `type: mes` delivery to `mes listen` and to the hub
ingest, hub link (heartbeats, command long-poll), MQTT plain + Sparkplug B (a subscriber here counts both),
the line console with login (a logged-in watcher follows `/api/events?line=` and fetches the live frame
like the live view), and `/metrics` scraped every 10 s.
The source is a folder of our own synthetic 640x480 JPEGs (`training.synth`), looped, through
models/demo/model.onnx, free-run at `--max-fps` (default 30: about half a core on a 2-core VM).

Every `--sample-s` (30 s) one row is appended to `<run>/samples.csv`: time, parts (the journal's highest
seq), RSS and USS of the agent and of each helper (mosquitto, mes, hub, this driver), the archive's file
count, the journal's size, and what each consumer has received so far. `--report` prints parts, hours,
RSS at the start of the steady state (after `--warmup-parts`) / end / max, growth per 10,000 parts and per
hour from a least-squares fit over the second half, the sawtooth (max - min of the residuals of that fit),
and the "lost" checks: journal seq vs what the ZeroMQ subscriber, OPC UA client, MES, hub and MQTT got.

The agent may get `--agent-env NAME=VALUE` (repeatable), e.g. MALLOC_ARENA_MAX=2 or
EDGE_INSPECT_TRACEMALLOC=<file> (docs/agent.md: a developer aid that writes tracemalloc growth).
Stop a soak with SIGTERM to the driver (its pid is in `<run>/driver.pid`): it stops the agent and helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ holds zmq.py and mqtt.py: as the script's folder it would shadow pyzmq and the MQTT modules
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SITE, LINE, CAMERA = "soak", "soak", "top"
USER, PASSWORD = "watcher", "soak-watcher-pw"
FIELDS = [
    "t",
    "elapsed_s",
    "parts",
    "journal_rows",
    "journal_mb",
    "archive_files",
    "archive_mb",
    "agent_rss",
    "agent_uss",
    "agent_cpu_s",
    "agent_threads",
    "agent_fds",
    "mosquitto_rss",
    "mes_rss",
    "hub_rss",
    "driver_rss",
    "zmq_results",
    "zmq_first_seq",
    "zmq_last_seq",
    "opcua_events",
    "opcua_first_seq",
    "opcua_last_seq",
    "mqtt_plain",
    "mqtt_sparkplug",
    "sse_results",
    "frames_fetched",
    "metrics_scrapes",
    "zmq_dropped_pub",
    "archive_skipped",
    "mes_rows",
    "hub_rows",
]
CONSUMED = FIELDS[16:29]  # counted by this driver's consumers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent.cli", *args]


def make_images(folder: Path, count: int) -> None:
    """`count` synthetic 640x480 JPEGs (about 70 % with defects), fixed seed."""
    import cv2
    import numpy as np

    from training.synth import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(28)
    for i in range(count):
        img, _ = make_sample(rng, (480, 640), ok_probability=0.3)
        cv2.imwrite(str(folder / f"part_{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


# -- the helpers --------------------------------------------------------------------------------------


@dataclass
class Procs:
    run: Path
    items: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.run / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=_env(env))
        self.items[name] = proc
        (self.run / "pids.json").write_text(json.dumps({k: p.pid for k, p in self.items.items()}))
        return proc

    def stop_all(self) -> None:
        for name in ["agent", *[n for n in self.items if n != "agent"]]:
            proc = self.items.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def start_mosquitto(procs: Procs, port: int) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = procs.run / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000\nlog_dest stderr\nlog_type error\nlog_type warning\n"
    )
    procs.start("mosquitto", [binary, "-c", str(conf)])


def wait_port(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def write_site(run: Path, images: Path, model: Path, ports: dict[str, int], args: argparse.Namespace) -> Path:
    import yaml

    from contract.passwords import hash_password

    line = {
        "name": LINE,
        "cameras": [
            {
                "name": CAMERA,
                "source": {"type": "folder", "path": str(images), "mode": "loop", "scaled_decode": True},
            }
        ],
        "trigger": {"type": "free_run", **({"max_fps": args.max_fps} if args.max_fps else {})},
        "model": {"path": str(model), "conf": 0.127, "iou": 0.5},
        "recipes": {"standard": {"min_confidence": 0.35}},
    }
    site = {
        "site": SITE,
        "lines": ["lines/soak.yaml"],
        "journal": {
            "path": "data/journal.sqlite",
            "retention": {"max_rows": args.journal_rows, "check_every_s": 120},
        },
        "archive": {
            "enabled": True,
            "path": "data/archive",
            "ok_sample_rate": 0.05,
            "annotated": True,
            "quota_mb": args.quota_mb,
            "min_free_mb": 0,
        },
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": ports["metrics"]},
        "reload": {"enabled": True, "poll_s": 1.0},
        "console": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": ports["console"],
            "auth": "login",
            "users": [{"name": USER, "role": "operator", "password_hash": hash_password(PASSWORD)}],
        },
        "hub": {
            "url": f"http://127.0.0.1:{ports['hub_http']}",
            "agent_id": SITE,
            "token_file": "hub.token",
            "heartbeat_s": 10,
        },
        "publishers": [
            {
                "type": "zmq",
                "pub_endpoint": f"tcp://127.0.0.1:{ports['zmq_pub']}",
                "router_endpoint": f"tcp://127.0.0.1:{ports['zmq_router']}",
                "security": "plain",
            },
            {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{ports['opcua']}/soak", "security": "none"},
            {
                "type": "mes",
                "name": "mes",
                "endpoint": f"tcp://127.0.0.1:{ports['mes']}",
                "security": "plain",
            },
            {
                "type": "mes",
                "name": "hub",
                "endpoint": f"tcp://127.0.0.1:{ports['hub_ingest']}",
                "security": "plain",
            },
            {
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": ports["mqtt"],
                "topic_prefix": "edge-inspect",
                "sparkplug": {"group_id": "edge-inspect"},
            },
        ],
    }
    (run / "site" / "lines").mkdir(parents=True, exist_ok=True)
    (run / "site" / "lines" / "soak.yaml").write_text(yaml.safe_dump(line, sort_keys=False))
    (run / "site" / "agent.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return run / "site" / "agent.yaml"


# -- the consumers (threads of this driver) -----------------------------------------------------------


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(CONSUMED, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n

    def set(self, name: str, value: int) -> None:
        with self.lock:
            self.values[name] = value

    def seen(self, prefix: str, seq: int) -> None:
        """One more result of a stream: its count, first and last seq."""
        with self.lock:
            self.values[f"{prefix}_results" if prefix == "zmq" else f"{prefix}_events"] += 1
            if not self.values[f"{prefix}_first_seq"]:
                self.values[f"{prefix}_first_seq"] = seq
            self.values[f"{prefix}_last_seq"] = seq


def zmq_subscriber(port: int, counts: Counters, stop: threading.Event) -> None:
    import zmq

    from contract.zmq_wire import decode, topic_prefix

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.setsockopt(zmq.SUBSCRIBE, topic_prefix(SITE).encode())
    while not stop.is_set():
        if not sub.poll(500):
            continue
        msg = decode(sub.recv_multipart())
        if msg.kind == "result":
            counts.seen("zmq", int(msg.seq or 0))
    sub.close(0)


def mqtt_subscriber(port: int, counts: Counters, stop: threading.Event) -> None:
    import paho.mqtt.client as mqtt

    def on_message(_c, _u, message) -> None:
        if message.topic.startswith("spBv1.0/") and "/DDATA/" in message.topic:
            counts.add("mqtt_sparkplug")
        elif message.topic.endswith("/result"):
            counts.add("mqtt_plain")

    def on_connect(client, *_a) -> None:
        client.subscribe([("edge-inspect/#", 0), ("spBv1.0/#", 0)])

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-watcher")
    client.on_message, client.on_connect = on_message, on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.loop_stop()


def opcua_client(port: int, counts: Counters, stop: threading.Event, log: Path) -> None:
    from asyncua import Client

    from opcua.config import MACHINE_VISION_NS

    class Handler:
        def event_notification(self, event) -> None:
            found = re.search(r"\(seq (\d+)\)", event.Message.Text or "")  # "NG part X (seq N)"
            counts.seen("opcua", int(found.group(1)) if found else 0)

    async def main() -> None:
        while not stop.is_set():
            try:
                async with Client(f"opc.tcp://127.0.0.1:{port}/soak", timeout=30) as client:
                    ns = await client.get_namespace_index(MACHINE_VISION_NS)
                    etype = await client.nodes.base_event_type.get_child(f"{ns}:ResultReadyEventType")
                    sub = await client.create_subscription(100, Handler())
                    await sub.subscribe_events(client.nodes.server, etype)
                    while not stop.is_set():
                        await asyncio.sleep(1)
                        await client.check_connection()
            except Exception as exc:  # the server restarts or is not up yet: reconnect
                with log.open("a") as f:
                    f.write(f"{time.strftime('%H:%M:%S')} opcua client: {exc!r}\n")
                await asyncio.sleep(5)

    asyncio.run(main())


def console_watcher(port: int, counts: Counters, stop: threading.Event, log: Path) -> None:
    """Logged in; follows the live view's SSE stream and fetches each announced frame (at most 2/s)."""
    import requests

    base = f"http://127.0.0.1:{port}"
    while not stop.is_set():
        try:
            with requests.Session() as http:
                r = http.post(
                    f"{base}/login",
                    data={"user": USER, "password": PASSWORD, "next": "/"},
                    allow_redirects=False,
                    timeout=10,
                )
                if r.status_code != 303:
                    raise RuntimeError(f"login answered {r.status_code}")
                last_fetch = 0.0
                with http.get(f"{base}/api/events", params={"line": LINE}, stream=True, timeout=30) as sse:
                    event = None
                    for raw in sse.iter_lines(decode_unicode=True):
                        if stop.is_set():
                            return
                        if raw.startswith("event: "):
                            event = raw[7:]
                        elif raw.startswith("data: ") and event == "result":
                            counts.add("sse_results")
                            now = time.monotonic()
                            if now - last_fetch >= 0.5:
                                last_fetch = now
                                seq = json.loads(raw[6:]).get("seq")
                                f = http.get(
                                    f"{base}/api/lines/{LINE}/frame/{CAMERA}.jpg",
                                    params={"seq": seq} if seq else {},
                                    timeout=10,
                                )
                                if f.status_code == 200:
                                    counts.add("frames_fetched")
        except Exception as exc:
            with log.open("a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} console watcher: {exc!r}\n")
            stop.wait(5)


def metrics_scraper(port: int, counts: Counters, stop: threading.Event) -> None:
    import requests

    while not stop.wait(10):
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except Exception:
            continue
        counts.add("metrics_scrapes")
        for line in text.splitlines():
            for prefix, name in (
                ('edge_inspect_publisher_stat{publisher="zmq",stat="dropped"}', "zmq_dropped_pub"),
                ('edge_inspect_archive{stat="skipped_queue_full"}', "archive_skipped"),
            ):
                if line.startswith(prefix + " "):
                    with contextlib.suppress(ValueError):
                        counts.set(name, int(float(line.rsplit(" ", 1)[1])))


# -- sampling -------------------------------------------------------------------------------------------


def sqlite_value(path: Path, sql: str) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute(sql).fetchone()[0] or 0)
        finally:
            db.close()
    except sqlite3.Error:
        return -1


def folder_stats(folder: Path) -> tuple[int, float]:
    files, size = 0, 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            files += 1
            with contextlib.suppress(OSError):
                size += os.stat(os.path.join(dirpath, name)).st_size
    return files, size / 2**20


def mem(proc, uss: bool = False) -> tuple[float, float]:
    try:
        if uss:
            info = proc.memory_full_info()
            return info.rss / 2**20, info.uss / 2**20
        return proc.memory_info().rss / 2**20, 0.0
    except Exception:
        return 0.0, 0.0


def sample_row(run: Path, t0: float, procs: Procs, ps: dict, counts: Counters) -> dict:
    data = run / "site" / "data"
    journal = data / "journal.sqlite"
    files, archive_mb = folder_stats(data / "archive")
    journal_mb = (
        sum(Path(str(journal) + s).stat().st_size for s in ("", "-wal") if Path(str(journal) + s).exists())
        / 2**20
    )
    agent = ps["agent"]
    rss, uss = mem(agent, uss=True)
    try:
        cpu = agent.cpu_times()
        cpu_s, threads, fds = cpu.user + cpu.system, agent.num_threads(), agent.num_fds()
    except Exception:
        cpu_s, threads, fds = 0.0, 0, 0
    with counts.lock:
        consumed = dict(counts.values)
    row = {
        "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "parts": sqlite_value(journal, "SELECT MAX(seq) FROM results"),
        "journal_rows": sqlite_value(journal, "SELECT COUNT(*) FROM results"),
        "journal_mb": round(journal_mb, 2),
        "archive_files": files,
        "archive_mb": round(archive_mb, 2),
        "agent_rss": round(rss, 2),
        "agent_uss": round(uss, 2),
        "agent_cpu_s": round(cpu_s, 1),
        "agent_threads": threads,
        "agent_fds": fds,
        **{f"{k}_rss": round(mem(ps[k])[0], 2) for k in ("mosquitto", "mes", "hub", "driver")},
        **consumed,
        "mes_rows": sqlite_value(run / "mes.sqlite", "SELECT COUNT(*) FROM results"),
        "hub_rows": sqlite_value(run / "hub" / "hub.sqlite", "SELECT COUNT(*) FROM results"),
    }
    return row


def soak(args: argparse.Namespace) -> None:
    import psutil

    run: Path = args.run.resolve()
    if (run / "samples.csv").exists():
        raise SystemExit(f"{run} already holds a soak; give a new run folder")
    run.mkdir(parents=True, exist_ok=True)
    (run / "driver.pid").write_text(str(os.getpid()))
    images = run / "images"
    make_images(images, args.images)
    ports = {
        k: free_port()
        for k in (
            "mqtt",
            "mes",
            "hub_ingest",
            "hub_http",
            "zmq_pub",
            "zmq_router",
            "opcua",
            "metrics",
            "console",
        )
    }
    (run / "ports.json").write_text(json.dumps(ports))
    procs = Procs(run)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        start_mosquitto(procs, ports["mqtt"])
        procs.start(
            "mes",
            cli(
                "mes",
                "listen",
                "--endpoint",
                f"tcp://127.0.0.1:{ports['mes']}",
                "--store",
                str(run / "mes.sqlite"),
                "--plain",
                "--durability",
                "normal",
                "--quiet",
            ),
        )
        hub_data = run / "hub"
        store = f"sqlite:///{hub_data / 'hub.sqlite'}"
        hub_data.mkdir(exist_ok=True)
        (run / "site").mkdir(exist_ok=True)
        subprocess.run(
            cli(
                "hub",
                "agent",
                "add",
                SITE,
                "--company",
                "Soak",
                "--token-out",
                str(run / "site" / "hub.token"),
                "--data",
                str(hub_data),
                "--store",
                store,
            ),
            check=True,
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
        )
        procs.start(
            "hub",
            cli(
                "hub",
                "serve",
                "--data",
                str(hub_data),
                "--store",
                store,
                "--ingest",
                f"tcp://127.0.0.1:{ports['hub_ingest']}",
                "--http-port",
                str(ports["hub_http"]),
                "--plain",
            ),
        )
        wait_port(ports["mqtt"])
        wait_port(ports["hub_http"])
        site = write_site(run, images, args.model.resolve(), ports, args)
        agent_env = dict(kv.split("=", 1) for kv in args.agent_env)
        procs.start("agent", cli("run", "--config", str(site), "--quiet"), env=agent_env)
        wait_port(ports["console"], 120)
        counts = Counters()
        threads = [
            threading.Thread(target=zmq_subscriber, args=(ports["zmq_pub"], counts, stop), daemon=True),
            threading.Thread(target=mqtt_subscriber, args=(ports["mqtt"], counts, stop), daemon=True),
            threading.Thread(
                target=opcua_client, args=(ports["opcua"], counts, stop, run / "driver.log"), daemon=True
            ),
            threading.Thread(
                target=console_watcher, args=(ports["console"], counts, stop, run / "driver.log"), daemon=True
            ),
            threading.Thread(target=metrics_scraper, args=(ports["metrics"], counts, stop), daemon=True),
        ]
        for t in threads:
            t.start()
        ps = {name: psutil.Process(p.pid) for name, p in procs.items.items()}
        ps["driver"] = psutil.Process()
        t0 = time.monotonic()
        end = t0 + args.hours * 3600
        with (run / "samples.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            while not stop.is_set() and time.monotonic() < end:
                for name, p in procs.items.items():
                    if p.poll() is not None:
                        raise SystemExit(f"{name} exited with {p.returncode}: see {run / (name + '.log')}")
                writer.writerow(sample_row(run, t0, procs, ps, counts))
                f.flush()
                stop.wait(args.sample_s)
        agent = procs.items["agent"]  # stop the agent first, let the consumers drain, then a last row
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)
        time.sleep(10)
        with (run / "samples.csv").open("a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(sample_row(run, t0, procs, ps, counts))
    finally:
        stop.set()
        procs.stop_all()
        (run / "finished").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


# -- the report -----------------------------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def report(run: Path, warmup_parts: int) -> None:
    with (run / "samples.csv").open() as f:
        rows = [{k: float(v) for k, v in r.items() if k != "t"} | {"t": r["t"]} for r in csv.DictReader(f)]
    if len(rows) < 4:
        raise SystemExit(f"{run}: only {len(rows)} samples so far")
    state = "finished " + (run / "finished").read_text() if (run / "finished").exists() else "running"
    final_row = rows[-1]  # after the agent stopped (a finished soak): what the consumers got in the end
    rows = [r for r in rows if r["agent_rss"] > 0]  # the memory figures: samples of the running agent
    last = rows[-1]
    hours = last["elapsed_s"] / 3600
    steady = [r for r in rows if r["parts"] >= warmup_parts] or rows[len(rows) // 4 :]
    half = steady[len(steady) // 2 :]
    print(f"soak {run} ({state}; {rows[0]['t']} → {final_row['t']} UTC)")
    print(
        f"  parts {int(last['parts']):,} in {hours:.2f} h "
        f"({last['parts'] / max(1, last['elapsed_s']):.1f}/s); "
        f"agent CPU {last['agent_cpu_s'] / max(1, last['elapsed_s']) * 100:.0f} % of a core; "
        f"archive {int(last['archive_files']):,} files {last['archive_mb']:.0f} MB; "
        f"journal {int(last['journal_rows']):,} rows {last['journal_mb']:.0f} MB"
    )
    for who in ("agent", "mosquitto", "mes", "hub", "driver"):
        key = f"{who}_rss"
        ys = [r[key] for r in half]
        per_part, _ = fit([r["parts"] for r in half], ys)
        per_s, icpt = fit([r["elapsed_s"] for r in half], ys)
        resid = [y - (per_s * r["elapsed_s"] + icpt) for r, y in zip(half, ys, strict=True)]
        print(
            f"  {who:9s} RSS {steady[0][key]:7.1f} MiB at {int(steady[0]['parts']):,} parts → "
            f"{last[key]:7.1f} at {int(last['parts']):,} (max {max(r[key] for r in rows):.1f}); "
            f"second half: {per_part * 10_000:+.3f} MiB/10k parts, {per_s * 3600:+.2f} MiB/h, "
            f"sawtooth {max(resid) - min(resid):.1f} MiB"
        )
    if last["agent_uss"]:
        ys = [r["agent_uss"] for r in half]
        per_part, _ = fit([r["parts"] for r in half], ys)
        print(
            f"  agent USS {steady[0]['agent_uss']:.1f} → {last['agent_uss']:.1f} MiB; second half "
            f"{per_part * 10_000:+.3f} MiB/10k parts; threads {int(last['agent_threads'])}, "
            f"fds {int(last['agent_fds'])}"
        )
    last = final_row
    seq = int(last["parts"])
    final = "after the agent stopped" if state != "running" else "while running: the lag shows as missing"
    print(f"  delivered (journal seq {seq:,} at the last sample, {final}):")
    for key, what in (
        ("mes_rows", "MES (acked)"),
        ("hub_rows", "hub (acked)"),
        ("mqtt_plain", "MQTT plain"),
        ("mqtt_sparkplug", "MQTT Sparkplug DDATA"),
    ):
        got = int(last[key])
        print(f"    {what:22s} {got:>10,} of {seq:,}, missing {max(0, seq - got):,}")
    for prefix, key, what in (
        ("opcua", "opcua_events", "OPC UA events"),
        ("zmq", "zmq_results", "ZeroMQ SUB"),
    ):
        first, got = int(last[f"{prefix}_first_seq"]), int(last[key])
        span = int(last[f"{prefix}_last_seq"]) - first + 1 if first else 0
        print(
            f"    {what:22s} {got:>10,} of seq {first:,}..{int(last[f'{prefix}_last_seq']):,} "
            f"(subscribed from {first:,}), missing {max(0, span - got):,}, behind the journal "
            f"{seq - int(last[f'{prefix}_last_seq']):,}"
        )
    print(
        f"    NG archive images skipped (writer queue full): {int(last.get('archive_skipped', 0)):,}; "
        f"ZeroMQ PUB drops counted by the agent: {int(last['zmq_dropped_pub']):,}; "
        f"SSE results {int(last['sse_results']):,}, live frames fetched {int(last['frames_fetched']):,}, "
        f"/metrics scrapes {int(last['metrics_scrapes']):,}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", help="run folder (new) for a soak")
    ap.add_argument("--report", type=Path, metavar="RUN", help="print the summary of RUN and exit")
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--max-fps", type=float, default=30.0, help="free-run cap of the line (0: none)")
    ap.add_argument(
        "--quota-mb",
        type=float,
        default=1500.0,
        help="NG archive quota; the default fills in ~12 min at 30 fps, then deletes all along, with "
        "~27,000 images in the day folder (the issue's run had 29,325)",
    )
    ap.add_argument("--journal-rows", type=int, default=100_000, help="journal retention: max_rows")
    ap.add_argument("--images", type=int, default=48, help="distinct synthetic JPEGs, looped")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "demo" / "model.onnx")
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--warmup-parts", type=int, default=10_000, help="report: steady state starts here")
    ap.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    if args.report:
        report(args.report, args.warmup_parts)
    elif args.run:
        soak(args)
    else:
        ap.error("give a run folder, or --report RUN")


if __name__ == "__main__":
    main()

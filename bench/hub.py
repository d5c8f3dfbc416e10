"""Benchmark of the programme hub: many simulated lines delivering to one hub, then dashboard queries.

    .venv/bin/python bench/hub.py                       # goal: 300 lines x 5 parts/s, 10 min, PostgreSQL
    .venv/bin/python bench/hub.py --lines 60 --minutes 1        # a short run for a small machine
    .venv/bin/python bench/hub.py --store sqlite                # the trial store

1. Ingest: `--lines` simulated lines (`--per-agent` lines per agent process, default 30) each journal
   `--rate` results/s into their agent's real SQLite journal (one committed append per line and wake-up,
   as a line's journal thread does; an agent wakes every `--tick` s, default 50 ms, and inspects the
   parts due by then); each agent delivers with the real acknowledged `type: mes`
   publisher to one `edge-inspect hub serve` process (its own throwaway PostgreSQL server unless `--store`
   gives a URL). At the end: lost and duplicated results (journals vs. hub), ingest lag (hub receipt
   minus inspection time) p50/p99, and the CPU of the hub process, of PostgreSQL and of the simulated
   agents (in cores and per result). Goal: 0 lost,
   0 duplicated, p99 < 2 s at 1,500 results/s.
2. Dashboard: with 30 days of day roll-ups and 24 h of minute roll-ups for `--dash-lines` lines in the
   database: the programme overview (< 500 ms) and one line's 30-day chart (< 300 ms), via HTTP.

Prints measured numbers and the machine they ran on (load average); nothing is asserted.
"""

from __future__ import annotations

import os
import sys

# This file is called hub.py: keep its own folder off sys.path, or `import hub` would import itself.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repo

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(_HERE).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agent_process(
    index: int,
    lines: list[str],
    rate: float,
    seconds: float,
    endpoint: str,
    root: str,
    ready: mp.Event,
    go: mp.Event,
    cpu_out: mp.Queue,
    tick: float,
) -> None:
    """One simulated agent: a real journal and the real acknowledged publisher; lines append at `rate`."""
    from contract.result import Defect, InspectionResult, ModelInfo
    from edge_agent.journal import ResultJournal
    from edge_agent.publishers.base import PublisherContext
    from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher

    site = f"site-{index:03d}"
    journal = ResultJournal(Path(root) / f"{site}.sqlite")
    publisher = MesDeliveryPublisher(
        MesDeliveryConfig(endpoint=endpoint, security="plain", window=512, name="hub"),
        PublisherContext(site=site, boot_id=uuid.uuid4().hex, journal=journal),
    )
    publisher.start(journal)
    ready.set()
    go.wait()
    cpu0 = time.process_time()
    model = ModelInfo(name="bench", version="1", sha256="ab" * 32)
    period = 1.0 / (rate * len(lines))  # the lines' parts interleaved: part n is due at start + n * period
    start = time.monotonic()
    total = int(seconds / period)
    n = 0
    while n < total:
        now = time.monotonic()
        due = start + n * period
        if due > now:  # wait for the next part, or for the next tick when parts come faster than ticks
            time.sleep(max(due - now, tick))
            now = time.monotonic()
        # every part due by now, inspected now; each line's parts journaled together, as a line's journal
        # thread does with what its inspection queue holds (usually one), then the publisher is told
        by_line: dict[str, list[InspectionResult]] = {}
        while n < total and start + n * period <= now:
            line = lines[n % len(lines)]
            ng = n % 50 == 0
            defects = [
                Defect(
                    camera="top",
                    class_name="scratch",
                    class_id=0,
                    confidence=0.8,
                    xyxy=[1, 2, 30, 40],
                    area_px=1000.0,
                    counts_for_verdict=ng,
                )
            ]
            by_line.setdefault(line, []).append(
                InspectionResult(
                    site=site,
                    line=line,
                    part_id=f"{line}-{n}",
                    recipe="default",
                    verdict="NG" if ng else "OK",
                    defects=defects,
                    model=model,
                    timings_ms={"total": 12.0},
                )
            )
            n += 1
        for results in by_line.values():
            for result in journal.append_many(results):
                publisher.notify(result)
    deadline = time.monotonic() + 120  # let the backlog drain before stopping
    while publisher.stats().get("backlog", 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    publisher.stop(10)
    journal.close()
    cpu_out.put(time.process_time() - cpu0)  # this agent's CPU (all its threads) from go to the end


def _seed_dashboard(store_url: str, lines: int) -> None:
    from hub.registry import Registry
    from hub.store import HubStore

    store = HubStore.open(store_url)
    db = store.db
    now = time.time()
    today, minute_now = int(now // 86400), int(now // 60)
    reg = Registry(db)
    for a in range(lines // 10):
        agent_id = f"dash-{a:03d}"
        reg.add_agent(agent_id, f"Company {a % 100:02d}")
        reg.register(
            agent_id,
            {
                "site": f"dash-site-{a:03d}",
                "version": "0.1.0",
                "lines": {
                    f"line-{i}": {"state": "running", "recipe": "r", "model": {"name": "m", "version": "1"}}
                    for i in range(10)
                },
            },
        )
    keys = [(f"dash-site-{i // 10:03d}", f"line-{i % 10}") for i in range(lines)]
    day_rows = [
        (s, ln, d, 20000, 300, 20000, 16000.0, 13000.0)
        for s, ln in keys
        for d in range(today - 29, today + 1)
    ]
    minute_rows = [
        (s, ln, m, 14, 1, 14, 11.0, 9.0) for s, ln in keys for m in range(minute_now - 1439, minute_now + 1)
    ]
    class_rows = [
        (s, ln, d, c, 100)
        for s, ln in keys
        for d in range(today - 29, today + 1)
        for c in ("scratch", "pit", "crack")
    ]
    with db.transaction():
        db.executemany("INSERT INTO rollup_day VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", day_rows)
        db.executemany("INSERT INTO rollup_day_class VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING", class_rows)
    for i in range(0, len(minute_rows), 50_000):
        with db.transaction():
            db.executemany(
                "INSERT INTO rollup_minute VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                minute_rows[i : i + 50_000],
            )
    if db.kind == "postgres":
        db.execute("ANALYZE")
    store.close()


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _postgres_pids(server) -> list[int]:
    import psutil

    if server is None or server.proc is None:
        return []
    root = psutil.Process(server.proc.pid)
    return [root.pid, *(c.pid for c in root.children(recursive=True))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--rate", type=float, default=5.0, help="parts per second per line")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--per-agent", type=int, default=30, help="lines per simulated agent (process)")
    ap.add_argument(
        "--tick",
        type=float,
        default=0.05,
        help="a simulated agent wakes at most this often (s) and inspects every part due by then",
    )
    ap.add_argument("--store", default="postgres", help="postgres (own throwaway server), sqlite, or a URL")
    ap.add_argument("--dash-lines", type=int, default=300)
    args = ap.parse_args()

    from edge_agent.journal import ResultJournal
    from hub.store import HubStore

    root = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    pg = None
    if args.store == "postgres":
        sys.path.insert(0, str(REPO / "tests" / "hub"))
        from pg_support import PgServer, why_no_postgres

        reason = why_no_postgres()
        if reason:
            sys.exit(f"cannot start PostgreSQL: {reason}")
        pg = PgServer().start()
        store_url = pg.new_database()
    elif args.store == "sqlite":
        store_url = f"sqlite:///{root / 'hub.sqlite'}"
    else:
        store_url = args.store
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load before: {os.getloadavg()}"
    )
    print(f"store: {store_url.split('@')[-1]}")

    ingest_port, http_port = _free_port(), _free_port()
    hub_log = open(root / "hub.log", "w")  # noqa: SIM115 - the child process owns it
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "hub",
            "serve",
            "--data",
            str(root / "hub-data"),
            "--store",
            store_url,
            "--ingest",
            f"tcp://127.0.0.1:{ingest_port}",
            "--http-port",
            str(http_port),
            "--plain",
        ],
        stdout=subprocess.DEVNULL,
        stderr=hub_log,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or hub.poll() is not None:
                sys.exit(f"the hub did not start: {(root / 'hub.log').read_text()[-2000:]}")
            time.sleep(0.3)

    try:
        # -- 1. ingest ---------------------------------------------------------------------------
        seconds = args.minutes * 60
        agents = []
        ctx = mp.get_context("spawn")
        go = ctx.Event()
        agent_cpu = ctx.Queue()
        for a, first in enumerate(range(0, args.lines, args.per_agent)):
            lines = [f"line-{i}" for i in range(min(args.per_agent, args.lines - first))]
            ready = ctx.Event()
            p = ctx.Process(
                target=_agent_process,
                args=(
                    a,
                    lines,
                    args.rate,
                    seconds,
                    f"tcp://127.0.0.1:{ingest_port}",
                    str(root),
                    ready,
                    go,
                    agent_cpu,
                    args.tick,
                ),
            )
            p.start()
            agents.append((p, ready))
        for _, ready in agents:
            ready.wait(120)
        expected_rate = args.lines * args.rate
        print(
            f"ingest: {args.lines} lines on {len(agents)} agents (up to {args.per_agent} each) "
            f"x {args.rate:g} parts/s = "
            f"{expected_rate:,.0f} results/s for {seconds:.0f} s"
        )
        pg_pids = _postgres_pids(pg)
        hub_cpu0, pg_cpu0, t0 = _cpu_seconds([hub.pid]), _cpu_seconds(pg_pids), time.monotonic()
        samples: list[tuple[float, float]] = []
        stop_sampling = threading.Event()

        def sample() -> None:  # load during the run, for the report
            while not stop_sampling.wait(10):
                samples.append((time.monotonic() - t0, os.getloadavg()[0]))

        threading.Thread(target=sample, daemon=True).start()
        go.set()
        agents_cpu = 0.0
        for _ in agents:
            agents_cpu += agent_cpu.get(timeout=seconds + 300)
        wall = time.monotonic() - t0
        hub_cpu, pg_cpu = _cpu_seconds([hub.pid]) - hub_cpu0, _cpu_seconds(pg_pids) - pg_cpu0
        stop_sampling.set()
        for p, _ in agents:
            p.join(60)

        journaled: set[str] = set()
        for f in sorted(root.glob("site-*.sqlite")):
            j = ResultJournal(f)
            journaled.update(r.result_id for r in j.iter_since(0))
            j.close()
        store = HubStore.open(store_url)
        in_hub = [r[0] for r in store.db.query("SELECT result_id FROM results")]
        lags = sorted(float(r[0]) for r in store.db.query("SELECT received_at - ts FROM results"))
        store.close()
        lost = len(journaled - set(in_hub))
        duplicated = len(in_hub) - len(set(in_hub))
        p50 = lags[len(lags) // 2] if lags else float("nan")
        p99 = lags[int(len(lags) * 0.99)] if lags else float("nan")
        print(
            f"  journaled {len(journaled):,}, in the hub {len(in_hub):,}: "
            f"lost {lost}, duplicated {duplicated}"
        )
        print(f"  achieved {len(journaled) / seconds:,.0f} results/s (asked {expected_rate:,.0f}/s)")
        print(
            f"  ingest lag p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
            if lags
            else "  no results"
        )
        print(
            f"  hub process CPU {hub_cpu / wall:.2f} cores, PostgreSQL {pg_cpu / wall:.2f} cores, "
            f"simulated agents {agents_cpu / wall:.2f} cores (over {wall:.0f} s)"
        )
        n = max(1, len(in_hub))
        print(
            f"  CPU per result: hub process {hub_cpu / n * 1e6:.0f} us, "
            f"PostgreSQL {pg_cpu / n * 1e6:.0f} us, simulated agents {agents_cpu / n * 1e6:.0f} us"
        )
        if samples:
            print(f"  load average during the run: {', '.join(f'{la:.1f}' for _, la in samples[:12])}")

        # -- 2. dashboard -----------------------------------------------------------------------
        _seed_dashboard(store_url, args.dash_lines)
        from hub.auth import Users

        store = HubStore.open(store_url)
        Users(store.db).set("bench", "bench-password", "viewer")
        store.close()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(
            base + "/login",
            data=urllib.parse.urlencode({"user": "bench", "password": "bench-password"}).encode(),
            timeout=30,
        )

        def timed(path: str, n: int = 5) -> float:
            best = []
            for _ in range(n):
                t = time.perf_counter()
                body = opener.open(base + path, timeout=60).read()
                best.append(time.perf_counter() - t)
                assert b"Log in" not in body[:2000] or path == "/login"
            return sorted(best)[len(best) // 2]

        overview = timed("/")
        line = timed("/line/dash-site-000/line-3")
        print(
            f"dashboard ({args.dash_lines} lines, 30 days of day roll-ups, 24 h of minute roll-ups): "
            f"overview {overview * 1000:.0f} ms (goal < 500), line page with its 30-day chart "
            f"{line * 1000:.0f} ms (goal < 300), median of 5 over HTTP"
        )
        print(f"load after: {os.getloadavg()}")
    finally:
        hub.terminate()
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            hub.kill()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()

"""Console benchmark: what watching costs the line, and how fast the pages answer on a big journal.

    python bench/console.py                         # both parts, defaults below
    python bench/console.py --rounds 4 --seconds 15 --clients 5
    python bench/console.py --rows 1000000 --skip-fps

1. Line fps with N browsers watching against none: the demo line at full speed (no max_fps) in a real
   `edge-inspect run`; N clients in this process each hold the line view's live stream (SSE) and fetch
   every frame it announces, like the page does (at most `console.frame_max_fps` per client). Rounds
   alternate none / N watching; fps is counted from the journal. Goal: watched/none >= 0.98.
2. Page latency on a journal of `--rows` results (default 1,000,000; spread over 10 days, written directly
   with SQLite): the overview page and its JSON, the newest results page, a class filter, a detail page.
   Goal: overview < 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))


def write_site(
    root: Path, *, max_fps: float | None, frame_max_fps: float, journal: Path | None = None
) -> Path:
    lines = root / "lines"
    lines.mkdir(parents=True, exist_ok=True)
    line = {
        "name": "demo",
        "cameras": [
            {"name": "top", "source": {"type": "folder", "path": str(REPO / "images"), "mode": "loop"}}
        ],
        "trigger": {"type": "free_run", **({"max_fps": max_fps} if max_fps else {})},
        "model": {"path": str(REPO / "models" / "demo" / "model.onnx"), "providers": "cpu", "conf": 0.25},
        "recipes": {"standard": {"min_confidence": 0.35, "classes": {"stain": {"max_count": 2}}}},
    }
    (lines / "demo.yaml").write_text(yaml.safe_dump(line, sort_keys=False))
    site = {
        "site": "bench",
        "lines": ["lines/demo.yaml"],
        "journal": {
            "path": str(journal or root / "data" / "journal.sqlite"),
            "retention": {"max_rows": None},
        },
        "archive": {"path": str(root / "data" / "archive"), "ok_sample_rate": 0.0, "min_free_mb": 0},
        "metrics": {"enabled": False},
        "reload": {"enabled": False},
        "console": {"enabled": True, "port": 0, "auth": "none", "frame_max_fps": frame_max_fps},
    }
    (root / "agent.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return root / "agent.yaml"


class Agent:
    def __init__(self, site: Path) -> None:
        self.log = site.parent / "agent.log"
        self._out = open(self.log, "w")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(site), "-q"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 120
        self.url = None
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"agent did not start:\n{self.log.read_text()}")
            for line in self.log.read_text().splitlines():
                if line.startswith("console: "):
                    self.url = line.split()[1].rstrip("/")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._out.close()


def last_seq(journal: Path) -> int:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute("SELECT MAX(seq) FROM results").fetchone()
    return int(row[0] or 0)


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def watcher(url: str, stop: threading.Event, counts: list[int], index: int) -> None:
    """One browser on the line view: the SSE stream, and each announced frame fetched."""
    with httpx.Client(base_url=url, timeout=30) as c, c.stream("GET", "/api/events?line=demo") as stream:
        event = None
        for raw in stream.iter_lines():
            if stop.is_set():
                return
            if raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: ") and event == "result":
                seq = json.loads(raw[6:])["seq"]
                if c.get(f"/api/lines/demo/frame/top.jpg?seq={seq}").status_code == 200:
                    counts[index] += 1


def bench_fps(args: argparse.Namespace, work: Path) -> None:
    site = write_site(work / "fps", max_fps=None, frame_max_fps=args.frame_fps)
    journal = site.parent / "data" / "journal.sqlite"
    agent = Agent(site)
    proc = psutil.Process(agent.proc.pid)
    try:
        time.sleep(args.warmup)
        ratios, rows = [], []
        for rnd in range(args.rounds):
            for watched in (0, args.clients):
                stop = threading.Event()
                counts = [0] * watched
                threads = [
                    threading.Thread(target=watcher, args=(agent.url, stop, counts, i), daemon=True)
                    for i in range(watched)
                ]
                for t in threads:
                    t.start()
                time.sleep(2.0 if watched else 0.5)  # streams connected and steady
                s0, t0, c0 = last_seq(journal), time.monotonic(), cpu_s(proc)
                time.sleep(args.seconds)
                s1, t1, c1 = last_seq(journal), time.monotonic(), cpu_s(proc)
                stop.set()
                fps = (s1 - s0) / (t1 - t0)
                cpu_per_part = (c1 - c0) / max(1, s1 - s0) * 1000
                rows.append(
                    (rnd, watched, fps, sum(counts) / (t1 - t0 + 2.0) if watched else 0.0, cpu_per_part)
                )
                for t in threads:
                    t.join(5)
            ratios.append(rows[-1][2] / rows[-2][2])
        print(
            f"\n1. line fps, demo model at full speed, {args.clients} watchers vs none "
            f"({args.seconds:g} s each)"
        )
        print("round  watchers   line fps   frames fetched/s   agent CPU ms per part")
        for rnd, watched, fps, fetched, cpu in rows:
            print(f"{rnd:5d}  {watched:8d}   {fps:8.2f}   {fetched:16.2f}   {cpu:8.1f}")
        print(f"watched/none fps per round: {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"median fps ratio: {statistics.median(ratios):.3f}  (goal >= 0.98)")
        base = statistics.median(r[4] for r in rows if r[1] == 0)
        watched_cpu = statistics.median(r[4] for r in rows if r[1])
        # CPU per part is immune to other jobs' load: on a CPU-bound agent fps scales with its inverse
        print(
            f"agent CPU per part: {base:.1f} ms unwatched, {watched_cpu:.1f} ms watched "
            f"-> expected fps ratio on a CPU-bound line {base / watched_cpu:.3f}"
        )
    finally:
        agent.stop()


def fill_journal(path: Path, rows: int) -> None:
    """`rows` results over the last 10 days, written with SQLite directly (the agent's schema)."""
    from contract.result import Defect, FrameInfo, InspectionResult, ModelInfo
    from edge_agent.journal import ResultJournal

    ResultJournal(path).close()  # the schema, as the agent makes it
    template = InspectionResult(
        site="bench",
        line="demo",
        part_id="P",
        recipe="standard",
        verdict="NG",
        reasons=["pit: 1 found, at most 0 allowed"],
        defects=[
            Defect(
                camera="top", class_name="pit", class_id=1, confidence=0.8, xyxy=[10, 10, 20, 20], area_px=100
            )
        ],
        frames=[FrameInfo(camera="top", width=320, height=320)],
        model=ModelInfo(name="demo", version="1"),
        timings_ms={"total": 20.0},
    )
    ok = template.model_copy(update={"verdict": "OK", "reasons": [], "defects": []})
    now = time.time()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    batch = []
    t0 = time.monotonic()
    ok_body, ng_body = ok.to_json(), template.to_json()
    for i in range(1, rows + 1):
        ng = i % 10 == 0
        ts = now - (rows - i) * (10 * 86400 / rows)
        body = (ng_body if ng else ok_body).replace('"seq":null', f'"seq":{i}')
        batch.append((i, uuid.uuid4().hex, "demo", f"P-{i}", "NG" if ng else "OK", ts, body))
        if len(batch) == 50_000:
            db.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?)", batch)
            db.commit()
            batch = []
    if batch:
        db.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?)", batch)
        db.commit()
    db.close()
    print(
        f"   journal of {rows:,} results written in {time.monotonic() - t0:.1f} s "
        f"({path.stat().st_size / 1e6:.0f} MB)"
    )


def timed(c: httpx.Client, path: str, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = c.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def bench_pages(args: argparse.Namespace, work: Path) -> None:
    print(f"\n2. page latency with a {args.rows:,}-result journal (ms, {args.requests} requests each)")
    journal = work / "pages" / "journal.sqlite"
    journal.parent.mkdir(parents=True)
    fill_journal(journal, args.rows)
    site = write_site(work / "pages", max_fps=2, frame_max_fps=args.frame_fps, journal=journal)
    t_start = time.monotonic()
    agent = Agent(site)
    try:
        with httpx.Client(base_url=agent.url, timeout=60) as c:
            t0 = time.perf_counter()
            c.get("/")
            print(
                "   first overview right after start (seeding in the background): "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms"
            )
            deadline = time.monotonic() + 300
            while not c.get("/api/overview").json()["seeded"] and time.monotonic() < deadline:
                time.sleep(0.2)
            print(
                f"   counts of the shift seeded from the journal {time.monotonic() - t_start:.1f} s "
                "after start"
            )
            seq = args.rows // 2
            print("page                               p50      p95")
            for name, path in (
                ("overview /", "/"),
                ("overview JSON /api/overview", "/api/overview"),
                ("results (newest 48)", "/results"),
                ("results NG, class pit", "/results?verdict=NG&class=pit"),
                ("result detail", f"/results/{seq}"),
            ):
                p50, p95 = timed(c, path, args.requests)
                print(f"{name:32s} {p50:7.1f}  {p95:7.1f}")
    finally:
        agent.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--frame-fps", type=float, default=4, help="console.frame_max_fps (per client)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--skip-fps", action="store_true")
    ap.add_argument("--skip-pages", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        work = Path(tmp)
        if not args.skip_fps:
            bench_fps(args, work)
        if not args.skip_pages:
            bench_pages(args, work)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

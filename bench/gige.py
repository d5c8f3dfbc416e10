"""Benchmark of the `gige` source against Aravis' simulated GigE Vision camera on 127.0.0.1.

    .venv/bin/python bench/gige.py                  # everything, about 4 minutes
    .venv/bin/python bench/gige.py --seconds 20 --rounds 5

1. Acquisition: 640x480 Mono8 at 30 fps, free-run. Frames/s delivered as BGR8 and the CPU of this process
   (Aravis' stream and heartbeat threads + reading, copying and converting each frame; nothing else runs
   in it) as a share of one core, per round. Goal: 30 fps with < 10 % of a core. The simulator's own CPU
   (another process) is printed beside it and not counted. Each round alternates with Aravis' own C
   acquisition tool (`arv-camera-test-0.8`, same size and rate, no conversion): the floor.
2. Trigger to frame: software-trigger mode, `request_frame()` to the BGR8 frame ready, p50/p99/max. The
   simulator only looks for a software trigger every 40 ms (its trigger_frequency of 25 Hz), so most of
   this is the simulator waiting, not the link or the agent.
3. Reconnect: the camera is killed, stays away (3 s, then 6 s, alternating), comes back; time from its
   return (it answers GVCP again) to the first new frame through the line's camera worker, with the
   example line's back-off (reconnect_initial_s 0.5, reconnect_max_s 2) and with the default cap (10 s);
   the last round's outage is long (20 s) so the back-off reaches its cap. Goal: within 5 s of the return.

Prints measured numbers and the machine they ran on; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "agent"))  # fake_gige: the simulated camera the tests use

from fake_gige import HOST, FakeGigeCamera, controller_free, gvcp_answers, why_no_fake_gige  # noqa: E402

from edge_agent.config import CameraConfig  # noqa: E402
from edge_agent.line import CameraWorker  # noqa: E402
from edge_agent.sources.gige import GigeSource, GigeSourceConfig  # noqa: E402

SERIAL = "BENCH01"


def acquisition(seconds: float) -> tuple[float, float, float, dict[str, float]]:
    """(fps, % of a core for this process, % of a core for the simulator, counters) over `seconds`."""
    src = GigeSource(
        GigeSourceConfig(address=HOST, width=640, height=480, pixel_format="Mono8", frame_rate=30), "top"
    )
    src.open()
    me = psutil.Process()
    camera = psutil.Process(FAKE.proc.pid)
    try:
        for _ in range(15):  # warm up: buffers allocated, first frames through
            src.read()
        cpu0, cam0, t0, n = sum(me.cpu_times()[:2]), sum(camera.cpu_times()[:2]), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            frame = src.read()
            assert frame is not None and frame.image.shape == (480, 640, 3)
            n += 1
        wall = time.monotonic() - t0
        cpu = sum(me.cpu_times()[:2]) - cpu0
        cam = sum(camera.cpu_times()[:2]) - cam0
        return n / wall, 100 * cpu / wall, 100 * cam / wall, src.stats()
    finally:
        src.close()


def aravis_floor(seconds: float) -> tuple[float, float]:
    """(fps, % of a core) of Aravis' own C acquisition tool at the same settings (no conversion, no
    Python): the floor our acquisition is compared with."""
    proc = subprocess.Popen(
        ["stdbuf", "-oL", "arv-camera-test-0.8", "-n", HOST, "-f", "30", "-w", "640", "-h", "480"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rates: list[tuple[float, float]] = []

    def read_rates() -> None:
        for line in proc.stdout or []:
            match = re.match(r"\s*(\d+) frames/s", line)
            if match:
                rates.append((time.monotonic(), float(match.group(1))))

    threading.Thread(target=read_rates, daemon=True).start()
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(2.0)  # connected and streaming
        cpu0, t0 = sum(ps.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        cpu, wall = sum(ps.cpu_times()[:2]) - cpu0, time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGINT)  # it stops acquisition and lets go of the camera on SIGINT
        proc.wait(10)
    if not controller_free():
        raise RuntimeError("arv-camera-test-0.8 left the camera's control channel taken")
    window = [r for t, r in rates if t0 + 1 < t <= t0 + wall] or [0.0]
    return sum(window) / len(window), 100 * cpu / wall


def trigger_latency(count: int) -> np.ndarray:
    """ms from request_frame() to the frame being ready, `count` software triggers."""
    stop = threading.Event()
    config = GigeSourceConfig(
        address=HOST, width=640, height=480, pixel_format="Mono8", trigger={"mode": "software"}
    )
    src = GigeSource(config, "top", stop)
    src.open()
    arrived: list[float] = []
    got = threading.Event()

    def reader() -> None:
        while (frame := src.read()) is not None:
            arrived.append(frame.t_ready)
            got.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    out = []
    try:
        for _ in range(count):
            got.clear()
            t0 = time.monotonic()
            src.request_frame()
            if not got.wait(2.0):
                raise RuntimeError("a software trigger gave no frame within 2 s")
            out.append((arrived[-1] - t0) * 1000)
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        src.close()
    return np.array(out)


def reconnect(away_s: float, reconnect_max_s: float) -> float:
    """s from the camera's return to the first new frame."""
    config = CameraConfig(
        name="top",
        source={"type": "gige", "serial": SERIAL, "width": 640, "height": 480, "frame_rate": 30,
                "frame_timeout_s": 1.0},
        reconnect_initial_s=0.5,
        reconnect_max_s=reconnect_max_s,
    )  # fmt: skip
    worker = CameraWorker("bench", config, lambda: None)
    worker.start()
    try:
        _wait(lambda: worker.frames >= 10, 20)
        FAKE.kill()
        _wait(lambda: worker.state == "reconnecting", 15)
        time.sleep(away_s)
        FAKE.start()
        back = time.monotonic()  # start() returns once the camera answers GVCP
        before = worker.frames
        _wait(lambda: worker.frames > before, 60)
        return time.monotonic() - back
    finally:
        worker.stop()


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s")
        time.sleep(0.005)


def main() -> None:
    global FAKE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="acquisition window per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--long-outage", type=float, default=20.0, help="s away in the last reconnect round")
    args = parser.parse_args()
    reason = why_no_fake_gige()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"Python {platform.python_version()}, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with FakeGigeCamera(SERIAL) as fake:
        FAKE = fake
        print("\n1. acquisition, 640x480 Mono8, free-run at 30 fps; alternating with Aravis' own C tool")
        print(
            f"{'round':>5} {'fps':>7} {'% core (gige source)':>21} {'% core (simulator)':>19} "
            f"{'incomplete':>11} {'arv-camera-test fps':>20} {'% core':>7}"
        )
        for r in range(args.rounds):
            fps, cpu, cam, stats = acquisition(args.seconds)
            floor_fps, floor_cpu = aravis_floor(args.seconds)
            print(
                f"{r + 1:>5} {fps:>7.2f} {cpu:>21.2f} {cam:>19.2f} {int(stats['incomplete_frames']):>11}"
                f" {floor_fps:>20.1f} {floor_cpu:>7.2f}"
            )

        print(f"\n2. software trigger to frame ready, {args.triggers} triggers, 640x480 Mono8")
        ms = trigger_latency(args.triggers)
        print(
            f"   p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
            f"max {ms.max():.1f} ms, min {ms.min():.1f} ms (the simulator polls for triggers every 40 ms)"
        )

        print("\n3. reconnect: camera's return (answers GVCP) to the first new frame")
        for cap in (2.0, 10.0):
            aways = (*(3.0, 6.0, 3.0, 6.0)[: max(2, args.rounds + 1)], args.long_outage)
            times = [reconnect(away, cap) for away in aways]
            print(
                f"   reconnect_max_s {cap:>4.0f}: "
                + ", ".join(f"{t:.2f} s (away {a:g} s)" for a, t in zip(aways, times))
                + f"; max {max(times):.2f} s"
            )
    assert not gvcp_answers()


FAKE: FakeGigeCamera

if __name__ == "__main__":
    main()

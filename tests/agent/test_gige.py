"""The `gige` source against Aravis' simulated GigE Vision camera (real GVCP/GVSP on 127.0.0.1), started,
killed and restarted by the tests: frames, pixel formats, triggers, packet loss, reconnects, selection,
`config check`, and an `edge-inspect run` that inspects its frames end to end."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import wait_until, write_site, write_yaml
from fake_gige import HOST, FakeGigeCamera, controller_free, fake_ramp, why_no_fake_gige
from pydantic import ValidationError
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import CameraConfig
from edge_agent.line import CameraWorker
from edge_agent.sources.base import Frame, SourceError
from edge_agent.sources.gige import GigeSource, GigeSourceConfig

REPO = Path(__file__).resolve().parents[2]
SERIAL = "EI0001"
#: exposure 10 ms and gain 0 make the simulator's pattern scale exactly 1 (see fake_gige.fake_ramp)
EXACT = {"exposure_us": 10000, "gain": 0}


@pytest.fixture(scope="module", autouse=True)
def _needs_aravis() -> None:
    reason = why_no_fake_gige()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f".ci/run installs Aravis, yet: {reason}")  # CI must run these, never skip them
    if reason:
        pytest.skip(reason)


@pytest.fixture
def fake_camera() -> Iterator[FakeGigeCamera]:
    with FakeGigeCamera(SERIAL) as camera:
        yield camera


def source(**config: object) -> GigeSource:
    return GigeSource(GigeSourceConfig(**{"address": HOST, **config}), "top")


def frame_id(frame: Frame) -> int:
    return int(frame.source_ref.rsplit("#", 1)[1])


class Reader:
    """Reads a source on its own thread (a triggered camera's `read` waits until a frame comes)."""

    def __init__(self, src: GigeSource) -> None:
        self.src = src
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (frame := self.src.read()) is not None:
                self.frames.put(frame)
        except Exception as exc:
            self.error = exc

    def stop(self) -> None:
        self.src._stop.set()
        self._thread.join(5)
        self.src.close()


def test_free_run_frames_are_the_cameras_pixels(fake_camera: FakeGigeCamera) -> None:
    src = source(width=640, height=480, pixel_format="Mono8", frame_rate=30, **EXACT)
    src.open()
    try:
        frames = [src.read() for _ in range(10)]
    finally:
        src.close()
    ids = [frame_id(f) for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 10
    for frame in frames:
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
        expected, _, _ = fake_ramp(480, 640, frame_id(frame))
        assert np.array_equal(frame.image[..., 0], expected) and np.array_equal(frame.image[..., 2], expected)
    stats = src.stats()
    assert stats["frames"] == 10 and stats["completed_buffers"] >= 10
    assert stats["missing_packets"] == 0 and stats["incomplete_frames"] == 0 and stats["received_packets"] > 0


def test_every_pixel_format_of_the_simulator_converts_right(fake_camera: FakeGigeCamera) -> None:
    """RGB8 gives the simulator's colour for each pattern index (its jet colour map); each Bayer format is
    demosaiced back to that colour. Aravis' simulator (arvfakecamera.c, unchanged upstream) fills
    `BayerRG8` with a B G / G R mosaic and `BayerBG8` with R G / G B: those two come out with red and blue
    exchanged, which shows the converter follows PFNC, not the simulator's labels; GR8 and GB8, which the
    simulator fills as named, match exactly."""

    def grab(fmt: str) -> Frame:
        src = source(width=320, height=240, pixel_format=fmt, **EXACT)
        src.open()
        try:
            return src.read()
        finally:
            src.close()

    rgb = grab("RGB8")
    index, x, y = fake_ramp(240, 320, frame_id(rgb))
    colours = np.zeros((255, 3), np.int32)  # BGR per pattern index, read off the RGB8 frame
    colours[index.ravel()] = rgb.image.reshape(-1, 3)
    assert np.array_equal(rgb.image, colours[index].astype(np.uint8))  # one colour per index
    assert colours[5][0] > 100 and colours[5][2] == 0  # jet: low indices blue ...
    assert colours[250][2] > 100 and colours[250][0] == 0  # ... high ones red (BGR order is right)

    def colour_error(image: np.ndarray, fid: int) -> float:
        idx, _, _ = fake_ramp(240, 320, fid)
        inner = (slice(2, -2), slice(2, -2))
        smooth = ((idx + 3) % 255 > 6)[inner]  # away from the pattern's wrap from 254 to 0
        diff = np.abs(image[inner].astype(np.int32) - colours[idx][inner])[smooth]
        return float(np.median(diff))

    for fmt, swapped in (("BayerGR8", False), ("BayerGB8", False), ("BayerRG8", True), ("BayerBG8", True)):
        frame = grab(fmt)
        image = frame.image[..., ::-1] if swapped else frame.image
        assert colour_error(image, frame_id(frame)) <= 4, fmt
        assert colour_error(image[..., ::-1], frame_id(frame)) > 20, fmt  # the test tells R from B

    mono16 = grab("Mono16")
    idx = (x + y + frame_id(mono16)).astype(np.int64)
    expected = (((256 * idx) % 65535) >> 8).astype(np.uint8)  # 16 significant bits: the top 8 kept
    assert np.array_equal(mono16.image[..., 1], expected)


def test_software_trigger_gives_exactly_one_frame(fake_camera: FakeGigeCamera) -> None:
    src = source(width=320, height=240, pixel_format="Mono8", trigger={"mode": "software"})
    src.open()
    reader = Reader(src)
    try:
        with pytest.raises(queue.Empty):
            reader.frames.get(timeout=0.6)  # triggered: nothing comes on its own
        ids = []
        for _ in range(3):
            src.request_frame()
            ids.append(frame_id(reader.frames.get(timeout=2)))
            with pytest.raises(queue.Empty):
                reader.frames.get(timeout=0.3)  # one trigger, one frame
        assert len(set(ids)) == 3
        stats = src.stats()
        assert stats["software_triggers"] == 3 and stats["frames"] == 3
    finally:
        reader.stop()
    assert reader.error is None


def test_hardware_trigger_waits_for_its_input_line(fake_camera: FakeGigeCamera) -> None:
    """The simulator has no input lines to pulse: this checks the camera is set to wait for Line0 and
    that waiting is not taken for a lost camera."""
    src = source(width=320, height=240, trigger={"mode": "hardware", "line": "Line0"}, frame_timeout_s=0.3)
    src.open()
    reader = Reader(src)
    try:
        assert src._camera.get_string("TriggerMode") == "On"
        assert src._camera.get_string("TriggerSource") == "Line0"
        src.request_frame()  # a line's request does not fire a hardware-triggered camera
        with pytest.raises(queue.Empty):
            reader.frames.get(timeout=1.0)
        assert reader.error is None and src.stats()["software_triggers"] == 0
    finally:
        reader.stop()


def test_a_triggered_line_fires_the_software_trigger_once_per_part(
    tmp_path: Path, tiny_detect_onnx: Path, fake_camera: FakeGigeCamera, agent_factory
) -> None:
    """A `triggered` line over a software-triggered camera: each part makes the camera take exactly one
    picture, taken after the part's trigger."""
    line = {
        "name": "press",
        "cameras": [{"name": "top", "source": {"type": "gige", "address": HOST, "width": 320, "height": 240,
                                               "trigger": {"mode": "software"}}}],
        "trigger": {"type": "triggered", "frame_timeout_s": 3},
        "model": {"path": str(tiny_detect_onnx), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
    }  # fmt: skip
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    runtime = agent.lines["press"]
    wait_until(lambda: runtime.status()["cameras"][0]["state"] == "connected", timeout=15)
    time.sleep(0.5)
    assert runtime.status()["cameras"][0]["frames"] == 0  # nothing until a part asks
    results = [runtime.trigger(f"P-{i}").result(timeout=10) for i in range(4)]
    assert [r.part_id for r in results] == [f"P-{i}" for i in range(4)]
    assert all(r.frames[0].source_ref.startswith(f"gige:{SERIAL}#") for r in results)
    assert len({r.frames[0].source_ref for r in results}) == 4  # a new picture for every part
    camera = runtime.status()["cameras"][0]
    assert camera["transport"]["software_triggers"] == 4 and camera["frames"] == 4 and camera["dropped"] == 0


def test_a_lossy_link_is_counted_and_incomplete_frames_never_inspected() -> None:
    with FakeGigeCamera(SERIAL, loss_per_thousand=2):
        src = source(width=640, height=480, pixel_format="Mono8", frame_rate=30, **EXACT)
        src.open()
        try:
            frames = [src.read() for _ in range(15)]
            stats = src.stats()
        finally:
            src.close()
    for frame in frames:  # every frame handed on is whole: exactly the camera's pixels
        expected, _, _ = fake_ramp(480, 640, frame_id(frame))
        assert np.array_equal(frame.image[..., 0], expected)
    assert stats["missing_packets"] > 0 and stats["incomplete_frames"] > 0
    assert stats["resend_requests"] > 0  # asked for (the simulator does not resend)
    assert stats["incomplete_frames"] == sum(v for k, v in stats.items() if k.startswith("frames_"))


def test_a_camera_another_client_controls_is_reported_then_taken_when_free(
    fake_camera: FakeGigeCamera,
) -> None:
    import gi

    gi.require_version("Aravis", "0.8")
    from gi.repository import Aravis

    other = Aravis.Camera.new(HOST)  # e.g. a vendor's viewer left open: it holds the control channel
    src = source(width=64, height=48)
    with pytest.raises(SourceError, match="another application controls the camera"):
        src.open()
    src.close()
    del other
    assert controller_free()
    src.open()
    try:
        assert src.read().image.shape == (48, 64, 3)
    finally:
        src.close()


def test_killed_camera_is_reconnected_after_it_returns(fake_camera: FakeGigeCamera) -> None:
    changes = []
    config = CameraConfig(
        name="top",
        source={"type": "gige", "serial": SERIAL, "width": 320, "height": 240, "frame_rate": 20,
                "frame_timeout_s": 0.5},
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
    )  # fmt: skip
    worker = CameraWorker("press", config, lambda: changes.append(1))
    worker.start()
    try:
        wait_until(lambda: worker.frames >= 5, timeout=15)
        fake_camera.kill()
        wait_until(lambda: worker.state == "reconnecting", timeout=10)
        assert "no complete frame" in (worker.last_error or "") or "control lost" in (worker.last_error or "")
        time.sleep(1.5)  # a few failed attempts while it is away
        before = worker.frames
        fake_camera.start()
        wait_until(lambda: worker.frames > before + 3, timeout=20)
        assert worker.state == "connected" and worker.reconnects == 1
        assert worker.status()["transport"]["connection_losses"] == 1
    finally:
        worker.stop()


def test_camera_selection_errors_and_config_check(tmp_path: Path, fake_camera: FakeGigeCamera) -> None:
    with pytest.raises(ValidationError, match="use Mono12"):
        GigeSourceConfig(pixel_format="Mono12p")
    with pytest.raises(ValidationError, match="one of serial, user_id, address"):
        GigeSourceConfig(serial="A", address=HOST)

    fake_camera.set_user_id("press-top")
    by_user = GigeSource(GigeSourceConfig(user_id="press-top", width=64, height=48), "top")
    by_user.open()
    try:
        assert by_user.read().source_ref.startswith(f"gige:{SERIAL}#")
    finally:
        by_user.close()

    def check(camera_source: dict) -> tuple[int, str]:
        line = {
            "name": "press",
            "cameras": [{"name": "top", "source": {"type": "gige", **camera_source}}],
            "model": {"path": "missing.onnx"},
        }
        path = write_yaml(tmp_path / "press.yaml", line)
        result = CliRunner().invoke(app, ["config", "check", str(path), "--no-models"])
        return result.exit_code, result.output

    code, out = check({"serial": SERIAL, "pixel_format": "BayerRG8"})
    assert code == 0, out
    code, out = check({"serial": "NOPE"})
    assert code == 1
    found = rf"cameras\[0\]\.source\.serial: no GigE camera with serial 'NOPE'; found: .*{SERIAL} at {HOST}"
    assert re.search(found, out), out
    code, out = check({"serial": SERIAL, "pixel_format": "Mono12"})
    assert code == 1 and "source.pixel_format: the camera offers no PixelFormat Mono12; it offers" in out
    code, out = check({"user_id": "press-top", "trigger": {"mode": "hardware", "line": "Line3"}})
    assert code == 1 and "source.trigger.line: the camera has no trigger input Line3; it has Line0" in out
    code, out = check({"address": "127.0.0.9"})  # nothing answers there
    assert code == 1 and "source.address: the camera at 127.0.0.9 does not answer" in out
    assert all(len(line) < 400 for line in out.splitlines())  # one line each


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_edge_inspect_run_inspects_the_cameras_frames(tmp_path: Path, tiny_detect_onnx: Path) -> None:
    """A real `edge-inspect run` on a lossy simulated camera: parts inspected and journaled, the lost
    packets and incomplete frames in /metrics, a clean stop."""
    line = {
        "name": "press",
        "cameras": [
            {
                "name": "top",
                "reconnect_max_s": 2,
                "source": {"type": "gige", "serial": SERIAL, "width": 640, "height": 480,
                           "pixel_format": "BayerGR8", "frame_rate": 20, **EXACT},
            }
        ],
        "trigger": {"type": "free_run", "max_fps": 10},
        "model": {"path": str(tiny_detect_onnx), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
    }  # fmt: skip
    site = write_site(tmp_path, [line])
    journal = tmp_path / "data" / "journal.sqlite"
    log = tmp_path / "agent.log"
    with FakeGigeCamera(SERIAL, loss_per_thousand=2), log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site), "--quiet"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            url = wait_until(lambda: re.search(r"metrics (http://\S+/metrics)", log.read_text()), timeout=60)
            metrics_url = url.group(1)

            def inspected() -> float:
                text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
                try:
                    return _metric(text, "edge_inspect_results_total", line="press")
                except AssertionError:
                    return 0.0

            cam = {"line": "press", "camera": "top"}

            def transport(stat: str) -> float:
                text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
                return _metric(text, "edge_inspect_camera_transport_total", **cam, stat=stat)

            wait_until(lambda: inspected() >= 10, timeout=60)
            wait_until(lambda: transport("incomplete_frames") > 0, timeout=30)  # the loss shows
            assert transport("missing_packets") + transport("resend_requests") > 0
            assert transport("frames") >= 10
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
            assert _metric(text, "edge_inspect_camera_connected", **cam) == 1.0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output and journal.is_file()

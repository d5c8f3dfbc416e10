"""Aravis' simulated GigE Vision camera (`arv-fake-gv-camera-0.8`, Debian's aravis-tools) for the tests:
started, killed and restarted on 127.0.0.1, speaking real GVCP/GVSP.

GVCP's port (UDP 3956) is fixed by the standard and the simulator binds only to an address an interface
already has, so one simulated camera can run per host at a time: a lock file makes test runs (and the
bench) that run side by side take turns.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

BINARY = "arv-fake-gv-camera-0.8"
HOST = "127.0.0.1"
GVCP_PORT = 3956
LOCK_FILE = Path(tempfile.gettempdir()) / "edge-inspect-fake-gige-3956.lock"
INSTALL = (
    "apt-get install aravis-tools gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev; "
    "pip install -e '.[gige]'"
)


def why_no_fake_gige() -> str | None:
    """Why the simulated-camera tests cannot run here (None: they can)."""
    if shutil.which(BINARY) is None:
        return f"{BINARY} not found ({INSTALL})"
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis  # noqa: F401
    except (ImportError, ValueError) as exc:
        return f"Aravis GObject bindings unavailable: {exc} ({INSTALL})"
    return None


def gvcp_answers(host: str = HOST, timeout: float = 0.2) -> bool:
    """Does a GigE Vision device answer a GVCP READREG (register 0: version) at `host`?"""
    packet = struct.pack(">BBHHHI", 0x42, 0x01, 0x0080, 4, 1, 0x0000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, (host, GVCP_PORT))
            data, _ = sock.recvfrom(64)
        except OSError:  # timeout, or ICMP port unreachable
            return False
    return len(data) >= 8 and struct.unpack(">HH", data[:4]) == (0x0000, 0x0081)


def controller_free(host: str = HOST, timeout: float = 10.0) -> bool:
    """Wait until no client holds the camera's control channel (CCP register 0x0A00 reads 0): a client
    that died without letting go holds it until the camera's heartbeat timeout (3 s by default)."""
    packet = struct.pack(">BBHHHI", 0x42, 0x01, 0x0080, 4, 2, 0x0A00)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                sock.sendto(packet, (host, GVCP_PORT))
                data, _ = sock.recvfrom(64)
                if len(data) >= 12 and struct.unpack(">I", data[8:12])[0] == 0:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
    return False


class FakeGigeCamera:
    """One simulated camera; `loss_per_thousand` drops that share of GVSP packets (its -r option)."""

    def __init__(self, serial: str = "EI0001", loss_per_thousand: float = 0.0) -> None:
        self.serial = serial
        self.loss_per_thousand = loss_per_thousand
        self.proc: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    def __enter__(self) -> FakeGigeCamera:
        self._lock_fd = os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o666)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # another run's camera holds UDP 3956: wait our turn
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def start(self, timeout: float = 10.0) -> FakeGigeCamera:
        if gvcp_answers():
            raise RuntimeError(f"another GigE Vision device already answers on {HOST}:{GVCP_PORT}")
        args = [BINARY, "-i", HOST, "-s", self.serial]
        if self.loss_per_thousand:
            args += ["-r", str(self.loss_per_thousand)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not gvcp_answers():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{BINARY} exited with {self.proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{BINARY} did not answer GVCP within {timeout} s")
        return self

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream, as a pulled cable or a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def set_user_id(self, name: str) -> None:
        """Write the device's user-defined name (what DeviceUserID sets on a real camera) through GVCP,
        as a camera vendor's tool does: bootstrap register 0x00E8, 16 bytes."""
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis

        camera = Aravis.Camera.new(HOST)
        device = camera.get_device()
        raw = name.encode().ljust(16, b"\0")[:16]
        for offset in range(0, 16, 4):
            device.write_register(0x00E8 + offset, int.from_bytes(raw[offset : offset + 4], "big"))
        del device, camera  # closes the control channel: the next client may take it


def fake_ramp(height: int, width: int, frame_id: int) -> tuple:
    """The simulator's pattern index per pixel (arvfakecamera.c, arv_fake_camera_diagonal_ramp):
    (x + y + frame_id) % 255, times a scale of 1 + gain + log10(exposure_us / 10000), which is 1 at
    gain 0 and 10 ms exposure."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    return (x + y + frame_id) % 255, x, y

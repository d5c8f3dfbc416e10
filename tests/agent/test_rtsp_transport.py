"""RTSP transport chosen in YAML reaches FFmpeg: a minimal RTSP server on 127.0.0.1 answers OPTIONS and
DESCRIBE and records the Transport that OpenCV's FFmpeg asks for in SETUP. And the open timeout holds."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from edge_agent.sources.base import SourceError
from edge_agent.sources.camera import CameraSource, CameraSourceConfig, ffmpeg_capture_options

SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 26\r\na=control:track1\r\n"
)


class FakeRtspServer:
    """Answers OPTIONS and DESCRIBE (one MJPEG track), records SETUP's Transport header, refuses SETUP."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.transports: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(15)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(15)
            data = b""
            while self.answer:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    head, data = data.split(b"\r\n\r\n", 1)
                    lines = head.decode().split("\r\n")
                    method = lines[0].split(" ")[0]
                    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                    cseq = headers.get("CSeq", "0")
                    if method == "OPTIONS":
                        public = "OPTIONS, DESCRIBE, SETUP, PLAY"
                        reply = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: {public}\r\n\r\n"
                    elif method == "DESCRIBE":
                        reply = (
                            f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                            f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
                        )
                    else:
                        self.transports.append(headers.get("Transport", ""))
                        reply = f"RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n"
                    conn.sendall(reply.encode())
            time.sleep(10)  # answer=False: accept and stay silent

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(("transport", "expected"), [("udp", "RTP/AVP/UDP"), ("tcp", "RTP/AVP/TCP")])
def test_transport_from_yaml_reaches_ffmpeg(transport: str, expected: str) -> None:
    server = FakeRtspServer()
    config = CameraSourceConfig(
        device=f"rtsp://127.0.0.1:{server.port}/live",
        backend="ffmpeg",
        transport=transport,
        open_timeout_s=5,
    )
    try:
        with pytest.raises(SourceError, match="cannot open"):
            CameraSource(config, "cam").open()  # the fake server refuses SETUP: no stream, but we saw it
        assert server.transports, "FFmpeg never got to SETUP"
        assert server.transports[0].startswith(expected), server.transports
    finally:
        server.close()


def test_open_timeout_holds_against_a_silent_server() -> None:
    server = FakeRtspServer(answer=False)
    config = CameraSourceConfig(
        device=f"rtsp://127.0.0.1:{server.port}/live", backend="ffmpeg", transport="tcp", open_timeout_s=1.5
    )
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError, match="cannot open"):
            CameraSource(config, "cam").open()
        assert time.monotonic() - t0 < 8  # bounded by the setting (FFmpeg rounds it), not FFmpeg's 30 s+
    finally:
        server.close()


def test_options_keep_what_the_environment_sets() -> None:
    assert ffmpeg_capture_options("udp", None) == "rtsp_transport;udp"
    assert (
        ffmpeg_capture_options("udp", "stimeout;1000|rtsp_transport;tcp")
        == "stimeout;1000|rtsp_transport;udp"
    )
    assert ffmpeg_capture_options(None, "x;1") == "x;1"

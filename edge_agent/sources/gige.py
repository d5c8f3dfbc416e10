"""`gige` source: a GigE Vision camera over the real protocol (GVCP control, GVSP stream) through Aravis.

Aravis is the open-source GigE Vision / USB3 Vision library behind Debian's `gir1.2-aravis-0.8`; we reach
it through its GObject bindings (PyGObject, the `[gige]` extra; see docs/gige.md for the install). Unlike
the `genicam` source it needs no vendor GenTL producer.

- The camera is picked by `serial`, `user_id` (the DeviceUserID an integrator wrote into it) or
  `address` (IP or host name; no discovery broadcast needed), else the first camera found.
- Pixel formats Mono8/10/12/14/16, Bayer RG/GR/GB/BG 8/10/12/16 and RGB8/BGR8 become 8-bit BGR
  (`pixel_formats.convert_buffer`); exposure, gain, frame rate and any other GenICam feature come from
  the YAML.
- `trigger.mode`: `free_run` (the camera's own frame rate), `software` (one TriggerSoftware per frame
  the line asks for: a triggered line fires it on each part, a free-run line whenever it is ready for
  the next frame) or `hardware` (TriggerSource = an input line, e.g. Line0 wired to the PLC or a
  light barrier).
- Incomplete frames (missing packets) are never inspected: they are counted, with the stream's packet
  counters (received, missing, resend requests, resent ...), and exported in /metrics.
- A camera that stops answering (heartbeat lost, no frame in free-run for `frame_timeout_s`) raises
  `SourceError`; the line's camera worker re-opens it with capped back-off.

Example line YAML:

    cameras:
      - name: top
        reconnect_max_s: 2
        source:
          type: gige
          serial: "21345678"
          pixel_format: BayerRG8
          exposure_us: 3000
          gain: 2.0
          frame_rate: 30
          trigger: {mode: hardware, line: Line0, activation: RisingEdge}
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.sources.base import Frame, Source, SourceError
from edge_agent.sources.pixel_formats import SUPPORTED_FORMATS, convert_buffer, pfnc_name

log = logging.getLogger(__name__)

ARAVIS_INSTALL_HINT = (
    "the gige source needs Aravis 0.8 and its Python bindings: apt-get install gir1.2-aravis-0.8 "
    "libgirepository1.0-dev libcairo2-dev, then pip install 'edge-inspect[gige]' (docs/gige.md)"
)

#: discovery and open go through Aravis' process-wide device list: one at a time
_ARAVIS_LOCK = threading.Lock()


def load_aravis() -> Any:
    """The Aravis module (GObject bindings), or SourceError saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:  # ValueError: gi is there, the Aravis typelib is not
        raise SourceError(f"{ARAVIS_INSTALL_HINT} ({exc})") from exc
    return Aravis


class GigeTriggerConfig(BaseModel):
    """How the camera starts a frame."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["free_run", "software", "hardware"] = Field(
        "free_run",
        description="free_run: the camera's frame rate; software: a TriggerSoftware command per frame the "
        "line asks for; hardware: an input line (PLC, light barrier)",
    )
    line: str = Field("Line0", description="hardware: the TriggerSource input line (Line0, Line1, ...)")
    activation: Literal["RisingEdge", "FallingEdge", "AnyEdge", "LevelHigh", "LevelLow"] = "RisingEdge"
    delay_us: float | None = Field(None, ge=0, description="hardware: TriggerDelay after the edge")


class GigeSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["gige"] = "gige"
    serial: str | None = Field(None, description="pick the camera by serial number")
    user_id: str | None = Field(None, description="... or by its DeviceUserID (user-defined name)")
    address: str | None = Field(None, description="... or by IP address / host name (no discovery)")
    pixel_format: str | None = Field(
        None,
        description=f"PixelFormat to set (default: the camera's own); one of {', '.join(SUPPORTED_FORMATS)}",
    )
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    offset_x: int = Field(0, ge=0)
    offset_y: int = Field(0, ge=0)
    exposure_us: float | None = Field(None, gt=0, description="ExposureTime in µs (auto exposure off)")
    gain: float | None = Field(None, ge=0, description="Gain (dB on most cameras; auto gain off)")
    frame_rate: float | None = Field(None, gt=0, description="AcquisitionFrameRate in free-run")
    trigger: GigeTriggerConfig = Field(default_factory=GigeTriggerConfig)
    packet_size: int | None = Field(
        None, ge=576, le=16000, description="GVSP packet size; default: the largest the link passes"
    )
    packet_resend: bool = Field(True, description="ask the camera to resend missing packets")
    buffers: int = Field(8, ge=2, le=256, description="frame buffers queued in the stream")
    frame_timeout_s: float = Field(
        3.0,
        gt=0,
        description="free-run: no complete frame this long = camera lost (at least 3 frame periods)",
    )
    features: dict[str, bool | int | float | str] = Field(
        default_factory=dict, description="other GenICam features, set by name after the settings above"
    )

    @field_validator("pixel_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is None or value in SUPPORTED_FORMATS:
            return value
        from contract.yamlconf import suggest

        unpacked = value.rstrip("p").replace("Packed", "")
        if unpacked != value and unpacked in SUPPORTED_FORMATS:
            raise ValueError(f"{value} packs pixels across bytes; use {unpacked} (one pixel per 16-bit word)")
        hint = suggest(value, SUPPORTED_FORMATS)
        raise ValueError(
            f"pixel format {value!r} is not supported"
            + (f" (did you mean {hint!r}?)" if hint else f"; supported: {', '.join(SUPPORTED_FORMATS)}")
        )

    @model_validator(mode="after")
    def _one_selector(self) -> GigeSourceConfig:
        given = [k for k in ("serial", "user_id", "address") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"pick the camera by one of serial, user_id, address (got {', '.join(given)})")
        return self


def describe_config(config: GigeSourceConfig) -> str:
    if config.serial:
        return f"gige serial {config.serial}"
    if config.user_id:
        return f"gige user id {config.user_id}"
    if config.address:
        return f"gige {config.address}"
    return "gige (first camera found)"


def list_cameras(aravis: Any) -> list[dict[str, str]]:
    """Every camera Aravis finds (a discovery broadcast on every interface, about 1 s)."""
    aravis.update_device_list()
    return [
        {
            "id": aravis.get_device_id(i) or "",
            "serial": aravis.get_device_serial_nbr(i) or "",
            "address": aravis.get_device_address(i) or "",
            "model": f"{aravis.get_device_vendor(i) or ''} {aravis.get_device_model(i) or ''}".strip(),
            "protocol": aravis.get_device_protocol(i) or "",
        }
        for i in range(aravis.get_n_devices())
    ]


def _found(cameras: list[dict[str, str]]) -> str:
    if not cameras:
        return "found none (is it powered, on this subnet, and no firewall on UDP 3956?)"
    return "found: " + "; ".join(
        f"{c['model']} serial {c['serial']} at {c['address'] or '?'}" for c in cameras
    )


class GigeOpenError(SourceError):
    """The camera named in the YAML cannot be found or opened; `key` is the YAML key to look at."""

    def __init__(self, message: str, key: tuple[str, ...]) -> None:
        super().__init__(message)
        self.key = key


def open_camera(aravis: Any, config: GigeSourceConfig) -> Any:
    """Find and open the camera `config` names (an `Aravis.Camera`); GigeOpenError saying what was wrong,
    with what was found instead."""
    with _ARAVIS_LOCK:  # Aravis' device list is process-wide
        if config.address:
            device_id, key = config.address, ("address",)
        elif config.serial:
            cameras = list_cameras(aravis)
            match = [c for c in cameras if c["serial"] == config.serial]
            if not match:
                raise GigeOpenError(
                    f"no GigE camera with serial {config.serial!r}; {_found(cameras)}", ("serial",)
                )
            device_id, key = match[0]["id"], ("serial",)
        elif config.user_id:
            # Aravis keys its device list by user id too; opening one it has not listed yet made a stream
            # that received nothing from the simulated camera (Aravis 0.8.26), so list first
            list_cameras(aravis)
            device_id, key = config.user_id, ("user_id",)
        else:
            cameras = list_cameras(aravis)
            if not cameras:
                raise GigeOpenError(f"no GigE camera: {_found(cameras)}", ("type",))
            device_id, key = cameras[0]["id"], ("type",)
        try:
            return aravis.Camera.new(device_id)
        except Exception as exc:  # GLib.GError: not found, no answer, access denied
            if config.address:
                msg = f"the camera at {config.address} does not answer (GVCP, UDP 3956): {_gerror_text(exc)}"
            elif config.user_id:
                msg = f"no GigE camera with user id {config.user_id!r}; {_found(list_cameras(aravis))}"
            else:
                msg = f"{describe_config(config)}: cannot open: {_gerror_text(exc)}"
            raise GigeOpenError(msg, key) from exc


def _gerror_text(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)


class GigeSource(Source):
    live = True

    def __init__(self, config: GigeSourceConfig, camera: str, stop_event: threading.Event | None = None):
        self.config = config
        self.camera = camera
        self._stop = stop_event or threading.Event()
        self._aravis: Any = None
        self._camera: Any = None
        self._stream: Any = None
        self._control_lost_handler: tuple[Any, int] | None = None
        self._lost: str | None = None
        self._lock = threading.Lock()  # the stream's counters are read by /metrics while we close it
        self._trigger_lock = threading.Lock()
        self._index = 0
        self._last_frame = 0.0
        self._serial = config.serial or config.user_id or config.address or "first"
        #: counters of streams already closed (a reconnect starts a new stream at 0)
        self._totals: dict[str, float] = {}
        self._own: dict[str, float] = {
            "frames": 0,
            "incomplete_frames": 0,
            "software_triggers": 0,
            "connection_losses": 0,
        }

    def describe(self) -> str:
        return describe_config(self.config)

    # -- open ----------------------------------------------------------------------------------------

    def open(self) -> None:
        aravis = self._aravis = self._aravis or load_aravis()
        camera = open_camera(aravis, self.config)
        device = camera.get_device()
        if hasattr(device, "is_controller") and not device.is_controller():
            raise SourceError(
                f"{self.describe()}: another application controls the camera (a vendor's viewer, another "
                "agent, or a client that died: the camera frees itself after its heartbeat timeout, a few s)"
            )
        try:
            self._serial = camera.get_device_serial_number() or self._serial
            self._configure(camera)
            stream = self._start_stream(camera)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.describe()}: {_gerror_text(exc)}") from exc
        self._lost = None
        self._control_lost_handler = (device, device.connect("control-lost", self._on_control_lost))
        self._camera, self._stream = camera, stream
        self._last_frame = time.monotonic()
        try:
            camera.start_acquisition()
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.describe()}: cannot start acquisition: {_gerror_text(exc)}") from exc

    def _configure(self, camera: Any) -> None:
        cfg = self.config
        aravis = self._aravis
        with contextlib.suppress(Exception):  # a camera left streaming by a crashed agent
            camera.stop_acquisition()
        check = check_camera_offers(camera, cfg)
        if check is not None:
            raise SourceError(f"{self.describe()}: {check[1]}")
        if cfg.pixel_format:
            camera.set_pixel_format_from_string(cfg.pixel_format)
        if cfg.width or cfg.height or cfg.offset_x or cfg.offset_y:
            _x, _y, w, h = camera.get_region()
            camera.set_region(cfg.offset_x, cfg.offset_y, cfg.width or w, cfg.height or h)
        if cfg.exposure_us is not None:
            if camera.is_exposure_auto_available():
                camera.set_exposure_time_auto(aravis.Auto.OFF)
            camera.set_exposure_time(cfg.exposure_us)
        if cfg.gain is not None:
            if camera.is_gain_auto_available():
                camera.set_gain_auto(aravis.Auto.OFF)
            camera.set_gain(cfg.gain)
        if cfg.frame_rate is not None:
            camera.set_frame_rate(cfg.frame_rate)  # also leaves FrameStart triggering off (set below)
        trig = cfg.trigger
        if trig.mode == "free_run":
            camera.clear_triggers()
        elif trig.mode == "software":
            camera.set_trigger("Software")
        else:
            camera.set_trigger(trig.line)
            if trig.activation != "RisingEdge":
                camera.set_string("TriggerActivation", trig.activation)
            if trig.delay_us is not None:
                camera.set_float("TriggerDelay", trig.delay_us)
        for name, value in cfg.features.items():
            try:
                if isinstance(value, bool):
                    camera.set_boolean(name, value)
                elif isinstance(value, int):
                    camera.set_integer(name, value)
                elif isinstance(value, float):
                    camera.set_float(name, value)
                else:
                    camera.set_string(name, value)
            except Exception as exc:
                raise SourceError(
                    f"{self.describe()}: feature {name} = {value!r}: {_gerror_text(exc)}"
                ) from exc
        if camera.is_gv_device():
            if cfg.packet_size:
                camera.gv_set_packet_size(cfg.packet_size)
            else:
                camera.gv_auto_packet_size()
        camera.set_acquisition_mode(aravis.AcquisitionMode.CONTINUOUS)

    def _start_stream(self, camera: Any) -> Any:
        aravis = self._aravis
        stream = camera.create_stream(None, None)
        if stream is None:
            raise SourceError(f"{self.describe()}: cannot open the stream channel")
        if isinstance(stream, aravis.GvStream):
            resend = (
                aravis.GvStreamPacketResend.ALWAYS
                if self.config.packet_resend
                else (aravis.GvStreamPacketResend.NEVER)
            )
            stream.set_property("packet-resend", resend)
        payload = camera.get_payload()
        for _ in range(self.config.buffers):
            stream.push_buffer(aravis.Buffer.new_allocate(payload))
        return stream

    def _on_control_lost(self, _device: Any) -> None:  # Aravis' heartbeat thread
        self._lost = "control lost (the camera stopped answering or was restarted)"

    # -- frames --------------------------------------------------------------------------------------

    def read(self) -> Frame | None:
        if self._stream is None:
            raise SourceError(f"{self.describe()}: not open")
        aravis = self._aravis
        cfg = self.config
        timeout_s = cfg.frame_timeout_s
        if cfg.frame_rate:
            timeout_s = max(timeout_s, 3.0 / cfg.frame_rate)
        while True:
            if self._stop.is_set():
                return None
            if self._lost:
                self._own["connection_losses"] += 1
                raise SourceError(f"{self.describe()}: {self._lost}")
            buffer = self._stream.timeout_pop_buffer(100_000)  # µs: short, to see stop and loss
            if buffer is None:
                idle = time.monotonic() - self._last_frame
                if cfg.trigger.mode == "free_run" and idle > timeout_s:
                    self._lost = f"no complete frame for {idle:.1f} s"
                continue
            t0 = time.perf_counter()  # capture time: copying and converting, not waiting for the camera
            try:
                status = buffer.get_status()
                if status != aravis.BufferStatus.SUCCESS:
                    self._own["incomplete_frames"] += 1
                    key = f"frames_{status.value_nick.replace('-', '_')}"
                    self._own[key] = self._own.get(key, 0) + 1
                    continue
                data = buffer.get_data()
                width, height = buffer.get_image_width(), buffer.get_image_height()
                fmt = pfnc_name(buffer.get_image_pixel_format())
                frame_id = buffer.get_frame_id()
            finally:
                self._stream.push_buffer(buffer)
            try:
                raw = np.frombuffer(data, np.uint8)
                image = convert_buffer(raw, width, height, fmt)
            except (SourceError, ValueError) as exc:  # ValueError: the buffer does not hold w x h pixels
                raise SourceError(f"{self.describe()}: {exc}") from exc
            if not image.flags.writeable:  # BGR8 is a view of the immutable buffer copy
                image = image.copy()
            self._last_frame = time.monotonic()
            self._index += 1
            self._own["frames"] += 1
            return Frame(
                image=image,
                camera=self.camera,
                source_ref=f"gige:{self._serial}#{frame_id}",
                index=self._index,
                capture_ms=(time.perf_counter() - t0) * 1000,
            )

    def request_frame(self) -> None:
        if self.config.trigger.mode != "software" or self._camera is None or self._lost:
            return
        with self._trigger_lock:
            try:
                self._camera.software_trigger()
                self._own["software_triggers"] += 1
            except Exception as exc:  # the heartbeat or the frame timeout will say the camera is gone
                log.warning("%s: software trigger failed: %s", self.describe(), _gerror_text(exc))

    # -- counters, close -----------------------------------------------------------------------------

    def _stream_counters(self) -> dict[str, float]:
        stream = self._stream
        if stream is None:
            return {}
        out: dict[str, float] = {}
        if hasattr(stream, "get_n_infos"):  # Aravis >= 0.8.11: every counter by name
            for i in range(stream.get_n_infos()):
                name = stream.get_info_name(i)
                out[name.removeprefix("n_")] = float(stream.get_info_uint64(i))
        else:
            completed, failures, underruns = stream.get_statistics()[-3:]
            out.update(completed_buffers=completed, failures=failures, underruns=underruns)
        return out

    def stats(self) -> dict[str, float]:
        with self._lock:
            current = self._stream_counters()
            totals = {k: self._totals.get(k, 0.0) + current.get(k, 0.0) for k in {*self._totals, *current}}
        return {**totals, **self._own}

    def close(self) -> None:
        camera, lost = self._camera, self._lost
        if camera is not None and not lost:
            with contextlib.suppress(Exception):  # gone already: nothing to stop
                camera.stop_acquisition()
        with self._lock:
            for key, value in self._stream_counters().items():
                self._totals[key] = self._totals.get(key, 0.0) + value
            self._stream = None
        if self._control_lost_handler is not None:  # an old heartbeat must not mark the next connection lost
            device, handler = self._control_lost_handler
            device.disconnect(handler)
            self._control_lost_handler = None
        self._camera = None  # dropping the last reference closes the stream and the control channel


def _offered(camera: Any) -> list[str]:
    try:
        return list(camera.dup_available_pixel_formats_as_strings() or [])
    except Exception:
        return []


def check_camera_offers(camera: Any, config: GigeSourceConfig) -> tuple[tuple[str, ...], str] | None:
    """What the open camera cannot do of what `config` asks (key path, one-line message), or None."""
    if config.pixel_format:
        offered = _offered(camera)
        if offered and config.pixel_format not in offered:
            usable = [f for f in offered if f in SUPPORTED_FORMATS]
            return ("pixel_format",), (
                f"the camera offers no PixelFormat {config.pixel_format}; it offers {', '.join(offered)}"
                + (f" (of which we read {', '.join(usable)})" if usable != offered else "")
            )
    trig = config.trigger
    if trig.mode == "software" and not camera.is_software_trigger_supported():
        return ("trigger", "mode"), "the camera has no software trigger (TriggerSoftware)"
    if trig.mode == "hardware":
        try:
            sources = list(camera.dup_available_trigger_sources() or [])
        except Exception:
            sources = []
        if sources and trig.line not in sources:
            return (
                "trigger",
                "line",
            ), f"the camera has no trigger input {trig.line}; it has {', '.join(sources)}"
    for name in config.features:
        if not camera.is_feature_available(name):
            return ("features", name), f"the camera has no feature {name}"
    if not config.pixel_format:
        current = camera.get_pixel_format_as_string()
        if current not in SUPPORTED_FORMATS:
            usable = [f for f in _offered(camera) if f in SUPPORTED_FORMATS]
            return ("pixel_format",), (
                f"the camera sends {current}, which is not supported; "
                f"set pixel_format to one of {', '.join(usable)}"
            )
    return None


def check_gige(config: GigeSourceConfig) -> tuple[tuple[str, ...], str] | None:
    """`config check`: find and open the camera, see that it offers what the YAML asks; (key path,
    one-line message) of the first problem, or None."""
    try:
        aravis = load_aravis()
        camera = open_camera(aravis, config)
    except GigeOpenError as exc:
        return exc.key, str(exc)
    except SourceError as exc:
        return ("type",), str(exc)
    problem = check_camera_offers(camera, config)
    if problem is None and not config.pixel_format:
        current = camera.get_pixel_format_as_string()
        if current not in SUPPORTED_FORMATS:
            problem = (
                ("pixel_format",),
                f"the camera sends {current}, which is not supported; set pixel_format",
            )
    return problem

"""A fake of picamera2 and libcamera's Python API, fed by a device fixture directory.

It follows picamera2 v0.3.x (raspberrypi/picamera2: picamera2.py, controls.py, request.py,
job.py, encoders/__init__.py, platform.py) and libcamera v0.7.1's Raspberry Pi pipeline
(src/ipa/rpi/common/ipa_base.cpp, src/libcamera/pipeline/rpi/common/pipeline_base.cpp), not
what the agent expects:

- `camera_controls` holds the fixture's before-configure dump (placeholders such as ScalerCrop
  ((0, 0, 0, 0), (65535, ...), (0, 0, 0, 0))) until `configure()`, then the after-configure dump,
  its ScalerCrop default recomputed for the configured size the way the pipeline does
  (the mode's crop bounded to the stream's aspect ratio, centred).
- Controls are validated as picamera2's Controls does ("Control X is not advertised by
  libcamera"), FrameRate is turned into FrameDurationLimits, and controls apply once, to the next
  request. libcamera's state machine is modelled (IpaBase::applyControls): AeEnable sets both
  exposure modes unless ExposureTimeMode/AnalogueGainMode come with it; picamera2 adds those
  modes for a non-zero ExposureTime/AnalogueGain; AwbEnable first, then a non-zero ColourGains
  makes white balance manual; LensPosition moves the lens only in AfMode 0; rpi::ScalerCrops
  wins over ScalerCrop. `state` is what the camera would do.
- configure() on a PiSP (Pi 5) sets ScalerCrops from camera_controls, as picamera2 does.
- `make_array("main")` is YUV420 as (height * 3 / 2) rows of the stride, padding included
  (filled with 0xEE so that a caller that keeps it shows a band); so is `make_array("lores")`
  (picamera2's request.py reshapes every YUV420 stream that way). A `lores` stream is made as
  picamera2's create_video_configuration makes it (format YUV420, the main size unless given,
  preserve_ar False, sides made even by align_stream(optimal=False)), refused as its
  check_camera_config refuses it ("lores stream dimensions may not exceed main stream"; on VC4
  "lores stream must be YUV"), and given the ISP's 64-byte-aligned stride like main.
- `capture_request(wait=False)` returns a Job that completes on the next frame; no frame comes
  while the camera is stopped, or while `frames_stalled` is set (a restart, a loose cable).
- picamera2.encoders.H264Encoder is the V4L2 hardware encoder on VC4 (Pi 4), which refuses
  frames over 1920x1080, and LibavH264Encoder (frame rate 30 unless told) on PiSP (Pi 5).
- `global_camera_info()` lists USB cameras too (libcamera's uvcvideo pipeline), sorted after
  the CSI ones as picamera2 sorts them.
"""

from __future__ import annotations

import json
import sys
import threading
import types
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # tests/test_pi_image.py installs this module where pytest is not
    import pytest

DEVICES = Path(__file__).resolve().parent / "fixtures" / "devices"
USB_WEBCAM_INFO = {
    "Model": "HD Pro Webcam C920",
    "Location": 2,
    "Id": "/base/scb/pcie@7d500000/pci@0,0/usb@0,0-1.2:1.0-046d:082d",
}


def _tuples(value: Any) -> Any:
    """JSON arrays back into the tuples libcamera's conversions give."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


@dataclass
class Picamera2Fixture:
    """One camera's dumps, as `camera-agent doctor --dump` writes them (picamera2.json)."""

    name: str
    platform: str  # "vc4" (Pi 4 and earlier) or "pisp" (Pi 5)
    global_camera_info: list[dict[str, Any]]
    camera_properties: dict[str, Any]
    sensor_modes: list[dict[str, Any]]
    configuration: dict[str, Any]
    before: dict[str, tuple[Any, Any, Any]]
    after: dict[str, tuple[Any, Any, Any]]

    @classmethod
    def load(cls, directory: Path) -> Picamera2Fixture:
        body = json.loads((directory / "picamera2.json").read_text())
        return cls(
            directory.name,
            body["platform"],
            body["global_camera_info"],
            _tuples(body["camera_properties"]),
            _tuples(body["sensor_modes"]),
            body["configuration"],
            _tuples(body["camera_controls_before"]),
            _tuples(body["camera_controls_after"]),
        )


def picamera2_fixtures() -> list[Picamera2Fixture]:
    return [
        Picamera2Fixture.load(d)
        for d in sorted(DEVICES.iterdir())
        if (d / "picamera2.json").exists()
    ]


class Platform(Enum):
    VC4 = 0
    PISP = 1


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip, self.vflip, self.transpose = hflip, vflip, transpose


class _Encoder:
    """What the encoders share: the output they feed, and their size once started."""

    max_size: ClassVar[tuple[int, int] | None] = None

    def __init__(self) -> None:
        self.output: FfmpegOutput | None = None
        self.size: tuple[int, int] | None = None

    def check(self, size: tuple[int, int]) -> None:
        limit = self.max_size
        if limit is not None and (size[0] > limit[0] or size[1] > limit[1]):
            # bcm2835-codec refuses the format: picamera2's V4L2Encoder raises from VIDIOC_S_FMT.
            raise RuntimeError(f"VIDIOC_S_FMT failed: {size[0]}x{size[1]} exceeds the encoder")
        self.size = size


class V4l2H264Encoder(_Encoder):
    """picamera2.encoders.h264_encoder.H264Encoder (VC4 hardware)."""

    max_size = (1920, 1080)

    def __init__(self, bitrate: int | None = None, repeat: bool = True,
                 iperiod: int | None = None, framerate: float | None = None,
                 enable_sps_framerate: bool = False, qp: int | None = None,
                 profile: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod
        self.framerate = framerate  # only written into the SPS; frames come at the camera's rate


class LibavH264Encoder(_Encoder):
    """picamera2.encoders.libav_h264_encoder.LibavH264Encoder (software, the Pi 5's)."""

    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int = 30,
                 framerate: float = 30, qp: int | None = None,
                 profile: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod
        self.framerate = framerate  # the output stream's time base: frames are stamped with it


class FfmpegOutput:
    def __init__(self, output_filename: str, audio: bool = False, pts: Any = None) -> None:
        self.output_filename = output_filename
        self.error_callback: Any = None
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False


class _Array:
    """numpy's view of a YUV420 buffer: shape (rows, stride), bytes with the row padding."""

    def __init__(self, width: int, height: int, stride: int) -> None:
        self.shape = (height * 3 // 2, stride)
        self._width, self._height, self._stride = width, height, stride

    def tobytes(self) -> bytes:
        w, h, s = self._width, self._height, self._stride
        luma = b"".join(
            bytes((x + y) % 200 + 16 for x in range(w)) + b"\xee" * (s - w) for y in range(h)
        )
        chroma_row = bytes([128]) * (w // 2) + b"\xee" * ((s - w) // 2)
        return luma + chroma_row * h


class CompletedRequest:
    def __init__(self, camera: Picamera2) -> None:
        self._camera = camera
        self.released = False

    def make_array(self, name: str) -> _Array:
        stream = self._camera.camera_config.get(name)
        if stream is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        width, height = stream["size"]
        return _Array(width, height, stream["stride"])

    def release(self) -> None:
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True
        self._camera.held_requests.discard(self)


class Job:
    """picamera2.job.Job: a concurrent.futures.Future underneath."""

    def __init__(self, metadata: bool = False) -> None:
        self.metadata = metadata  # capture_metadata's job, not capture_request's
        self._future: Future[Any] = Future()
        self._future.set_running_or_notify_cancel()

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.set_exception(CancelledError())


@dataclass
class CameraState:
    """What the camera does, as libcamera's Raspberry Pi IPA would have it."""

    exposure_auto: bool = True
    gain_auto: bool = True
    exposure_time: int | None = None
    analogue_gain: float | None = None
    awb_auto: bool = True
    colour_gains: tuple[float, float] | None = None
    af_mode: int = 0
    lens_position: float | None = None
    crop: tuple[int, int, int, int] | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    # The last value of every other control a request carried (Brightness, FrameDurationLimits...).
    others: dict[str, Any] = field(default_factory=dict)

    def apply(self, controls: dict[str, Any]) -> None:
        self.applied.append(dict(controls))
        self.others.update(controls)
        if "AeEnable" in controls:  # libcamera Camera::patchControlList
            controls.setdefault("ExposureTimeMode", 0 if controls["AeEnable"] else 1)
            controls.setdefault("AnalogueGainMode", 0 if controls["AeEnable"] else 1)
        if "ExposureTimeMode" in controls:
            self.exposure_auto = controls["ExposureTimeMode"] == 0
        if "AnalogueGainMode" in controls:
            self.gain_auto = controls["AnalogueGainMode"] == 0
        if "ExposureTime" in controls and not self.exposure_auto:
            self.exposure_time = controls["ExposureTime"]
        if "AnalogueGain" in controls and not self.gain_auto:
            self.analogue_gain = controls["AnalogueGain"]
        if "AwbEnable" in controls:
            self.awb_auto = bool(controls["AwbEnable"])
        if "ColourGains" in controls:
            red, blue = controls["ColourGains"]
            self.awb_auto = not (red and blue)
            self.colour_gains = None if self.awb_auto else (red, blue)
        if "AfMode" in controls:
            self.af_mode = controls["AfMode"]
        if "LensPosition" in controls and self.af_mode == 0:
            self.lens_position = controls["LensPosition"]
        if "ScalerCrops" in controls:
            self.crop = tuple(controls["ScalerCrops"][0])
        elif "ScalerCrop" in controls:
            self.crop = tuple(controls["ScalerCrop"])


# What the auto algorithms settle on in the fake's scene (any plausible values would do).
AUTO_EXPOSURE_US, AUTO_GAIN, AUTO_COLOUR_GAINS, AUTO_LENS_POSITION = 10000, 2.0, (1.9, 1.6), 2.5
_PLAIN_METADATA = ("Brightness", "Contrast", "Saturation", "Sharpness", "ExposureValue")


def _bounded_to_aspect(size: tuple[int, int], ratio: tuple[int, int]) -> tuple[int, int]:
    """libcamera Size::boundedToAspectRatio."""
    width, height = size
    r1, r2 = width * ratio[1], ratio[0] * height
    return (r2 // ratio[1], height) if r1 > r2 else (width, r1 // ratio[0])


class Picamera2:
    fixture: ClassVar[Picamera2Fixture]
    usb_cameras: ClassVar[list[dict[str, Any]]] = []
    acquired: ClassVar[set[int]] = set()  # libcamera lets one process hold a camera

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        cameras = [*Picamera2.fixture.global_camera_info, *Picamera2.usb_cameras]
        numbered = [{**c, "Num": i} for i, c in enumerate(cameras)]
        return sorted(numbered, key=lambda c: ("/usb" not in c["Id"], c["Id"]), reverse=True)

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        info = self.global_camera_info()[camera_num]  # IndexError, as picamera2 raises
        if "/usb" in info["Id"]:
            raise RuntimeError("the fake opens only the fixture's CSI camera")
        if info["Num"] in Picamera2.acquired:
            # py_main.cpp's acquire throws std::system_error (pybind11: RuntimeError), which
            # Picamera2.__init__ wraps.
            busy = RuntimeError("Failed to acquire camera: Device or resource busy")
            raise RuntimeError("Camera __init__ sequence did not complete.") from busy
        Picamera2.acquired.add(info["Num"])
        self._num = info["Num"]
        self.camera_properties = dict(Picamera2.fixture.camera_properties)
        self.sensor_modes = list(Picamera2.fixture.sensor_modes)
        self.camera_config: dict[str, Any] = {}
        self.state = CameraState()
        self.started = False
        self.closed = False
        self.frames_stalled = False
        self.encoder: _Encoder | None = None
        self._pending: dict[str, Any] = {}
        self._jobs: list[Job] = []
        self.held_requests: set[CompletedRequest] = set()
        self._lock = threading.Lock()

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        fixture = Picamera2.fixture
        if not self.camera_config:
            return dict(fixture.before)
        controls = dict(fixture.after)
        smallest, field_of_view, _ = controls["ScalerCrop"]
        controls["ScalerCrop"] = (smallest, field_of_view, self._default_crop(field_of_view))
        return controls

    def _default_crop(self, field_of_view: tuple[int, int, int, int]) -> tuple[int, ...]:
        """The pipeline's default crop (vc4.cpp/pisp.cpp platformConfigure): the mode's output
        bounded to the stream's aspect ratio and centred, scaled back to sensor pixels."""
        x, y, width, height = field_of_view
        mode = next(
            m["size"] for m in self.sensor_modes if tuple(m["crop_limits"]) == tuple(field_of_view)
        )
        crop = _bounded_to_aspect(mode, self.camera_config["main"]["size"])
        scale_x, scale_y = width // mode[0], height // mode[1]
        left, top = (mode[0] - crop[0]) // 2, (mode[1] - crop[1]) // 2
        return (x + left * scale_x, y + top * scale_y, crop[0] * scale_x, crop[1] * scale_y)

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = None, transform: Transform | None = None,
                                   colour_space: Any = None, buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None, display: str = "main",
                                   encode: str = "main", queue: bool = True, sensor: Any = None,
                                   use_case: str = "video") -> dict[str, Any]:  # fmt: skip
        main_config = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True,
                       **(main or {})}  # fmt: skip
        lores_config = None
        if lores is not None:
            lores_config = {"format": "YUV420", "size": main_config["size"], "preserve_ar": False,
                            **lores}  # fmt: skip
            width, height = lores_config["size"]
            lores_config["size"] = (width - width % 2, height - height % 2)  # align_stream
        return {
            "use_case": use_case,
            "main": main_config,
            "lores": lores_config,
            "raw": raw,
            "transform": transform or Transform(),
            "buffer_count": buffer_count,
            "controls": {
                "NoiseReductionMode": 0,
                "FrameDurationLimits": (33333, 33333),
                **(controls or {}),
            },
        }

    def _validated(self, controls: dict[str, Any]) -> dict[str, Any]:
        """picamera2's Controls.__setattr__: FrameRate is virtual, anything else must exist."""
        checked: dict[str, Any] = {}
        advertised = self.camera_controls
        for name, value in controls.items():
            if name == "FrameRate":
                checked["FrameDurationLimits"] = (int(1e6 / value), int(1e6 / value))
                continue
            if name not in advertised:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            checked[name] = value
        return checked

    def configure(self, camera_config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main = dict(camera_config["main"])
        width = main["size"][0]
        main["stride"] = (width + 63) // 64 * 64  # the ISP's output rows are 64-byte aligned
        lores = camera_config.get("lores")
        if lores is not None:
            lores = dict(lores)
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self.fixture.platform == "vc4" and lores["format"] not in ("YUV420", "YVU420"):
                raise RuntimeError("lores stream must be YUV")
            lores["stride"] = (lores["size"][0] + 63) // 64 * 64
        self.camera_config = {**camera_config, "main": main, "lores": lores}
        self._pending = self._validated(camera_config["controls"])  # replaces, as picamera2 does
        if "ScalerCrops" in self.camera_controls:
            par_crop = self.camera_controls["ScalerCrops"]
            full_fov = self.camera_controls["ScalerCrop"][1]
            self._pending["ScalerCrops"] = [
                par_crop[0] if main.get("preserve_ar", True) else full_fov
            ]

    def set_controls(self, controls: dict[str, Any]) -> None:
        with self._lock:
            self._pending.update(self._validated(controls))
        if self.started:
            self._next_frame()

    def _with_modes(self, controls: dict[str, Any]) -> dict[str, Any]:
        """picamera2 (start_ and CompletedRequest.release) adds the manual modes libcamera needs."""
        patched = dict(controls)
        if "ExposureTime" in patched:
            patched["ExposureTimeMode"] = 0 if patched["ExposureTime"] == 0 else 1
        if "AnalogueGain" in patched:
            patched["AnalogueGainMode"] = 0 if patched["AnalogueGain"] == 0 else 1
        return patched

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self.started = True
        self._next_frame()

    def _next_frame(self) -> None:
        """A frame completes: pending controls apply to it, and waiting captures get it."""
        if not self.started or self.frames_stalled:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
            jobs, self._jobs = self._jobs, []
        if pending:
            self.state.apply(self._with_modes(pending))
        for job in jobs:
            if job.metadata:
                job._future.set_result(self._metadata())
                continue
            request = CompletedRequest(self)
            self.held_requests.add(request)
            job._future.set_result(request)

    def _metadata(self) -> dict[str, Any]:
        """A frame's metadata: what the IPA reports it did (IpaBase::applyControls and
        reportMetadata): exposure clamped to the mode's limits and to the frame duration."""
        state, controls = self.state, self.camera_controls
        frame_us = state.others.get("FrameDurationLimits", (33333, 33333))[1]
        low, high, _ = controls["ExposureTime"]
        gain_low, gain_high, _ = controls["AnalogueGain"]
        exposure = (
            state.exposure_time
            if not state.exposure_auto and state.exposure_time
            else AUTO_EXPOSURE_US
        )
        gain = state.analogue_gain if not state.gain_auto and state.analogue_gain else AUTO_GAIN
        metadata: dict[str, Any] = {
            name: state.others[name] for name in _PLAIN_METADATA if name in state.others
        }
        metadata |= {
            "ExposureTimeMode": 0 if state.exposure_auto else 1,
            "AnalogueGainMode": 0 if state.gain_auto else 1,
            "ExposureTime": int(min(max(exposure, low), high, frame_us)),
            "AnalogueGain": float(min(max(gain, gain_low), gain_high)),
            "FrameDuration": frame_us,
            "ScalerCrop": state.crop or controls["ScalerCrop"][2],
        }
        if "AwbEnable" in controls:
            metadata["AwbEnable"] = state.awb_auto
            metadata["ColourGains"] = state.colour_gains or AUTO_COLOUR_GAINS
        if "LensPosition" in controls:
            metadata["LensPosition"] = (
                state.lens_position
                if state.af_mode == 0 and state.lens_position is not None
                else AUTO_LENS_POSITION
            )
        return metadata

    def capture_metadata(self, wait: Any = None, signal_function: Any = None) -> Any:
        return self._dispatch(Job(metadata=True), wait)

    def _dispatch(self, job: Job, wait: Any) -> Any:
        """Picamera2.dispatch_functions: queue the job for the next frame, and wait as asked
        (None or True: for good; False: not at all, the Job is returned; a number: seconds)."""
        with self._lock:
            self._jobs.append(job)
        self._next_frame()
        if wait is False:
            return job
        return job.get_result(timeout=None if wait in (None, True) else wait)

    def resume_frames(self) -> None:
        self.frames_stalled = False
        self._next_frame()

    def stop(self) -> None:
        self.started = False

    def start_encoder(self, encoder: _Encoder, output: FfmpegOutput, pts: Any = None,
                      quality: Any = None, name: str = "main") -> None:  # fmt: skip
        if not self.started:
            raise RuntimeError("camera must be started before the encoder")
        encoder.check(self.camera_config["main"]["size"])
        encoder.output = output
        self.encoder = encoder
        output.start()

    def stop_encoder(self, encoders: Any = None) -> None:
        if self.encoder is not None and self.encoder.output is not None:
            self.encoder.output.stop()
        self.encoder = None

    def capture_request(
        self, wait: Any = None, signal_function: Any = None, flush: Any = None
    ) -> Any:
        return self._dispatch(Job(), wait)

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        with self._lock:
            for job in self._jobs:
                job.cancel()
            self._jobs = []

    def close(self) -> None:
        self.started = False
        self.closed = True
        Picamera2.acquired.discard(self._num)


def install(monkeypatch: pytest.MonkeyPatch, fixture: str = "pi5-imx708") -> Picamera2Fixture:
    """Make `import picamera2` and `import libcamera` find this fake, playing ``fixture``."""
    loaded = Picamera2Fixture.load(DEVICES / fixture)
    monkeypatch.setattr(Picamera2, "fixture", loaded, raising=False)
    monkeypatch.setattr(Picamera2, "usb_cameras", [])
    monkeypatch.setattr(Picamera2, "acquired", set())
    platform = Platform.VC4 if loaded.platform == "vc4" else Platform.PISP
    encoder = V4l2H264Encoder if platform is Platform.VC4 else LibavH264Encoder
    modules: dict[str, dict[str, object]] = {
        "picamera2": {"Picamera2": Picamera2},
        "picamera2.encoders": {"H264Encoder": encoder, "LibavH264Encoder": LibavH264Encoder},
        "picamera2.outputs": {"FfmpegOutput": FfmpegOutput},
        "picamera2.platform": {"Platform": Platform, "get_platform": lambda: platform},
        "libcamera": {"Transform": Transform},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
    return loaded

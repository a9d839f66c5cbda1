"""Raspberry Pi CSI cameras through picamera2 / libcamera.

picamera2 is imported lazily: it only installs as a working module on Raspberry Pi OS
(`python3-picamera2`, which brings libcamera's Python bindings); the Pi image uses a venv with
system site packages. Blocking picamera2 calls run in a worker thread, off the event loop.

Controls come from `Picamera2.camera_controls` ({name: (min, max, default)}) and are set with
`set_controls`, live; the H.264 encoder (hardware on a Pi 4, software on a Pi 5, which has no
hardware encoder) feeds an FfmpegOutput that publishes to MediaMTX; a picture is a
`capture_request` of the main stream while the encoder runs. zoom, pan and tilt are digital: one
ScalerCrop rectangle within the sensor's field of view. Following picamera2's own design,
the output reports a broken pipe through `error_callback` and the supervisor decides to restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.camera.base import (
    ActiveCondition,
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    MenuOption,
    Pusher,
    RawFrame,
    StreamTarget,
    as_int,
    as_number,
)
from agent.camera.vocabulary import stream_parameter_descriptors
from agent.errors import CameraError

log = logging.getLogger(__name__)

# libcamera control -> (canonical name, type, unit)
PICAMERA2_CANONICAL: dict[str, tuple[str, ControlType, str | None]] = {
    "Brightness": ("brightness", ControlType.FLOAT, None),
    "Contrast": ("contrast", ControlType.FLOAT, None),
    "Saturation": ("saturation", ControlType.FLOAT, None),
    "Sharpness": ("sharpness", ControlType.FLOAT, None),
    "AeEnable": ("auto_exposure", ControlType.BOOL, None),
    "ExposureTime": ("exposure_time_us", ControlType.INT, "us"),
    "AnalogueGain": ("analogue_gain", ControlType.FLOAT, None),
    "ExposureValue": ("exposure_value", ControlType.FLOAT, "EV"),
    "AwbEnable": ("auto_white_balance", ControlType.BOOL, None),
    "ColourGains": ("colour_gains", ControlType.PAIR, "red, blue"),
    "AfMode": ("auto_focus", ControlType.MENU, None),
    "LensPosition": ("focus_position", ControlType.FLOAT, "dioptres"),
}
_NUMERIC = (ControlType.INT, ControlType.FLOAT, ControlType.PAIR)
AF_MODES = (MenuOption(0, "Manual"), MenuOption(1, "Auto"), MenuOption(2, "Continuous"))
PICAMERA2_DEPENDENCIES = {
    "exposure_time_us": ActiveCondition("auto_exposure", False, "turn auto_exposure off first"),
    "analogue_gain": ActiveCondition("auto_exposure", False, "turn auto_exposure off first"),
    "focus_position": ActiveCondition("auto_focus", 0, "turn auto_focus off first (auto_focus 0)"),
    "colour_gains": ActiveCondition(
        "auto_white_balance", False, "turn auto_white_balance off first"
    ),
}


# Digital zoom, pan and tilt are one libcamera control, the ScalerCrop rectangle. A crop smaller
# than 1/16 of the field of view only magnifies noise.
MAX_ZOOM = 16.0
CROP_CONTROLS = ("zoom", "pan", "tilt")


def crop_descriptors(
    camera_controls: Mapping[str, tuple[Any, Any, Any]],
) -> list[ControlDescriptor]:
    """zoom, pan and tilt, if the sensor advertises ScalerCrop."""
    if "ScalerCrop" not in camera_controls:
        return []
    smallest, largest, _ = camera_controls["ScalerCrop"]
    deepest = min(largest[2] / smallest[2], largest[3] / smallest[3], MAX_ZOOM)
    zoom = ControlDescriptor(
        "zoom", ControlType.FLOAT, 1.0, "digital zoom: the sensor area read (libcamera ScalerCrop)",
        minimum=1.0, maximum=round(deepest, 2), unit="x",
    )  # fmt: skip
    moves = [
        ControlDescriptor(
            name,
            ControlType.FLOAT,
            0.0,
            f"{direction} of the zoomed crop within the field of view, -1 to 1 (ScalerCrop); "
            "no effect at zoom 1",
            minimum=-1.0,
            maximum=1.0,
        )
        for name, direction in (("pan", "left-right position"), ("tilt", "top-bottom position"))
    ]
    return [zoom, *moves]


def scaler_crop(
    field_of_view: Sequence[int], zoom: float, pan: float, tilt: float
) -> tuple[int, int, int, int]:
    """The ScalerCrop rectangle (x, y, width, height) for a zoom factor and a crop position
    (-1 = left/top edge, 0 = centre, 1 = right/bottom edge) within the full field of view."""
    x0, y0, full_width, full_height = field_of_view
    width, height = round(full_width / zoom), round(full_height / zoom)
    x = x0 + round((full_width - width) * (pan + 1) / 2)
    y = y0 + round((full_height - height) * (tilt + 1) / 2)
    return (x, y, width, height)


def picamera2_descriptors(
    camera_controls: Mapping[str, tuple[Any, Any, Any]],
) -> list[ControlDescriptor]:
    descriptors = []
    for native, (canonical, kind, unit) in PICAMERA2_CANONICAL.items():
        if native not in camera_controls:
            continue  # this sensor lacks it (a fixed-focus lens has no AfMode)
        low, high, default = camera_controls[native]
        if kind is ControlType.BOOL:
            default = bool(default) if default is not None else True
        elif kind is ControlType.PAIR:
            default = tuple(default) if default is not None else (1.0, 1.0)  # neutral gains
        elif default is None:
            default = low
        descriptors.append(
            ControlDescriptor(
                name=canonical,
                type=kind,
                default=default,
                description=f"libcamera {native}",
                minimum=low if kind in _NUMERIC else None,
                maximum=high if kind in _NUMERIC else None,
                unit=unit,
                options=AF_MODES if kind is ControlType.MENU else (),
                active_if=PICAMERA2_DEPENDENCIES.get(canonical),
                aliases=(native,),
            )
        )
    return [*descriptors, *crop_descriptors(camera_controls)]


class _EncoderPusher:
    """The running encoder as the supervisor sees a pusher: it waits, and it can be stopped."""

    def __init__(self, camera: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._camera = camera
        self._loop = loop
        self._failed = asyncio.Event()
        self._error = ""

    def on_error(self, err: BaseException) -> None:
        # Called from picamera2's encoder thread.
        self._error = f"output failed: {err}"
        self._loop.call_soon_threadsafe(self._failed.set)

    @property
    def pid(self) -> int | None:
        return None  # in-process

    async def wait(self) -> int:
        await self._failed.wait()
        return 1

    async def stop(self, grace_s: float = 3.0) -> int | None:
        await asyncio.wait_for(asyncio.to_thread(self._camera.stop_encoder), grace_s + 5)
        return 0

    def stderr_text(self, lines: int = 20) -> str:
        return self._error


class Picamera2Camera(CameraBackend):
    name = "picamera2"

    def __init__(self, camera_num: int, width: int, height: int, fps: int) -> None:
        self._camera_num = camera_num
        self._camera: Any = None
        self._descriptors: list[ControlDescriptor] = []
        self._values: dict[str, ControlValue] = {
            "width": width, "height": height, "fps": fps, "bitrate": 4000,
            "keyframe_interval": 1.0, "hflip": False, "vflip": False,
        }  # fmt: skip
        self._model = "unknown"
        self._runtime: tempfile.TemporaryDirectory[str] | None = None
        self._streaming = False

    async def start(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415
        except ImportError as err:
            raise CameraError(
                "picamera2 is not installed (Raspberry Pi OS: apt install python3-picamera2)"
            ) from err
        try:
            self._camera = await asyncio.to_thread(Picamera2, self._camera_num)
        except (RuntimeError, IndexError) as err:
            raise CameraError(f"no libcamera camera {self._camera_num}: {err}") from err
        self._model = str(self._camera.camera_properties.get("Model", "unknown"))
        self._descriptors = picamera2_descriptors(self._camera.camera_controls)
        for d in self._descriptors:
            self._values.setdefault(d.name, d.default)
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp directory inside it
        self._runtime = tempfile.TemporaryDirectory(
            prefix="camera-agent-picam-", dir=shm if os.access(shm, os.W_OK) else None
        )

    async def stop(self) -> None:
        if self._camera is not None:
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(self._camera.close)
            self._camera = None
        if self._runtime is not None:
            self._runtime.cleanup()
            self._runtime = None

    def descriptors(self) -> Sequence[ControlDescriptor]:
        v = self._values
        flips = [
            ControlDescriptor(name, ControlType.BOOL, False, f"{name} (libcamera Transform)",
                              restarts_stream=True)
            for name in ("hflip", "vflip")
        ]  # fmt: skip
        stream = stream_parameter_descriptors(
            as_int(v["width"]), as_int(v["height"]), as_int(v["fps"])
        )
        return [*self._descriptors, *flips, *stream]

    def values(self) -> dict[str, ControlValue]:
        return dict(self._values)

    def _native(self, values: Mapping[str, ControlValue]) -> dict[str, Any]:
        by_canonical = {d.name: d.aliases[0] for d in self._descriptors if d.aliases}
        native: dict[str, Any] = {
            by_canonical[k]: v for k, v in values.items() if k in by_canonical
        }
        if any(name in values for name in CROP_CONTROLS) and self._camera is not None:
            # One rectangle from all three, each the new value if given, else the current one.
            crop = {name: as_number(values.get(name, self._values[name])) for name in CROP_CONTROLS}
            field_of_view = self._camera.camera_controls["ScalerCrop"][1]
            native["ScalerCrop"] = scaler_crop(field_of_view, **crop)
        return native

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        native = self._native(values)
        if native and self._camera is not None and self._streaming:
            try:
                await asyncio.to_thread(self._camera.set_controls, native)
            except RuntimeError as err:  # a control this sensor does not advertise
                raise CameraError(str(err)) from err
        self._values.update(values)
        return AppliedChange(values=dict(values), restarted=restart)

    async def start_pusher(self, target: StreamTarget) -> Pusher:
        if self._camera is None:
            raise CameraError("the camera is not open")
        from libcamera import Transform  # type: ignore[import-not-found]  # noqa: PLC0415
        from picamera2.encoders import H264Encoder  # type: ignore[import-not-found]  # noqa: PLC0415
        from picamera2.outputs import FfmpegOutput  # type: ignore[import-not-found]  # noqa: PLC0415

        v = self._values
        fps = as_int(v["fps"])
        config = self._camera.create_video_configuration(
            main={"size": (as_int(v["width"]), as_int(v["height"])), "format": "YUV420"},
            controls={"FrameRate": fps, **self._native(v)},
            transform=Transform(hflip=int(bool(v["hflip"])), vflip=int(bool(v["vflip"]))),
        )
        encoder = H264Encoder(
            bitrate=as_int(v["bitrate"]) * 1000,
            repeat=True,
            iperiod=max(1, round(fps * as_number(v["keyframe_interval"]))),
        )
        output = FfmpegOutput(
            f"-f rtsp -rtsp_transport {target.rtsp_transport} {target.url_with_credentials()}"
        )
        pusher = _EncoderPusher(self._camera, asyncio.get_running_loop())
        output.error_callback = pusher.on_error

        def begin() -> None:
            self._camera.configure(config)
            self._camera.start()
            self._camera.start_encoder(encoder, output)

        try:
            await asyncio.to_thread(begin)
        except RuntimeError as err:
            raise CameraError(f"cannot start the camera: {err}") from err
        self._streaming = True
        return pusher

    async def pusher_stopped(self) -> None:
        self._streaming = False
        if self._camera is not None:
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(self._camera.stop)

    async def latest_frame(self) -> RawFrame:
        if self._camera is None or not self._streaming or self._runtime is None:
            raise CameraError("the camera is not streaming (`stream start` first)")
        path = Path(self._runtime.name) / "still.yuv"

        def capture() -> tuple[int, int]:
            request = self._camera.capture_request()
            try:
                array = request.make_array("main")
            finally:
                request.release()
            path.write_bytes(array.tobytes())
            # YUV420: (height * 3 / 2) rows of the stride (the width, for 64-aligned sizes).
            return int(array.shape[1]), int(array.shape[0] * 2 // 3)

        width, height = await asyncio.to_thread(capture)
        return RawFrame(str(path), width, height, "yuv420p", time.time())

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "camera": self._camera_num, "model": self._model}

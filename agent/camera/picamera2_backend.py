"""Raspberry Pi CSI cameras through picamera2 / libcamera.

picamera2 is imported lazily: it only installs as a working module on Raspberry Pi OS
(`python3-picamera2`, which brings libcamera's Python bindings); the Pi image uses a venv with
system site packages. Blocking picamera2 calls run in a worker thread, off the event loop.

Controls come from `Picamera2.camera_controls`, which only holds the sensor mode's real limits
after a configure (agent.camera.libcamera_controls says why and what is sent). So the camera is
configured once at start, and the descriptors are read again after every configure.

The H.264 encoder is the Pi 4's hardware encoder (1080p at most) or, on a Pi 5, which has none,
picamera2's libav software encoder (whose frame rate must be given: it assumes 30). It feeds an
FfmpegOutput that publishes to MediaMTX; following picamera2's own design, the output reports a
broken pipe through `error_callback` and the supervisor decides to restart. A picture is a
`capture_request` of the main stream while the encoder runs, with a deadline: a request made
while the camera restarts would otherwise wait for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agent.camera.base import (
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    as_int,
    as_number,
    same_value,
)
from agent.camera.libcamera_controls import (
    native_controls,
    pack_yuv420,
    picamera2_descriptors,
    reported_values,
)
from agent.camera.vocabulary import stream_parameter_descriptors
from agent.errors import CameraError
from agent.stream.ffmpeg_args import publish_args
from agent.stream.motion_frames import GreyFrame, MotionFrameSource, analysis_size
from agent.stream.pusher import LiveValues, Pusher, runtime_dir
from agent.stream.still import RawFrame
from agent.stream.target import StreamTarget

log = logging.getLogger(__name__)

# How long a picture waits for the camera's next frame before it gives up.
CAPTURE_TIMEOUT_S = 3.0
# How many frames `confirm` reads before it takes the metadata as it is.
CONFIRM_FRAMES = 12
# The Pi 4's hardware H.264 encoder (bcm2835-codec) stops at 1080p.
VC4_ENCODER_MAX = (1920, 1080)


def _picamera2_platform_is_vc4() -> bool:
    """True on a Pi 4 or earlier (hardware H.264 encoder), False on a Pi 5 (PiSP)."""
    try:
        from picamera2.platform import Platform, get_platform  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return True
    return bool(get_platform() == Platform.VC4)


def wait_job(camera: Any, job: Any) -> Any:
    """A picamera2 job's result within CAPTURE_TIMEOUT_S, or a CameraError."""
    try:
        return camera.wait(job, timeout=CAPTURE_TIMEOUT_S)
    except TimeoutError:
        # picamera2's advice for a timed-out job: drop the queue, so that a request which may
        # still come is not held for ever (it would stall the pipeline).
        with contextlib.suppress(Exception):
            camera.cancel_all_and_flush()
        with contextlib.suppress(Exception):
            late = camera.wait(job, timeout=0)
            if hasattr(late, "release"):
                late.release()
        raise CameraError(
            f"the camera delivered no frame within {CAPTURE_TIMEOUT_S:.0f} s"
        ) from None


class LoresFrames:
    """Motion detection's grey frames: the Y plane of the `lores` stream (YUV420, rows of the
    stride: picamera2's make_array), at most `fps` a second, each from a request of its own
    taken while the encoder runs (as pictures are)."""

    def __init__(self, camera: Any, fps: float) -> None:
        self._camera = camera
        self._interval = 1.0 / fps
        self._last = 0.0

    def has_new(self) -> bool:
        return bool(self._camera.started) and time.monotonic() - self._last >= self._interval

    def read_new(self) -> GreyFrame | None:
        camera = self._camera
        if not self.has_new():
            return None
        lores = camera.camera_configuration().get("lores")
        if lores is None:
            return None
        width, height = (int(n) for n in lores["size"])
        stride = int(lores["stride"])
        try:
            request = wait_job(camera, camera.capture_request(wait=False))
        except CameraError:
            return None  # no frame now (a restart): the detector waits for the next
        try:
            array = request.make_array("lores")
        finally:
            request.release()
        captured_at = time.time()
        self._last = time.monotonic()
        luma = array.tobytes()[: height * stride]
        pixels = b"".join(luma[row * stride : row * stride + width] for row in range(height))
        return GreyFrame(pixels, width, height, captured_at)


class Picamera2Pusher:
    """One run of the camera: the started camera, its encoder, and a directory for pictures.

    The encoder's output reports a broken pipe through `error_callback` (picamera2's design);
    `wait` then returns and the supervisor decides what to do. `stop` stops the encoder and the
    camera, which stays open (and configured) for the next run.
    """

    def __init__(
        self, camera: Any, loop: asyncio.AbstractEventLoop, motion_fps: float = 5.0
    ) -> None:
        self._camera = camera
        self._loop = loop
        self._motion = LoresFrames(camera, motion_fps)
        self._failed = asyncio.Event()
        self._error = ""
        self._runtime: tempfile.TemporaryDirectory[str] | None = runtime_dir("camera-agent-picam-")

    def on_error(self, err: BaseException) -> None:
        # Called from picamera2's encoder thread.
        self._error = f"output failed: {err}"
        self._loop.call_soon_threadsafe(self._failed.set)

    @property
    def pid(self) -> int | None:
        return None  # in-process

    def motion_frames(self) -> MotionFrameSource | None:
        return self._motion

    async def wait(self) -> int:
        await self._failed.wait()
        return 1

    async def stop(self, grace_s: float = 3.0) -> int | None:
        camera = self._camera

        def end() -> None:
            with contextlib.suppress(RuntimeError):
                camera.stop_encoder()
            with contextlib.suppress(RuntimeError):
                camera.stop()

        await asyncio.wait_for(asyncio.to_thread(end), grace_s + 5)
        if self._runtime is not None:
            self._runtime.cleanup()
            self._runtime = None
        return 0

    def stderr_text(self, lines: int = 20) -> str:
        return self._error

    async def latest_frame(self) -> RawFrame:
        if self._runtime is None or not self._camera.started:
            raise CameraError("the camera is not streaming (`stream start` first)")
        # One file per capture: two pictures at once must not write into the file the other's
        # encoder is reading. The picture job releases it (RawFrame.release).
        path = Path(self._runtime.name) / f"still-{secrets.token_hex(4)}.yuv"
        camera = self._camera

        def capture() -> tuple[int, int]:
            main = camera.camera_configuration()["main"]
            width, height = (int(n) for n in main["size"])
            request = wait_job(camera, camera.capture_request(wait=False))
            try:
                array = request.make_array("main")
            finally:
                request.release()
            stride = int(main.get("stride") or array.shape[1])
            path.write_bytes(pack_yuv420(array.tobytes(), width, height, stride))
            return width, height

        try:
            width, height = await asyncio.to_thread(capture)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return RawFrame(str(path), width, height, "yuv420p", time.time(), private=True)

    async def apply_live(self, values: LiveValues) -> None:
        return None  # the backend sends controls to the camera itself (set_controls)


class Picamera2Camera(CameraBackend):
    name = "picamera2"
    # libcamera's AeEnable and AwbEnable; their results are read back from the frame metadata.
    AUTO_LOCKS: ClassVar[Mapping[str, tuple[ControlValue, tuple[str, ...]]]] = {
        "auto_exposure": (False, ("exposure_time_us", "analogue_gain")),
        "auto_white_balance": (False, ("colour_gains",)),
    }
    readback_rel_tol = 0.02  # sensors quantise exposure and gain to their own steps

    def __init__(
        self, camera_num: int, width: int, height: int, fps: int, motion_fps: float = 5.0
    ) -> None:
        self._camera_num = camera_num
        self._motion_fps = motion_fps
        self._camera: Any = None
        self._descriptors: list[ControlDescriptor] = []
        self._values: dict[str, ControlValue] = {
            "width": width, "height": height, "fps": fps, "bitrate": 4000,
            "keyframe_interval": 1.0, "hflip": False, "vflip": False,
        }  # fmt: skip
        self._model = "unknown"
        self._vc4 = True

    async def start(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415
        except ImportError as err:
            raise CameraError(
                "picamera2 is not installed (Raspberry Pi OS: apt install python3-picamera2)"
            ) from err
        try:
            self._camera = await asyncio.to_thread(Picamera2, self._camera_num)
        except IndexError as err:
            raise CameraError(f"no libcamera camera {self._camera_num}") from err
        except RuntimeError as err:
            # picamera2 wraps libcamera's reason ("Failed to acquire camera: Device or resource
            # busy": another process has it) in a generic one: say both.
            reason = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
            raise CameraError(f"cannot open libcamera camera {self._camera_num}: {reason}") from err
        self._model = str(self._camera.camera_properties.get("Model", "unknown"))
        self._vc4 = await asyncio.to_thread(_picamera2_platform_is_vc4)
        # Configure once, so that the descriptors carry the sensor mode's real limits.
        await self._configure()

    async def stop(self) -> None:
        if self._camera is not None:
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(self._camera.close)
            self._camera = None

    @property
    def _streaming(self) -> bool:
        """A run of the pipeline has the camera started (Picamera2Pusher stops it)."""
        return self._camera is not None and bool(self._camera.started)

    def descriptors(self) -> Sequence[ControlDescriptor]:
        v = self._values
        flips = [
            ControlDescriptor(name, ControlType.BOOL, False, f"{name} (libcamera Transform)",
                              restarts_stream=True)
            for name in ("hflip", "vflip")
        ]  # fmt: skip
        stream = stream_parameter_descriptors(
            as_int(v["width"]), as_int(v["height"]), as_int(v["fps"]),
            VC4_ENCODER_MAX if self._vc4 else (3840, 2160),
        )  # fmt: skip
        return [*self._descriptors, *flips, *stream]

    def values(self) -> dict[str, ControlValue]:
        return dict(self._values)

    def _video_configuration(self) -> Any:
        from libcamera import Transform  # type: ignore[import-not-found]  # noqa: PLC0415

        v = self._values
        width, height = as_int(v["width"]), as_int(v["height"])
        return self._camera.create_video_configuration(
            main={"size": (width, height), "format": "YUV420"},
            # Motion detection's grey frames: the ISP scales them for free (picamera2's
            # capture_motion.py does the same).
            lores={"size": analysis_size(width, height), "format": "YUV420"},
            controls={"FrameRate": as_int(v["fps"])},
            transform=Transform(hflip=int(bool(v["hflip"])), vflip=int(bool(v["vflip"]))),
        )

    async def _configure(self) -> None:
        """Configure the camera for the current values and read its limits again."""
        config = self._video_configuration()
        try:
            await asyncio.to_thread(self._camera.configure, config)
        except RuntimeError as err:
            raise CameraError(f"cannot configure the camera: {err}") from err
        self._descriptors = picamera2_descriptors(
            self._camera.camera_controls, as_number(self._values["fps"])
        )
        for d in self._descriptors:
            self._values.setdefault(d.name, d.default)

    def _native(self, names: Sequence[str]) -> dict[str, Any]:
        return native_controls(self._descriptors, self._values, names, self._camera.camera_controls)

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        self._values.update(values)
        if self._streaming and not restart:
            native = self._native(list(values))
            if native:
                try:
                    await asyncio.to_thread(self._camera.set_controls, native)
                except RuntimeError as err:  # a control this sensor does not advertise
                    raise CameraError(str(err)) from err
        return AppliedChange(values=dict(values), restarted=restart)

    async def confirm(self, values: Mapping[str, ControlValue]) -> dict[str, ControlValue]:
        """The values in a frame's metadata, once they show the change; controls take a few
        frames to act (the sensor applies exposure and gain with a delay)."""
        cached = await super().confirm(values)
        if not self._streaming:
            return cached
        camera = self._camera
        reported: dict[str, ControlValue] = {}
        for _ in range(CONFIRM_FRAMES):
            metadata = await asyncio.to_thread(
                wait_job, camera, camera.capture_metadata(wait=False)
            )
            reported = reported_values(metadata, self._descriptors, camera.camera_controls)
            if all(
                same_value(reported.get(k, v), v, self.readback_rel_tol) for k, v in cached.items()
            ):
                break
        return {name: reported.get(name, value) for name, value in cached.items()}

    async def start_pusher(self, target: StreamTarget) -> Pusher:
        if self._camera is None:
            raise CameraError("the camera is not open")
        from picamera2.encoders import H264Encoder  # type: ignore[import-not-found]  # noqa: PLC0415
        from picamera2.outputs import FfmpegOutput  # type: ignore[import-not-found]  # noqa: PLC0415

        v = self._values
        fps = as_int(v["fps"])
        await self._configure()
        # After configure: picamera2 has just reset the controls (and set ScalerCrops on a Pi 5);
        # ours go in before start, every active one, so a restart keeps zoom and manual modes.
        controls = self._native([d.name for d in self._descriptors])
        encoder = H264Encoder(
            bitrate=as_int(v["bitrate"]) * 1000,
            repeat=True,
            iperiod=max(1, round(fps * as_number(v["keyframe_interval"]))),
            framerate=fps,
        )
        # FfmpegOutput splits this on spaces and appends it to its ffmpeg command; the tee
        # spec holds none. picamera2 feeds one video stream, mapped for the tee muxer.
        publish = publish_args(target.publish_urls(), target.rtsp_transport)
        output = FfmpegOutput(
            " ".join(["-map", "0:v", *publish] if publish[1] == "tee" else publish)
        )
        pusher = Picamera2Pusher(self._camera, asyncio.get_running_loop(), self._motion_fps)
        output.error_callback = pusher.on_error

        def begin() -> None:
            if controls:
                self._camera.set_controls(controls)
            self._camera.start()
            try:
                self._camera.start_encoder(encoder, output)
            except RuntimeError:
                # A started camera cannot be configured again: leave it stopped for the retry.
                self._camera.stop()
                raise

        try:
            await asyncio.to_thread(begin)
        except RuntimeError as err:
            await pusher.stop()
            raise CameraError(f"cannot start the camera: {err}") from err
        return pusher

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "camera": self._camera_num,
            "model": self._model,
            "encoder": "hardware (VC4)" if self._vc4 else "software (libav, PiSP)",
        }

"""The test-pattern camera: ffmpeg's lavfi sources stand in for a sensor.

Its controls are those the `eq` and `hue` filters can change while ffmpeg runs (sent through
ffmpeg's zmq filter, so the picture changes without a restart), plus the stream parameters that
need a new pipeline. The exposure pair is simulated (it does not change the picture) so that
clients can exercise dependent controls, an inactive control and the reason for it, without
hardware.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.camera.base import (
    ActiveCondition,
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    MenuOption,
    as_int,
    as_number,
)
from agent.camera.vocabulary import stream_parameter_descriptors

if TYPE_CHECKING:  # a type only: NumPy comes with the detector, at the first frame
    from agent.motion.detector import Polygon
from agent.stream.ffmpeg_args import (
    STAMP_HEIGHT,
    TestPatternParams,
    grey_frame_delay_s,
    live_filter_commands,
    pattern_pusher_args,
)
from agent.stream.motion_frames import GreyFrameFile, analysis_size
from agent.stream.pusher import FfmpegLaunch, FfmpegPusher, Pusher
from agent.stream.still import StillFile
from agent.stream.target import StreamTarget

log = logging.getLogger(__name__)


F, INT, B, M = ControlType.FLOAT, ControlType.INT, ControlType.BOOL, ControlType.MENU

# `still`: a scene with nothing moving but sensor-like noise (and the clock), for motion
# detection to stay quiet on.
PATTERNS = ("testsrc2", "testsrc", "smptebars", "rgbtestsrc", "still")


def pattern_descriptors(width: int, height: int, fps: int) -> tuple[ControlDescriptor, ...]:
    manual_exposure = ActiveCondition("auto_exposure", False, "turn auto_exposure off first")
    return (
        ControlDescriptor("brightness", F, 0.0, "added to luma", -1.0, 1.0, 0.01),
        ControlDescriptor("contrast", F, 1.0, "luma contrast", 0.0, 2.0, 0.01),
        ControlDescriptor("saturation", F, 1.0, "colour saturation", 0.0, 3.0, 0.01),
        ControlDescriptor("gamma", F, 1.0, "luma gamma", 0.1, 10.0, 0.01),
        ControlDescriptor("hue", F, 0.0, "hue rotation", -180.0, 180.0, 1.0, unit="degrees"),
        ControlDescriptor("auto_exposure", B, True, "simulated automatic exposure"),
        ControlDescriptor(
            "exposure_time_us",
            INT,
            33333,
            "simulated manual exposure time",
            100,
            1_000_000,
            1,
            unit="us",
            active_if=manual_exposure,
        ),
        ControlDescriptor(
            "moving_box", B, False, "a box moving across the picture (to try motion detection)"
        ),
        ControlDescriptor("hflip", B, False, "mirror horizontally", restarts_stream=True),
        ControlDescriptor("vflip", B, False, "flip vertically", restarts_stream=True),
        *stream_parameter_descriptors(width, height, fps),
        ControlDescriptor(
            "pattern",
            M,
            PATTERNS[0],
            "ffmpeg test source",
            options=tuple(MenuOption(p, p) for p in PATTERNS),
            restarts_stream=True,
        ),
        ControlDescriptor(
            "encoder",
            M,
            "libx264",
            "H.264 encoder in use",
            options=(MenuOption("libx264", "libx264"),),
            read_only=True,
        ),
    )


class TestPatternCamera(CameraBackend):
    """The test pattern, encoded by ffmpeg with libx264 and published over RTSP."""

    name = "testsrc"
    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, width: int, height: int, fps: int, motion_fps: float = 5.0) -> None:
        self._motion_fps = motion_fps
        self._descriptors = pattern_descriptors(width, height, fps)
        self._values: dict[str, ControlValue] = {d.name: d.default for d in self._descriptors}

    async def start(self) -> None:
        return None  # no device: each run of the pipeline brings what it needs

    async def stop(self) -> None:
        return None

    def descriptors(self) -> Sequence[ControlDescriptor]:
        return self._descriptors

    def values(self) -> dict[str, ControlValue]:
        return dict(self._values)

    def params(self) -> TestPatternParams:
        v = self._values
        return TestPatternParams(
            width=as_int(v["width"]),
            height=as_int(v["height"]),
            fps=as_int(v["fps"]),
            bitrate_kbps=as_int(v["bitrate"]),
            keyframe_interval_s=as_number(v["keyframe_interval"]),
            pattern=str(v["pattern"]),
            hflip=bool(v["hflip"]),
            vflip=bool(v["vflip"]),
            brightness=as_number(v["brightness"]),
            contrast=as_number(v["contrast"]),
            saturation=as_number(v["saturation"]),
            gamma=as_number(v["gamma"]),
            hue=as_number(v["hue"]),
            moving_box=bool(v["moving_box"]),
            motion_fps=self._motion_fps,
        )

    def motion_mask(self) -> tuple[Polygon, ...]:
        """The bit strip and the clock across the top: they change at every frame."""
        height = as_int(self._values["height"])
        band = (STAMP_HEIGHT + 16 + 1.5 * max(12, height // 24)) / height
        return (((0.0, 0.0), (1.0, 0.0), (1.0, band), (0.0, band)),)

    async def start_pusher(self, target: StreamTarget) -> Pusher:
        params = self.params()

        def plan(runtime: Path) -> FfmpegLaunch:
            # The zmq endpoint is a Unix socket in the run's private directory: nothing outside
            # the agent's user can reach ffmpeg's filters, and no TCP port is taken.
            endpoint = f"ipc://{runtime / 'filters.zmq'}"
            still = StillFile(runtime / "latest.yuv", params.width, params.height)
            grey = GreyFrameFile(
                runtime / "motion.gray", *analysis_size(params.width, params.height),
                grey_frame_delay_s(params.fps, params.motion_fps),
            )  # fmt: skip
            argv = pattern_pusher_args(
                params, endpoint, target.publish_urls(), str(still.path),
                target.rtsp_transport, (str(grey.path), grey.width, grey.height),
            )  # fmt: skip
            return FfmpegLaunch(argv, still, endpoint, live_filter_commands, grey)

        return await FfmpegPusher.start("testsrc-pusher", "camera-agent-testsrc-", plan)

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        # Live changes reach the running pipeline's filters through its Pusher (apply_live).
        self._values.update(values)
        return AppliedChange(values=dict(values), restarted=restart)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": "ffmpeg lavfi test pattern", "simulated": True}

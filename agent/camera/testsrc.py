"""The test-pattern camera: ffmpeg's lavfi sources stand in for a sensor.

Its controls are those the `eq` and `hue` filters can change while ffmpeg runs, plus the stream
parameters that need a new pipeline. The exposure pair is simulated so that clients can exercise
dependent controls (an inactive control and the reason for it) without hardware.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.camera.base import (
    ActiveCondition,
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    MenuOption,
)

F, INT, B, M = ControlType.FLOAT, ControlType.INT, ControlType.BOOL, ControlType.MENU

PATTERNS = ("testsrc2", "testsrc", "smptebars", "rgbtestsrc")


def testsrc_descriptors(width: int, height: int, fps: int) -> tuple[ControlDescriptor, ...]:
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
        ControlDescriptor("hflip", B, False, "mirror horizontally", restarts_stream=True),
        ControlDescriptor("vflip", B, False, "flip vertically", restarts_stream=True),
        ControlDescriptor(
            "width", INT, width, "frame width", 160, 3840, 2, "px", restarts_stream=True
        ),
        ControlDescriptor(
            "height", INT, height, "frame height", 120, 2160, 2, "px", restarts_stream=True
        ),
        ControlDescriptor(
            "fps", INT, fps, "frames per second", 1, 60, 1, "fps", restarts_stream=True
        ),
        ControlDescriptor(
            "bitrate",
            INT,
            2000,
            "H.264 target bitrate",
            100,
            20000,
            1,
            "kbit/s",
            restarts_stream=True,
        ),
        ControlDescriptor(
            "keyframe_interval",
            F,
            1.0,
            "time between keyframes",
            0.1,
            10.0,
            0.1,
            "s",
            restarts_stream=True,
        ),
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
    """Control model of the test-pattern camera (the live picture comes with the stream)."""

    name = "testsrc"
    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, width: int, height: int, fps: int) -> None:
        self._descriptors = testsrc_descriptors(width, height, fps)
        self._values: dict[str, ControlValue] = {d.name: d.default for d in self._descriptors}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def descriptors(self) -> Sequence[ControlDescriptor]:
        return self._descriptors

    def values(self) -> dict[str, ControlValue]:
        return dict(self._values)

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        self._values.update(values)
        return AppliedChange(values=dict(values), restarted=restart)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": "ffmpeg lavfi test pattern", "simulated": True}

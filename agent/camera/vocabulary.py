"""One control vocabulary across camera stacks.

Canonical snake_case names where a concept exists on both V4L2 and libcamera; each backend maps
them to its native controls and still accepts the native names unchanged (so the original
setup's `focus_automatic_continuous 1` keeps working). Ranges and units stay native: they are
published with each descriptor in `BASE/controls`.
"""

from __future__ import annotations

from agent.camera.base import ActiveCondition, ControlDescriptor, ControlType

CANONICAL = (
    "brightness", "contrast", "saturation", "sharpness", "auto_exposure", "exposure_time_us",
    "analogue_gain", "exposure_value", "auto_white_balance", "white_balance_temperature",
    "colour_gains", "auto_focus", "focus_position", "zoom", "pan", "tilt", "hflip", "vflip",
)  # fmt: skip

# V4L2 native name -> canonical name (uvcvideo and most USB cameras).
V4L2_CANONICAL = {
    "brightness": "brightness",
    "contrast": "contrast",
    "saturation": "saturation",
    "sharpness": "sharpness",
    "auto_exposure": "auto_exposure",
    "exposure_time_absolute": "exposure_time_us",
    "gain": "analogue_gain",
    "white_balance_automatic": "auto_white_balance",
    "white_balance_temperature": "white_balance_temperature",
    "focus_automatic_continuous": "auto_focus",
    "focus_absolute": "focus_position",
    "zoom_absolute": "zoom",
    "pan_absolute": "pan",
    "tilt_absolute": "tilt",
    "horizontal_flip": "hflip",
    "vertical_flip": "vflip",
}
# The names older kernels print for the same controls (V4L2's control names were made more
# descriptive during the 5.x series; the ustreamer#2 dump in tests/fixtures shows the old ones).
V4L2_LEGACY_NAMES = {
    "exposure_auto": "auto_exposure",
    "exposure_absolute": "exposure_time_absolute",
    "exposure_auto_priority": "exposure_dynamic_framerate",
    "white_balance_temperature_auto": "white_balance_automatic",
    "focus_auto": "focus_automatic_continuous",
}
V4L2_CANONICAL.update({old: V4L2_CANONICAL[new] for old, new in V4L2_LEGACY_NAMES.items()
                       if new in V4L2_CANONICAL})  # fmt: skip


def v4l2_other_names(native: str) -> tuple[str, ...]:
    """The other spelling of a uvcvideo control (old for new, new for old), if it has one."""
    renamed = {**V4L2_LEGACY_NAMES, **{new: old for old, new in V4L2_LEGACY_NAMES.items()}}
    return (renamed[native],) if native in renamed else ()


# V4L2's auto_exposure menu: V4L2_EXPOSURE_MANUAL is 1 (uvcvideo offers 1 and 3).
V4L2_EXPOSURE_MANUAL = 1

# The dependencies uvcvideo reports through V4L2_CTRL_FLAG_INACTIVE, modelled so that a change
# is judged as a whole and a refusal says what to do (the original system's friendly messages).
V4L2_DEPENDENCIES = {
    "focus_position": ActiveCondition("auto_focus", False, "turn auto_focus off first"),
    "exposure_time_us": ActiveCondition(
        "auto_exposure", V4L2_EXPOSURE_MANUAL, "set auto_exposure to 1 (Manual Mode) first"
    ),
    "white_balance_temperature": ActiveCondition(
        "auto_white_balance", False, "turn auto_white_balance off first"
    ),
}


def stream_parameter_descriptors(
    width: int, height: int, fps: int, max_size: tuple[int, int] = (3840, 2160)
) -> tuple[ControlDescriptor, ...]:
    """The encoding parameters every backend shares; changing one rebuilds the pipeline.

    ``max_size`` is the encoder's limit (a Pi 4's hardware H.264 encoder stops at 1080p).
    """

    def param(name: str, kind: ControlType, default: float, text: str, low: float, high: float,
              step: float, unit: str) -> ControlDescriptor:  # fmt: skip
        return ControlDescriptor(
            name, kind, default, text, low, high, step, unit, restarts_stream=True
        )

    i, f = ControlType.INT, ControlType.FLOAT
    return (
        param("width", i, width, "frame width", 160, max_size[0], 2, "px"),
        param("height", i, height, "frame height", 120, max_size[1], 2, "px"),
        param("fps", i, fps, "frames per second", 1, 60, 1, "fps"),
        param("bitrate", i, 2000, "H.264 bitrate", 100, 20000, 1, "kbit/s"),
        param("keyframe_interval", f, 1.0, "time between keyframes", 0.1, 10.0, 0.1, "s"),
    )

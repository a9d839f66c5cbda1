"""USB webcams through V4L2: controls via v4l2-ctl, the stream via ffmpeg's v4l2 input.

Controls are enumerated with their ranges, steps, menus and flags, published under canonical
names (native names accepted too) and set live. Width, height, fps, bitrate and keyframe
interval rebuild the pipeline. The stream copies the camera's own H.264 when it offers it, and
otherwise encodes MJPEG or raw frames with libx264; the choice is logged and shown in `state`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agent.camera.base import (
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    MenuOption,
    as_int,
    as_number,
)
from agent.camera.v4l2_ctl import (
    V4l2Control,
    list_controls_args,
    list_formats_args,
    parse_controls,
    parse_formats,
    set_controls_calls,
    set_errors,
)
from agent.camera.vocabulary import (
    V4L2_CANONICAL,
    V4L2_DEPENDENCIES,
    V4L2_EXPOSURE_MANUAL,
    stream_parameter_descriptors,
    v4l2_other_names,
)
from agent.errors import CameraError
from agent.process import CommandResult, CommandRunner, ProcessStartError, run_command
from agent.stream.ffmpeg_args import grey_frame_delay_s, v4l2_pusher_args
from agent.stream.motion_frames import GreyFrameFile, analysis_size
from agent.stream.pusher import FfmpegLaunch, FfmpegPusher, Pusher
from agent.stream.still import StillFile
from agent.stream.target import StreamTarget

log = logging.getLogger(__name__)

# ffmpeg's name for each V4L2 pixel format, in order of preference.
INPUT_FORMATS = {"H264": "h264", "MJPG": "mjpeg", "YUYV": "yuyv422"}


_TYPES = {
    "int": ControlType.INT,
    "int64": ControlType.INT,
    "bitmask": ControlType.INT,
    "bool": ControlType.BOOL,
    "menu": ControlType.MENU,
    "intmenu": ControlType.MENU,
}
# The controls other controls depend on (auto exposure, white balance, focus): set first.
MASTERS = frozenset(condition.control for condition in V4L2_DEPENDENCIES.values())


def _menu_options(control: V4l2Control) -> tuple[MenuOption, ...]:
    if control.type == "intmenu":
        # "24000000 (0x16e3600)": the entry's number is what a user recognises.
        return tuple(MenuOption(i, label.split(" ", 1)[0]) for i, label in control.menu.items())
    return tuple(MenuOption(i, label) for i, label in control.menu.items())


def v4l2_descriptors(controls: Sequence[V4l2Control]) -> list[ControlDescriptor]:
    descriptors = []
    for control in controls:
        kind = _TYPES.get(control.type)
        if kind is None or control.write_only:
            continue  # buttons, strings, compound controls: nothing a slider can set
        canonical = V4L2_CANONICAL.get(control.name, control.name)
        condition = V4L2_DEPENDENCIES.get(canonical)
        ranged = kind is ControlType.INT
        aliases = (control.name,) if canonical != control.name else ()
        descriptors.append(
            ControlDescriptor(
                name=canonical,
                type=kind,
                default=bool(control.default)
                if kind is ControlType.BOOL
                else (control.default or 0),
                description=f"V4L2 {control.name} ({control.cid:#010x})",
                minimum=(control.minimum if control.type != "bitmask" else 0) if ranged else None,
                maximum=control.maximum if ranged else None,
                step=control.step if ranged and control.type != "bitmask" else None,
                unit="100 us"
                if control.name in ("exposure_time_absolute", "exposure_absolute")
                else None,
                options=_menu_options(control),
                read_only=control.read_only,
                active_if=condition,
                driver_inactive=(
                    "the driver reports it inactive"
                    if control.inactive and condition is None
                    else None
                ),
                aliases=(*aliases, *v4l2_other_names(control.name)),
            )
        )
    return descriptors


class V4l2Camera(CameraBackend):
    name = "v4l2"
    # auto_exposure is V4L2's menu (1: manual); UVC drivers report the exposure and white-balance
    # temperature the automatics chose.
    AUTO_LOCKS: ClassVar[Mapping[str, tuple[ControlValue, tuple[str, ...]]]] = {
        "auto_exposure": (V4L2_EXPOSURE_MANUAL, ("exposure_time_us",)),
        "auto_white_balance": (False, ("white_balance_temperature",)),
    }

    def __init__(
        self,
        device: str,
        width: int,
        height: int,
        fps: int,
        run: CommandRunner = run_command,
        motion_fps: float = 5.0,
    ) -> None:
        self._device = device
        self._motion_fps = motion_fps
        self._run = run
        self._controls: list[V4l2Control] = []
        self._formats: dict[str, list[tuple[int, int]]] = {}
        self._stream_values: dict[str, ControlValue] = {
            "width": width, "height": height, "fps": fps, "bitrate": 2000, "keyframe_interval": 1.0,
        }  # fmt: skip

    async def _v4l2_ctl(self, argv: list[str]) -> CommandResult:
        try:
            return await self._run(argv)
        except ProcessStartError as err:
            raise CameraError(f"{err} (Debian: apt install v4l-utils)") from err

    async def _call(self, argv: list[str]) -> str:
        result = await self._v4l2_ctl(argv)
        if result.returncode != 0:
            raise CameraError(f"{' '.join(argv[:3])}: {result.stderr.strip() or 'failed'}")
        return result.stdout

    async def refresh(self) -> None:
        self._controls = parse_controls(await self._call(list_controls_args(self._device)))

    async def start(self) -> None:
        await self.refresh()
        self._formats = parse_formats(await self._call(list_formats_args(self._device)))
        log.info(
            "%s: %d controls, formats %s", self._device, len(self._controls), sorted(self._formats)
        )

    async def stop(self) -> None:
        return None

    def descriptors(self) -> Sequence[ControlDescriptor]:
        v = self._stream_values
        stream = stream_parameter_descriptors(
            as_int(v["width"]), as_int(v["height"]), as_int(v["fps"])
        )
        return [*v4l2_descriptors(self._controls), *stream]

    def values(self) -> dict[str, ControlValue]:
        values: dict[str, ControlValue] = {}
        for control in self._controls:
            if control.type not in _TYPES or control.value is None:
                continue
            canonical = V4L2_CANONICAL.get(control.name, control.name)
            values[canonical] = bool(control.value) if control.type == "bool" else control.value
        values.update(self._stream_values)
        return values

    def input_format(self) -> str:
        """The camera format the stream reads: its own H.264 if offered (copied, no transcode)."""
        for fourcc in INPUT_FORMATS:
            if fourcc in self._formats:
                return fourcc
        raise CameraError(f"{self._device} offers none of {', '.join(INPUT_FORMATS)}")

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        native = {V4L2_CANONICAL.get(c.name, c.name): c.name for c in self._controls}
        device_values = {native[k]: as_int(v) for k, v in values.items() if k in native}
        failures: dict[str, str] = {}
        for argv in set_controls_calls(self._device, device_values, self._master_names()):
            result = await self._v4l2_ctl(argv)
            if result.returncode != 0:
                failures.update(
                    set_errors(result.stderr) or {"?": result.stderr.strip() or "failed"}
                )
        if device_values:
            # The driver's word on values and flags, after a failure too: v4l2-ctl carries on
            # after an error, so part of the change may have been applied.
            await self.refresh()
        if failures:
            raise CameraError(self._describe_failure(device_values, failures))
        self._stream_values.update({k: v for k, v in values.items() if k in self._stream_values})
        actual = self.values()
        # uvcvideo clamps and rounds to the step instead of refusing: report what it kept.
        return AppliedChange(
            values={k: actual.get(k, v) for k, v in values.items()}, restarted=restart
        )

    async def confirm(self, values: Mapping[str, ControlValue]) -> dict[str, ControlValue]:
        await self.refresh()
        return await super().confirm(values)

    def _master_names(self) -> set[str]:
        return {c.name for c in self._controls if V4L2_CANONICAL.get(c.name, c.name) in MASTERS}

    def _describe_failure(self, requested: Mapping[str, int], failures: Mapping[str, str]) -> str:
        now = {c.name: c.value for c in self._controls}
        kept = [f"{name}={now.get(name)}" for name, value in requested.items()
                if name not in failures and now.get(name) == value]  # fmt: skip
        refused = "; ".join(
            reason if name == "?" else f"{name}: {reason}" for name, reason in failures.items()
        )
        applied = f"; applied: {', '.join(kept)}" if kept else "; nothing applied"
        return f"{self._device} refused {refused}{applied}"

    async def start_pusher(self, target: StreamTarget) -> Pusher:
        fourcc = self.input_format()
        v = self._stream_values
        width, height = as_int(v["width"]), as_int(v["height"])
        mode = "copying its H.264" if fourcc == "H264" else f"encoding {fourcc} with libx264"
        log.info("%s: streaming %dx%d@%s, %s", self._device, width, height, v["fps"], mode)

        def plan(runtime: Path) -> FfmpegLaunch:
            still = StillFile(runtime / "latest.yuv", width, height)
            grey = GreyFrameFile(
                runtime / "motion.gray", *analysis_size(width, height),
                grey_frame_delay_s(as_int(v["fps"]), self._motion_fps),
            )  # fmt: skip
            argv = v4l2_pusher_args(
                self._device, INPUT_FORMATS[fourcc], width, height,
                as_int(v["fps"]), as_int(v["bitrate"]),
                as_number(v["keyframe_interval"]), target.publish_urls(), str(still.path),
                target.rtsp_transport, (str(grey.path), grey.width, grey.height),
                self._motion_fps,
            )  # fmt: skip
            # Controls go to the device, not to filters.
            return FfmpegLaunch(argv, still, motion=grey)

        return await FfmpegPusher.start("v4l2-pusher", "camera-agent-v4l2-", plan)

    def info(self) -> dict[str, Any]:
        fmt = None
        with contextlib.suppress(CameraError):
            fmt = self.input_format()
        return {
            "backend": self.name,
            "device": self._device,
            "input_format": fmt,
            "formats": sorted(self._formats),
        }

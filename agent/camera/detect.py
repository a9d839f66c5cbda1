"""Which camera is there: `camera.backend = "auto"`.

picamera2 when libcamera sees a CSI camera (a Raspberry Pi camera module), else the first V4L2
node a USB webcam streams from, else the test pattern, with a warning in the log and in `state`.

A Raspberry Pi has many V4L2 nodes that are not cameras an ffmpeg can open: the camera
interface (Pi 4 unicam, Pi 5 rp1-cfe) delivers raw Bayer and needs libcamera to configure the
sensor; the ISP, the codecs and uvcvideo's metadata nodes are not capture devices at all. So a
node is taken only if its own capabilities (the hex "Device Caps", which every v4l2-ctl prints;
the "I/O MC" line only appears from v4l-utils 1.24 on) say video capture without media
controller or memory-to-memory, its driver is not one of the SoC's camera blocks, and it
offers H.264, MJPEG or YUYV.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.camera.v4l2_ctl import list_formats_args, parse_formats
from agent.process import CommandRunner, ProcessStartError, run_command

# linux/videodev2.h
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_VIDEO_M2M_MPLANE = 0x00004000
CAP_VIDEO_M2M = 0x00008000
CAP_IO_MC = 0x20000000

# The Raspberry Pi's own camera, ISP and codec blocks (their driver names in `--info`).
SOC_CAMERA_DRIVERS = frozenset(
    {"unicam", "rp1-cfe", "bcm2835-isp", "pispbe", "bcm2835-codec", "rpivid", "rpi-hevc-dec"}
)
# The formats the V4L2 backend streams from (agent.camera.v4l2.INPUT_FORMATS).
STREAMABLE_FORMATS = ("H264", "MJPG", "YUYV")


def info_args(device: str) -> list[str]:
    return ["v4l2-ctl", "-d", device, "--info"]


@dataclass(frozen=True)
class NodeInfo:
    """What `v4l2-ctl --info` says about one node."""

    driver: str
    card: str
    bus: str
    device_caps: int

    @property
    def captures_video(self) -> bool:
        return bool(self.device_caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE))

    def unusable_reason(self) -> str | None:
        """Why an ffmpeg v4l2 input cannot stream from this node, or None."""
        if self.device_caps & CAP_IO_MC:
            return "a media-controller node (needs the sensor configured through libcamera)"
        if self.device_caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE):
            return "a memory-to-memory (codec) node"
        if not self.captures_video:
            return "not a video capture node"
        if self.driver in SOC_CAMERA_DRIVERS:
            return f"{self.driver} is a Raspberry Pi camera/ISP/codec block, not a webcam"
        return None


_INFO_FIELD = re.compile(
    r"^\t(?P<key>Driver name|Card type|Bus info|Device Caps)\s*: (?P<value>.*)$"
)


def parse_info(text: str) -> NodeInfo:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _INFO_FIELD.match(line)
        if match:
            fields.setdefault(match["key"], match["value"].strip())
    caps = fields.get("Device Caps", "0x0")
    return NodeInfo(
        fields.get("Driver name", "?"),
        fields.get("Card type", "?"),
        fields.get("Bus info", "?"),
        int(caps, 16),
    )


def _node_number(path: Path) -> int:
    match = re.search(r"(\d+)$", path.name)
    return int(match.group(1)) if match else 1 << 30


async def video_nodes(dev: Path) -> Sequence[Path]:
    """/dev/video* in node-number order (video2 before video10)."""
    return await asyncio.to_thread(lambda: sorted(dev.glob("video*"), key=_node_number))


async def find_v4l2_capture(
    dev: Path = Path("/dev"), run: CommandRunner = run_command
) -> tuple[str | None, list[str]]:
    """The node a webcam streams from, and notes on what was skipped and why.

    The first usable camera wins; among its nodes (same bus), one that offers H.264 is taken
    over one that does not, since the camera's own H.264 is copied instead of encoded (some
    cameras give MJPEG on the first node and H.264 on the second).
    """
    notes: list[str] = []
    usable: list[tuple[str, NodeInfo, dict[str, list[tuple[int, int]]]]] = []
    for node in await video_nodes(dev):
        try:
            result = await run(info_args(str(node)))
        except ProcessStartError:
            notes.append("v4l2-ctl is not installed (Debian: v4l-utils); V4L2 cameras not probed")
            break
        if result.returncode != 0:
            notes.append(f"{node}: {result.stderr.strip() or 'cannot be opened'}")
            continue
        info = parse_info(result.stdout)
        reason = info.unusable_reason()
        if reason is None:
            formats = await run(list_formats_args(str(node)))
            offered = parse_formats(formats.stdout) if formats.returncode == 0 else {}
            if any(f in offered for f in STREAMABLE_FORMATS):
                usable.append((str(node), info, offered))
                continue
            listed = ", ".join(offered) or "none"
            reason = f"offers none of {', '.join(STREAMABLE_FORMATS)} (formats: {listed})"
        notes.append(f"{node}: skipped, {reason}")
    if not usable:
        return None, notes
    first_bus = usable[0][1].bus
    same_camera = [entry for entry in usable if entry[1].bus == first_bus]
    chosen = next((entry for entry in same_camera if "H264" in entry[2]), usable[0])
    return chosen[0], notes


def is_csi_camera(info: dict[str, object]) -> bool:
    """picamera2's own test (Picamera2.global_camera_info): a USB camera's id holds "/usb"."""
    return "/usb" not in str(info.get("Id", ""))


def libcamera_cameras() -> int:
    """How many CSI cameras libcamera sees (0 where picamera2 is not installed, e.g. on x86).

    libcamera's uvcvideo pipeline handler lists USB webcams too; those are better driven by the
    V4L2 backend (their own H.264 or MJPEG), so they are not counted.
    """
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return 0
    return sum(1 for info in Picamera2.global_camera_info() if is_csi_camera(info))

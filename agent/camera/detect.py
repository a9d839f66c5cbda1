"""Which camera is there: `camera.backend = "auto"`.

picamera2 when libcamera sees a camera (a Raspberry Pi CSI camera), else the first V4L2 node
that captures video (USB webcams; uvcvideo also creates metadata-only nodes, which are skipped),
else the test pattern, with a warning in the log and in `state`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

from agent.process import CommandRunner, ProcessStartError, run_command


def info_args(device: str) -> list[str]:
    return ["v4l2-ctl", "-d", device, "--info"]


def captures_video(info: str) -> bool:
    """True if `v4l2-ctl --info` lists Video Capture among the node's own (Device) caps."""
    block = info.split("Device Caps", 1)
    if len(block) < 2:
        return False
    caps = []
    for line in block[1].splitlines()[1:]:
        if not line.startswith("\t\t"):
            break
        caps.append(line.strip())
    return "Video Capture" in caps or "Video Capture Multiplanar" in caps


def _node_number(path: Path) -> int:
    match = re.search(r"(\d+)$", path.name)
    return int(match.group(1)) if match else 1 << 30


async def find_v4l2_capture(
    dev: Path = Path("/dev"), run: CommandRunner = run_command
) -> tuple[str | None, list[str]]:
    """The first capturing V4L2 node, and notes on what was skipped and why."""
    notes: list[str] = []
    nodes: Sequence[Path] = await asyncio.to_thread(
        lambda: sorted(dev.glob("video*"), key=_node_number)
    )
    for node in nodes:
        try:
            result = await run(info_args(str(node)))
        except ProcessStartError:
            notes.append("v4l2-ctl is not installed (Debian: v4l-utils); V4L2 cameras not probed")
            break
        if result.returncode == 0 and captures_video(result.stdout):
            return str(node), notes
        notes.append(f"{node}: not a video capture node")
    return None, notes


def libcamera_cameras() -> int:
    """How many cameras libcamera sees (0 where picamera2 is not installed, e.g. on x86)."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return 0
    return len(Picamera2.global_camera_info())

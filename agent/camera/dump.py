"""`camera-agent doctor --dump DIR`: everything a test fixture needs, in the fixture layout.

It writes what the tests load from tests/fixtures/devices/<camera>/ (see the README there):
v4l2-ctl's `--info`, `--list-ctrls-menus` and `--list-formats-ext` of every /dev/video node,
exactly as printed, and `--version`; picamera2's `global_camera_info()`, `camera_properties`,
`sensor_modes`, and `camera_controls` before and after a configure at the agent's size. A
SOURCE.md says when and where it was made. Stop the agent first: a camera in use cannot be
opened twice. Files are written atomically.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import platform
from pathlib import Path
from typing import Any

from agent import __version__
from agent.atomicfile import write_atomic
from agent.camera.detect import info_args, is_csi_camera, video_nodes
from agent.camera.v4l2_ctl import list_controls_args, list_formats_args
from agent.checks import Finding
from agent.process import CommandRunner, ProcessStartError


def _jsonable(value: Any) -> Any:
    """libcamera's values (tuples, enums, Size/Rectangle-like objects) as JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


async def _write(path: Path, text: str) -> None:
    await asyncio.to_thread(write_atomic, path, text.encode())


async def dump_v4l2(directory: Path, dev: Path, run: CommandRunner) -> list[Finding]:
    """Each node's listings under directory/v4l2/<node>/, one finding per node."""
    nodes = await video_nodes(dev)
    if not nodes:
        return [Finding("v4l2", True, f"no {dev}/video* nodes")]
    try:
        version = await run(["v4l2-ctl", "--version"])
    except ProcessStartError:
        return [Finding("v4l2", False, "v4l2-ctl is not installed (Debian: v4l-utils)")]
    await _write(directory / "v4l2" / "version.txt", version.stdout)
    findings = []
    for node in nodes:
        target = directory / "v4l2" / node.name
        failed = []
        for name, argv in (
            ("info.txt", info_args(str(node))),
            ("list-ctrls-menus.txt", list_controls_args(str(node))),
            ("list-formats-ext.txt", list_formats_args(str(node))),
        ):
            result = await run(argv)
            await _write(target / name, result.stdout)
            if result.returncode != 0:
                # Kept beside the listing: what v4l2-ctl said is part of the device's story.
                await _write(target / f"{name}.stderr", result.stderr)
                failed.append(f"{name}: {result.stderr.strip() or 'failed'}")
        findings.append(Finding(f"v4l2 {node}", not failed, "; ".join(failed) or str(target)))
    return findings


def _picamera2_dump(width: int, height: int, fps: int) -> dict[str, Any] | None:
    """picamera2.json's content for CSI camera 0, or None without picamera2 or a CSI camera."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return None
    cameras = Picamera2.global_camera_info()
    if not any(is_csi_camera(info) for info in cameras):
        return None
    try:
        from picamera2.platform import (  # type: ignore[import-not-found]  # noqa: PLC0415
            Platform,
            get_platform,
        )

        board = "vc4" if get_platform() == Platform.VC4 else "pisp"
    except ImportError:
        board = "unknown"
    camera = Picamera2(0)
    try:
        before = camera.camera_controls
        configuration = {
            "main": {"size": [width, height], "format": "YUV420"},
            "controls": {"FrameRate": fps},
        }
        camera.configure(
            camera.create_video_configuration(
                main={"size": (width, height), "format": "YUV420"}, controls={"FrameRate": fps}
            )
        )
        body: dict[str, Any] = _jsonable({
            "platform": board,
            "global_camera_info": cameras,
            "camera_properties": camera.camera_properties,
            "sensor_modes": camera.sensor_modes,
            "configuration": configuration,
            "camera_controls_before": before,
            "camera_controls_after": camera.camera_controls,
        })  # fmt: skip
        return body
    finally:
        camera.close()


async def dump_devices(
    directory: Path, dev: Path, run: CommandRunner, size: tuple[int, int, int]
) -> list[Finding]:
    """The whole dump: one finding per thing written, or not written and why."""
    findings = await dump_v4l2(directory, dev, run)
    try:
        body = await asyncio.to_thread(_picamera2_dump, *size)
    except RuntimeError as err:  # the camera is in use (the agent runs) or failed to open
        reason = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
        findings.append(
            Finding("picamera2", False, f"camera 0 not opened ({reason}); is the agent running?")
        )
        body = None
    if body is not None:
        path = directory / "picamera2.json"
        await _write(path, json.dumps(body, indent=1) + "\n")
        findings.append(Finding("picamera2", True, str(path)))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = (
        f"# {platform.node()}\n\n"
        f"Dumped by `camera-agent doctor --dump` {__version__} on {stamp}, "
        f"{platform.system()} {platform.release()} ({platform.machine()}).\n"
        "Say here which camera this is (make, model, how it is connected).\n"
    )
    await _write(directory / "SOURCE.md", source)
    return findings

"""`camera-agent selftest`: drive the camera backend through a scripted tour and report.

The tour: open the camera; start the stream; set every settable control to its minimum, maximum
and default (with the auto control it depends on switched to manual first) and read each back
from the camera itself (`CameraBackend.confirm`: the driver's values for V4L2, a frame's metadata
for picamera2); take a picture, checked for its size and for not being uniform; make a
restart-class change and check the stream comes back with it; record 3 s of the stream and check
the file with ffprobe; stop. The tests run the same tour against the fakes fed by every fixture
in tests/fixtures/devices/ (without the recording, which needs MediaMTX, and for V4L2 without
the stream, which needs a device ffmpeg can open).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from agent.camera.base import (
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    same_value,
)
from agent.camera.settings import plan_change
from agent.checks import Finding
from agent.errors import AgentError
from agent.jobs.captures import probe_media
from agent.process import run_command
from agent.stream.pusher import Pusher
from agent.stream.target import StreamTarget

# A Pi Zero, or arm64 under QEMU, takes over 10 s from the encoder's start to its first frame.
FIRST_FRAME_TIMEOUT_S = 30.0
RECORD_S = 3.0


@dataclass(frozen=True)
class Step(Finding):
    """One step of the tour: `[pass]` or `[FAIL]`."""

    PASSED: ClassVar[str] = "pass"


@dataclass
class TourStream:
    """Where the tour streams to, and whether it records the stream back (needs MediaMTX)."""

    target: StreamTarget
    record: bool = True
    pusher: Pusher | None = field(default=None, init=False)


def _targets(d: ControlDescriptor) -> list[ControlValue]:
    """Minimum, maximum and default, in the control's own type."""
    if d.type is ControlType.BOOL:
        return [False, True, d.default]
    if d.type is ControlType.MENU:
        return [d.options[0].value, d.options[-1].value, d.default] if d.options else []
    if d.minimum is None or d.maximum is None:
        return [d.default]
    if d.type is ControlType.PAIR:
        return [(d.minimum, d.minimum), (d.maximum, d.maximum), d.default]
    low, high = d.minimum, d.maximum
    if d.type is ControlType.INT and d.step:
        high = low + (high - low) // d.step * d.step  # the last value on the step
    kind = int if d.type is ControlType.INT else float
    return [kind(low), kind(high), d.default]


async def _set_and_confirm(
    backend: CameraBackend, pusher: Pusher | None, d: ControlDescriptor, target: ControlValue
) -> str | None:
    """None if the camera keeps ``target``; else what went wrong."""
    request: dict[str, object] = {d.name: target}
    if d.active_if is not None:
        request = {d.active_if.control: d.active_if.value, **request}
    try:
        plan = plan_change(backend.descriptors(), backend.values(), request)
        await backend.apply(plan.values, restart=False)
        if pusher is not None:
            await pusher.apply_live(plan.values)  # as CameraControls does
        reported = await backend.confirm({d.name: plan.values[d.name]})
    except AgentError as err:
        return f"{target!r}: {err}"
    wanted, got = plan.values[d.name], reported.get(d.name)
    if not same_value(got, wanted, backend.readback_rel_tol):
        return f"set {wanted!r}, the camera reports {got!r}"
    return None


async def control_steps(backend: CameraBackend, pusher: Pusher | None = None) -> list[Step]:
    """Every live control to min, max and default, read back; then the values of before."""
    steps: list[Step] = []
    before = backend.values()
    for d in backend.descriptors():
        if d.read_only or d.restarts_stream:
            continue
        problems = [p for t in _targets(d) if (p := await _set_and_confirm(backend, pusher, d, t))]
        steps.append(
            Step(f"control {d.name}", not problems, "; ".join(problems) or "min, max, default")
        )
    settable = {d.name for d in backend.descriptors() if not d.read_only and not d.restarts_stream}
    with contextlib.suppress(AgentError):
        restore = {k: v for k, v in before.items() if k in settable}
        plan = plan_change(backend.descriptors(), backend.values(), restore)
        await backend.apply(plan.values, restart=False)
    return steps


def _uniform(data: bytes) -> bool:
    sample = data[: min(len(data), 1 << 20) : 97]
    return len(set(sample)) <= 1


async def picture_step(backend: CameraBackend, pusher: Pusher, name: str = "picture") -> Step:
    """A picture of the configured size that is not one flat colour (waits for a first frame)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIRST_FRAME_TIMEOUT_S
    # An encoder that ended (MediaMTX unreachable, a device error) brings no frame: say so at
    # once rather than at the deadline, which is long for slow devices.
    ended = asyncio.create_task(pusher.wait())
    try:
        while True:
            try:
                frame = await pusher.latest_frame()
                break
            except AgentError as err:
                if ended.done():
                    return Step(name, False, f"the encoder ended ({ended.result()}): "
                                f"{pusher.stderr_text(3) or err}")  # fmt: skip
                if loop.time() > deadline:
                    return Step(name, False, str(err))
                await asyncio.sleep(0.2)  # the device opening, the encoder's first keyframe
    finally:
        ended.cancel()
    data = await asyncio.to_thread(Path(frame.path).read_bytes)
    expected = frame.width * frame.height * 3 // 2
    values = backend.values()
    problems = []
    if (frame.width, frame.height) != (values.get("width"), values.get("height")):
        problems.append(f"{frame.width}x{frame.height}, not the configured size")
    if len(data) != expected:
        problems.append(f"{len(data)} bytes, a {frame.width}x{frame.height} frame has {expected}")
    if _uniform(data):
        problems.append("the picture is uniform (a black or frozen sensor?)")
    return Step(name, not problems, "; ".join(problems) or f"{frame.width}x{frame.height}")


async def _start_stream(backend: CameraBackend, stream: TourStream) -> Step:
    try:
        stream.pusher = await backend.start_pusher(stream.target)
    except AgentError as err:
        return Step("stream", False, str(err))
    return Step("stream", True, f"publishing to {stream.target.url}")


async def _stop_stream(stream: TourStream) -> None:
    if stream.pusher is not None:
        await stream.pusher.stop()
        stream.pusher = None


async def restart_step(backend: CameraBackend, stream: TourStream | None) -> Step:
    """A restart-class change (the frame rate) is accepted, and the stream comes back with it."""
    name = "restart-class change"
    if "fps" not in {d.name for d in backend.descriptors()}:
        return Step(name, False, "the camera has no fps control")
    current = backend.values()["fps"]
    target = 15 if current != 15 else 10
    plan = plan_change(backend.descriptors(), backend.values(), {"fps": target})
    if not plan.restart:
        return Step(name, False, "fps did not ask for a pipeline restart")
    await backend.apply(plan.values, restart=True)
    detail = f"fps {current} -> {target}"
    if stream is not None and stream.pusher is not None:
        await _stop_stream(stream)  # what the supervisor does for a restart
        started = await _start_stream(backend, stream)
        if not started.ok or stream.pusher is None:
            return Step(name, False, f"{detail}: the stream did not come back: {started.detail}")
        picture = await picture_step(backend, stream.pusher)
        if not picture.ok:
            return Step(name, False, f"{detail}: no picture after the restart: {picture.detail}")
        detail += ", stream back"
    if backend.values()["fps"] != target:
        return Step(name, False, f"{detail}, but fps is {backend.values()['fps']}")
    return Step(name, True, detail)


async def record_step(target: StreamTarget, seconds: float = RECORD_S) -> Step:
    """Read the stream back from MediaMTX for a few seconds and check the file with ffprobe."""
    name = f"record {seconds:g} s"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIRST_FRAME_TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="camera-agent-selftest-") as tmp:
        path = Path(tmp) / "record.mp4"
        argv = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-rtsp_transport", "tcp",
            "-i", target.url_with_credentials(), "-t", str(seconds), "-c", "copy", str(path),
        ]  # fmt: skip
        while True:
            result = await run_command(argv)
            # 404: the encoder runs but MediaMTX has not got the stream yet (just restarted).
            if result.returncode == 0 or "404" not in result.stderr or loop.time() > deadline:
                break
            await asyncio.sleep(0.3)
        if result.returncode != 0:
            return Step(name, False, result.stderr.strip()[-300:] or "ffmpeg failed")
        media = await asyncio.to_thread(probe_media, path)
    duration = media.get("duration_s") or 0.0
    ok = media.get("codec") == "h264" and duration >= seconds - 0.5
    summary = f"{media.get('codec')} {media.get('width')}x{media.get('height')}, {duration} s"
    return Step(name, ok, summary)


async def run_tour(backend: CameraBackend, stream: TourStream | None = None) -> list[Step]:
    """The tour; without ``stream``, the parts that need a running stream are left out."""
    try:
        await backend.start()
    except AgentError as err:
        return [Step("open the camera", False, str(err))]
    steps = [Step("open the camera", True, str(backend.info()))]
    try:
        streaming = False
        if stream is not None:
            steps.append(await _start_stream(backend, stream))
            if stream.pusher is not None:
                steps.append(await picture_step(backend, stream.pusher, "first frame"))
                streaming = steps[-1].ok
            if not streaming:  # the rest of the tour without a stream, instead of timing out
                await _stop_stream(stream)
        steps += await control_steps(backend, stream.pusher if stream is not None else None)
        if streaming and stream is not None and stream.pusher is not None:
            steps.append(await picture_step(backend, stream.pusher))
        steps.append(await restart_step(backend, stream if streaming else None))
        if streaming and stream is not None and stream.record:
            steps.append(await record_step(stream.target))
    finally:
        if stream is not None:
            await _stop_stream(stream)
        await backend.stop()
    steps.append(Step("stop", True, "camera released"))
    return steps

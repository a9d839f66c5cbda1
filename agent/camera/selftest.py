"""`camera-agent selftest`: drive the camera backend through a scripted tour and report.

The tour: open the camera; set every settable control to its minimum, maximum and default (with
the auto control it depends on switched to manual first) and read each back; a restart-class
change; then, with a stream: a picture checked for its size and for not being uniform, 3 s of
the stream recorded and checked with ffprobe; and stop. The tests run the same tour against the
fakes fed by every fixture in tests/fixtures/devices/, without the stream part.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.camera.base import (
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
    StreamTarget,
)
from agent.camera.settings import plan_change
from agent.errors import AgentError
from agent.jobs.captures import probe_media
from agent.process import run_command

FIRST_FRAME_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'pass' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


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


def _same(a: ControlValue | None, b: ControlValue) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-6
    return a == b


async def control_steps(backend: CameraBackend) -> list[Step]:
    """Every live control to min, max and default, read back; then the values of before."""
    steps: list[Step] = []
    before = backend.values()
    for d in backend.descriptors():
        if d.read_only or d.restarts_stream:
            continue
        problems: list[str] = []
        for target in _targets(d):
            request: dict[str, object] = {d.name: target}
            if d.active_if is not None:
                request = {d.active_if.control: d.active_if.value, **request}
            try:
                plan = plan_change(backend.descriptors(), backend.values(), request)
                await backend.apply(plan.values, restart=False)
            except AgentError as err:
                problems.append(f"{target!r}: {err}")
                continue
            got = backend.values().get(d.name)
            if not _same(got, plan.values[d.name]):
                problems.append(f"set {plan.values[d.name]!r}, read back {got!r}")
        steps.append(
            Step(f"control {d.name}", not problems, "; ".join(problems) or "min, max, default")
        )
    restore = {
        k: v
        for k, v in before.items()
        if k in {d.name for d in backend.descriptors() if not d.read_only}
    }
    with contextlib.suppress(AgentError):
        plan = plan_change(backend.descriptors(), backend.values(), restore)
        await backend.apply(plan.values, restart=False)
    return steps


async def restart_step(backend: CameraBackend) -> Step:
    """A restart-class change (the frame rate) is accepted and kept."""
    by_name = {d.name: d for d in backend.descriptors()}
    fps = by_name.get("fps")
    if fps is None:
        return Step("restart-class change", False, "the camera has no fps control")
    current = backend.values()["fps"]
    target = 15 if current != 15 else 10
    plan = plan_change(backend.descriptors(), backend.values(), {"fps": target})
    if not plan.restart:
        return Step("restart-class change", False, "fps did not ask for a pipeline restart")
    await backend.apply(plan.values, restart=True)
    ok = backend.values()["fps"] == target
    await backend.apply({"fps": current}, restart=True)
    return Step("restart-class change", ok, f"fps {current} -> {target} -> {current}")


def _uniform(data: bytes) -> bool:
    sample = data[: min(len(data), 1 << 20) : 97]
    return len(set(sample)) <= 1


async def picture_step(backend: CameraBackend) -> Step:
    try:
        frame = await backend.latest_frame()
    except AgentError as err:
        return Step("picture", False, str(err))
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
    return Step("picture", not problems, "; ".join(problems) or f"{frame.width}x{frame.height}")


async def record_step(target: StreamTarget, seconds: float = 3.0) -> Step:
    """Read the stream back from MediaMTX for a few seconds and check the file with ffprobe."""
    with tempfile.TemporaryDirectory(prefix="camera-agent-selftest-") as tmp:
        path = Path(tmp) / "record.mp4"
        argv = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
            "-i", target.url_with_credentials(), "-t", str(seconds), "-c", "copy", str(path),
        ]  # fmt: skip
        result = await run_command(argv)
        if result.returncode != 0:
            return Step("record 3 s", False, result.stderr.strip()[-300:] or "ffmpeg failed")
        media = await asyncio.to_thread(probe_media, path)
    duration = media.get("duration_s") or 0.0
    ok = media.get("codec") == "h264" and duration >= seconds - 0.5
    return Step(
        "record 3 s",
        ok,
        f"{media.get('codec')} {media.get('width')}x{media.get('height')}, {duration} s",
    )


async def run_tour(
    backend: CameraBackend,
    stream: Callable[[], Awaitable[Sequence[Step]]] | None = None,
) -> list[Step]:
    """The tour; ``stream`` runs the part that needs a running stream (None: left out)."""
    try:
        await backend.start()
    except AgentError as err:
        return [Step("open the camera", False, str(err))]
    steps = [Step("open the camera", True, str(backend.info()))]
    try:
        steps += await control_steps(backend)
        steps.append(await restart_step(backend))
        if stream is not None:
            steps += await stream()
    finally:
        await backend.stop()
    steps.append(Step("stop", True, "camera released"))
    return steps


async def stream_steps(backend: CameraBackend, target: StreamTarget) -> list[Step]:
    """Start the pipeline into MediaMTX, take a picture, record, stop it."""
    try:
        pusher = await backend.start_pusher(target)
    except AgentError as err:
        return [Step("stream", False, str(err))]
    steps = [Step("stream", True, f"publishing to {target.url}")]
    try:
        # The first frame takes a moment (the device opening, the encoder's first keyframe).
        deadline = asyncio.get_running_loop().time() + FIRST_FRAME_TIMEOUT_S
        picture = await picture_step(backend)
        while not picture.ok and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            picture = await picture_step(backend)
        steps.append(picture)
        steps.append(await record_step(target))
    finally:
        await pusher.stop()
        await backend.pusher_stopped()
    return steps

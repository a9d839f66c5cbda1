"""One run of the encoding pipeline, as one object.

A Pusher owns what belongs to that run: its encoder (an ffmpeg process, or picamera2's encoder),
its latest frame (what pictures are made from), the channel that changes its filters live, and
its private runtime directory; `stop()` ends them all together, and a new run is a new object.
The supervisor starts and watches pushers without knowing which camera made them; backends
build them (MediaMTX gives each running source one such object, internal/core/source*.go).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.process import ManagedProcess
from agent.stream.filter_commands import FilterCommandChannel, FilterCommandError
from agent.stream.motion_frames import MotionFrameSource
from agent.stream.still import RawFrame, StillFile

log = logging.getLogger(__name__)

# Values of live controls, as the backend that built the pusher understands them.
LiveValues = Mapping[str, object]


class Pusher(Protocol):
    """A running encoder publishing into MediaMTX."""

    @property
    def pid(self) -> int | None: ...

    async def wait(self) -> int:
        """Until the encoder ends (crash, broken pipe); its exit status."""
        ...

    async def stop(self, grace_s: float = 3.0) -> int | None:
        """End the run and everything it owns; idempotent."""
        ...

    def stderr_text(self, lines: int = 20) -> str: ...

    async def latest_frame(self) -> RawFrame:
        """The current full-resolution frame; CameraError when there is none."""
        ...

    async def apply_live(self, values: LiveValues) -> None:
        """Changes this run takes without a restart (filters); a no-op where the camera itself
        takes them."""
        ...

    def motion_frames(self) -> MotionFrameSource | None:
        """This run's small grey frames for motion detection; None where there are none."""
        ...


def runtime_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A private directory for one run, in RAM where there is some: the latest frame is
    rewritten at every frame."""
    shm = "/dev/shm"  # noqa: S108 - a private mkdtemp directory inside it
    return tempfile.TemporaryDirectory(prefix=prefix, dir=shm if os.access(shm, os.W_OK) else None)


@dataclass(frozen=True)
class FfmpegLaunch:
    """What a backend asks of an ffmpeg run, given the run's own directory."""

    argv: list[str]
    still: StillFile
    filter_endpoint: str | None = None  # ffmpeg's zmq filter, for live changes
    live_commands: Callable[[LiveValues], list[str]] | None = None
    motion: MotionFrameSource | None = None  # the grey output, where the run has one


class FfmpegPusher:
    """An ffmpeg process publishing to MediaMTX, with its latest frame and filter channel."""

    def __init__(
        self,
        process: ManagedProcess,
        runtime: tempfile.TemporaryDirectory[str],
        launch: FfmpegLaunch,
    ) -> None:
        self._process = process
        self._runtime: tempfile.TemporaryDirectory[str] | None = runtime
        self._still = launch.still
        self._motion = launch.motion
        self._live_commands = launch.live_commands
        self._channel = (
            FilterCommandChannel(launch.filter_endpoint) if launch.filter_endpoint else None
        )

    @classmethod
    async def start(
        cls, name: str, prefix: str, plan: Callable[[Path], FfmpegLaunch]
    ) -> FfmpegPusher:
        """Make the run's directory, plan the run in it, start ffmpeg; nothing is left over if
        the start fails (ProcessStartError for a missing ffmpeg)."""
        runtime = runtime_dir(prefix)
        try:
            launch = plan(Path(runtime.name))
            process = ManagedProcess(launch.argv, name)
            await process.start()
        except BaseException:
            runtime.cleanup()
            raise
        return cls(process, runtime, launch)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def wait(self) -> int:
        return await self._process.wait()

    async def stop(self, grace_s: float = 3.0) -> int | None:
        code = await self._process.stop(grace_s)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._runtime is not None:
            self._runtime.cleanup()
            self._runtime = None
        return code

    def stderr_text(self, lines: int = 20) -> str:
        return self._process.stderr_text(lines)

    async def latest_frame(self) -> RawFrame:
        return await self._still.frame()

    def motion_frames(self) -> MotionFrameSource | None:
        return self._motion

    async def apply_live(self, values: LiveValues) -> None:
        if self._channel is None or self._live_commands is None:
            return
        for command in self._live_commands(values):
            try:
                await self._channel.send(command)
            except FilterCommandError as err:
                # The value is kept by the backend and applies when the pipeline restarts.
                log.warning("live change not applied now: %s", err)

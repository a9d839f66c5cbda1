"""StreamSupervisor: keeps the camera's encoder publishing into MediaMTX.

States: stopped -> starting -> online, and on a failure backoff -> starting again; failed when
the pipeline cannot be started at all (until `stream start|restart`). "Online" is what
MediaMTX's API says (`/v3/paths/get/<path>` ready), not merely a running process. While online,
the received byte counter must keep growing: a pusher that runs but sends nothing (a stall) is
killed and restarted like one that exited. Restarts back off exponentially, capped, and the
backoff resets once a pusher stayed up for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.errors import CameraError
from agent.process import ProcessStartError
from agent.stream.mediamtx import MediaMtxApi
from agent.stream.motion_frames import MotionFrameSource
from agent.stream.outages import (
    MEDIAMTX_UNREACHABLE,
    SETTINGS_CHANGE,
    STREAM_RESTART,
    STREAM_STOPPED,
    OutageLog,
)
from agent.stream.pusher import LiveValues, Pusher
from agent.stream.still import RawFrame
from agent.stream.target import StreamTarget

log = logging.getLogger(__name__)

START_POLL_S = 0.05
WATCH_POLL_S = 1.0
STABLE_AFTER_S = 10.0  # a pusher up this long was not a crash loop: the backoff starts over
# How long a picture waits for the next run of a wanted stream that is between two runs.
NEXT_RUN_WAIT_S = 10.0


class StreamState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    ONLINE = "online"
    BACKOFF = "backoff"
    FAILED = "failed"


class _Outcome(StrEnum):
    EXITED = "exited"
    STALLED = "stalled"
    START_TIMEOUT = "start timeout"
    INTERRUPTED = "interrupted"  # stop or restart requested
    UNEXPECTED = "unexpected error"  # an exception nobody foresaw (a bug, an odd OS error)


@dataclass(frozen=True)
class SupervisorSettings:
    restart_min_s: float = 0.5
    restart_max_s: float = 30.0
    start_timeout_s: float = 10.0
    stall_timeout_s: float = 5.0


# (event name, ok, message, data) for `BASE/status`.
StreamReport = Callable[[str, bool, str, dict[str, Any]], None]
# Starts one run of the pipeline (the camera backend's start_pusher).
PusherFactory = Callable[[StreamTarget], Awaitable[Pusher]]


class StreamSupervisor:
    def __init__(
        self,
        start_pusher: PusherFactory,
        api: MediaMtxApi,
        target: StreamTarget,
        settings: SupervisorSettings,
        report: StreamReport,
        changed: Callable[[], None],
    ) -> None:
        self._start_pusher = start_pusher
        self._api = api
        self._target = target
        self._settings = settings
        self._report = report
        self._changed = changed
        self._wanted = False
        self._kick = asyncio.Event()
        self._online = asyncio.Event()
        self._failed = asyncio.Event()  # the pipeline could not start at all
        self._idle = asyncio.Event()  # no pusher, none wanted
        self._pusher: Pusher | None = None
        self._has_pusher = asyncio.Event()  # set while a run of the pipeline exists
        self.state = StreamState.STOPPED
        self.since = time.time()
        self.restarts = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self.outages = OutageLog()
        # Why the next interruption of a running pusher happens (restart() says: a setting).
        self._interrupt_cause = STREAM_STOPPED

    def snapshot(self) -> dict[str, Any]:
        """The stream part of `BASE/state`."""
        return {
            "state": str(self.state),
            "url": self._target.url,
            "since": self.since,
            "restarts": self.restarts,
            "pid": self._pusher.pid if self._pusher else None,
            "last_error": self.last_error,
        }

    # -- commands ------------------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        """Whether the stream should be running (autostart or `stream start`)."""
        return self._wanted

    def start(self) -> None:
        """Want the stream. A pipeline already running or starting is left alone: a kick
        would be taken for an interruption and restart it."""
        if self._wanted and self.state in (StreamState.ONLINE, StreamState.STARTING):
            return
        self._wanted = True
        self._failed.clear()
        self._kick.set()

    def stop(self) -> None:
        self._wanted = False
        self._interrupt_cause = STREAM_STOPPED
        self._kick.set()

    async def stopped(self, timeout_s: float = 10.0) -> None:
        """Wait until the pusher is gone after `stop`."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def restart(self, timeout_s: float | None = None, cause: str = SETTINGS_CHANGE) -> float:
        """Recreate the pipeline (new parameters); returns how long the stream was down.

        A stream that failed to start is started again (the new parameters may be what it
        needed, or the old ones being put back); a stopped one stays stopped. Raises
        CameraError as soon as the new pipeline cannot start, or when it is not back in time.
        """
        if not self._wanted and self.state is not StreamState.FAILED:
            return 0.0
        began = time.monotonic()
        self._online.clear()
        self._failed.clear()
        self._wanted = True
        # What a recording's gap will name: a restart-class setting, or `stream restart`.
        self._interrupt_cause = cause
        self._kick.set()
        online = asyncio.create_task(self._online.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait(
                {online, failed},
                timeout=timeout_s or self._settings.start_timeout_s + 5,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            online.cancel()
            failed.cancel()
        if not self._online.is_set():
            raise CameraError(
                f"the stream did not come back after the restart: {self.last_error or 'timeout'}"
            )
        return time.monotonic() - began

    async def wait_online(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._online.wait(), timeout_s)

    async def latest_frame(self) -> RawFrame:
        """The running pipeline's current frame; CameraError when nothing runs.

        Between two runs of a wanted stream (a restart for a setting, the pause after a
        crash) it waits up to NEXT_RUN_WAIT_S for the next run: a picture asked for during a
        restart is taken from the new pipeline instead of failing."""
        if self._pusher is None and self._wanted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_pusher.wait(), NEXT_RUN_WAIT_S)
        pusher = self._pusher
        if pusher is None:
            if self._wanted:
                raise CameraError(
                    f"the stream is {self.state}, not back within {NEXT_RUN_WAIT_S:g} s"
                    f" ({self.last_error or 'restarting'})"
                )
            raise CameraError(f"the stream is {self.state} (`stream start` first)")
        return await pusher.latest_frame()

    def motion_frames(self) -> MotionFrameSource | None:
        """The running pipeline's grey frames for motion detection (a new object per run)."""
        return self._pusher.motion_frames() if self._pusher is not None else None

    async def apply_live(self, values: LiveValues) -> None:
        """Hand live changes to the running pipeline (its filters); kept for the next run
        otherwise, since the backend holds the values."""
        if self._pusher is not None:
            await self._pusher.apply_live(values)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                if not self._wanted:
                    self._set(
                        StreamState.STOPPED if self.state != StreamState.FAILED else self.state
                    )
                    self._idle.set()
                    await self._kick.wait()
                    self._kick.clear()
                    continue
                self._idle.clear()
                self._kick.clear()
                try:
                    outcome, uptime = await self._run_once()
                except Exception as err:
                    # Treated like a crashed pusher (retried after the backoff): an error in
                    # the stream must not end the TaskGroup, i.e. the whole agent.
                    log.exception("stream pipeline failed unexpectedly; restarting it")
                    self.last_error = f"unexpected error: {err}"
                    outcome, uptime = _Outcome.UNEXPECTED, 0.0
                    self._went_down(outcome, "")
                if outcome is _Outcome.INTERRUPTED or not self._wanted:
                    continue
                failures = 0 if uptime >= STABLE_AFTER_S else failures + 1
                delay = min(
                    self._settings.restart_min_s * 2 ** (failures - 1), self._settings.restart_max_s
                )
                self._set(StreamState.BACKOFF)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)
        finally:
            await self._stop_pusher()

    async def _run_once(self) -> tuple[_Outcome | None, float]:
        """Start one pusher and watch it until it ends; returns why, and its time online."""
        self._set(StreamState.STARTING)
        try:
            self._pusher = await self._start_pusher(self._target)
            self._has_pusher.set()
        except (ProcessStartError, CameraError) as err:
            self._wanted = False
            self.last_error = str(err)
            self._set(StreamState.FAILED)
            self._failed.set()
            self._report("stream.failed", False, f"ERROR: stream cannot start: {err}", {})
            log.error("stream cannot start: %s", err)
            return None, 0.0
        exit_task = asyncio.create_task(self._pusher.wait())
        online_at: float | None = None
        outcome: _Outcome | None = None
        try:
            outcome = await self._wait_ready(exit_task)
            if outcome is None:
                online_at = time.monotonic()
                self._went_online()
                outcome = await self._watch(exit_task)
        finally:
            uptime = time.monotonic() - online_at if online_at else 0.0
            stderr = self._pusher.stderr_text() if self._pusher else ""
            if online_at is not None:
                # An online stream stops: by request (a setting, `stream stop`, the agent
                # stopping: outcome None) or because the pusher died or stalled.
                crashed = outcome in (_Outcome.EXITED, _Outcome.STALLED)
                self.outages.begin(STREAM_RESTART if crashed else self._interrupt_cause)
            self._interrupt_cause = STREAM_STOPPED
            await self._stop_pusher()
            exit_task.cancel()
        if outcome is not _Outcome.INTERRUPTED:
            self._went_down(outcome, stderr)
        return outcome, uptime

    async def _interrupted_or_exited(
        self, exit_task: asyncio.Task[int], poll_s: float
    ) -> _Outcome | None:
        kick = asyncio.create_task(self._kick.wait())
        try:
            await asyncio.wait(
                {exit_task, kick}, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            kick.cancel()
        if self._kick.is_set():
            return _Outcome.INTERRUPTED
        if exit_task.done():
            return _Outcome.EXITED
        return None

    async def _wait_ready(self, exit_task: asyncio.Task[int]) -> _Outcome | None:
        deadline = time.monotonic() + self._settings.start_timeout_s
        while True:
            status = await self._api.path(self._target.recorded_path)
            # Ready alone means the pusher announced itself; data flowing means viewers get frames.
            if status is not None and status.online and status.bytes_received > 0:
                return None
            if time.monotonic() > deadline:
                self.last_error = self._api.last_error or "MediaMTX never reported the path ready"
                return _Outcome.START_TIMEOUT
            outcome = await self._interrupted_or_exited(exit_task, START_POLL_S)
            if outcome is not None:
                return outcome

    async def _watch(self, exit_task: asyncio.Task[int]) -> _Outcome:
        last_bytes = -1
        last_progress = time.monotonic()
        while True:
            outcome = await self._interrupted_or_exited(exit_task, WATCH_POLL_S)
            if outcome is not None:
                return outcome
            status = await self._api.path(self._target.recorded_path)
            now = time.monotonic()
            if status is not None and status.online and status.bytes_received != last_bytes:
                last_bytes = status.bytes_received
                last_progress = now
            elif now - last_progress > self._settings.stall_timeout_s:
                self.last_error = self._api.last_error or "no data reached MediaMTX"
                return _Outcome.STALLED

    async def _stop_pusher(self) -> None:
        self._online.clear()  # whoever waits for "online" now waits for the next pusher
        pusher, self._pusher = self._pusher, None
        self._has_pusher.clear()
        if pusher is not None:
            await pusher.stop()

    # -- transitions ---------------------------------------------------------------------

    def _set(self, state: StreamState) -> None:
        if state != self.state:
            self.state = state
            self.since = time.time()
            self._changed()

    def _went_online(self) -> None:
        downtime = time.monotonic() - self._down_since if self._down_since else None
        self._set(StreamState.ONLINE)
        self._online.set()
        if self._down_since is not None:
            self.restarts += 1
            log.info("stream back online at %s after %.2f s", self._target.url, downtime or 0)
            self._report(
                "stream.online",
                True,
                f"SUCCESS: stream back online after {downtime:.2f} s",
                {"url": self._target.url, "downtime_s": round(downtime or 0, 3)},
            )
        else:
            log.info("stream online at %s", self._target.url)
            self._report(
                "stream.online",
                True,
                f"SUCCESS: streaming to {self._target.url}",
                {"url": self._target.url},
            )
        self._down_since = None
        self.last_error = None
        self.outages.end()

    def _went_down(self, outcome: _Outcome | None, stderr: str) -> None:
        if outcome is None:
            return
        if outcome is _Outcome.START_TIMEOUT and self._api.last_error is not None:
            self.outages.explain(MEDIAMTX_UNREACHABLE)  # the API did not answer: MediaMTX is down
        if outcome is _Outcome.EXITED and self.last_error is None:
            self.last_error = (
                f"the pusher exited: {stderr.splitlines()[-1] if stderr else 'no output'}"
            )
        if self._down_since is None:  # once per outage, however many attempts it takes
            self._down_since = time.monotonic()
            log.warning("stream down (%s): %s", outcome, self.last_error)
            self._report(
                "stream.down",
                False,
                f"ERROR: stream down ({outcome}): {self.last_error}",
                {"reason": str(outcome), "stderr": stderr.splitlines()[-20:]},
            )

"""timelapse: a picture every interval into a folder of its own, then (optionally) a video.

Frames are timed against the wall clock: frame k is due at start + k x interval, so a slow frame
does not push the later ones back. A tick that cannot be kept (the agent was down, the stream
had no frame, the disk was full) is skipped, never made up with a burst, and noted. The series
is journalled in `state_dir/timelapse/`: after a restart it goes on with the next number on the
same schedule, and never overwrites a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.camera.base import AppliedChange, ControlValue
from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file
from agent.jobs.journal import Journal
from agent.jobs.manager import JobContext, JobRunner
from agent.jobs.model import Job
from agent.jobs.picture import save_frame
from agent.process import ManagedProcess
from agent.stream.supervisor import StreamSupervisor

log = logging.getLogger(__name__)

MAX_FRAMES = 999_999  # six-digit frame numbers
FRAME_NAME = re.compile(r"^(\d{6})\.jpg$")
ASSEMBLE_PROGRESS_S = 1.0
# A tick is kept when the frame can be taken within this much of its time; later, it is missed.
LATE_S = 1.0

ControlChange = Callable[[Mapping[str, object]], Awaitable[AppliedChange]]
# The values that freeze automatic exposure and white balance where they are, and the automatic
# values to restore afterwards; None when there is nothing automatic to freeze.
LockPlan = Callable[[], tuple[dict[str, ControlValue], dict[str, ControlValue]] | None]
TIMING_WINDOW = 1000  # frames whose lateness the result summarises


@dataclass
class SeriesEntry:
    """A running series, as journalled."""

    job_id: str
    request_id: str | None
    params: dict[str, Any]
    folder: str  # relative to the captures directory
    start: float  # Unix time of frame 1's tick
    next_tick: int  # the schedule's index of the next tick (frame k's tick is start + k*interval)
    taken: int = 0
    missed: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    unlocked: dict[str, Any] | None = None  # the values `lock` replaced, restored at the end
    lock: dict[str, Any] | None = None  # what `lock` did, for the result


class SeriesJournal(Journal[SeriesEntry]):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, SeriesEntry, "timelapse")


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")


def frames_in(folder: Path) -> int:
    """The highest frame number in ``folder`` (0 if none): the next frame is one more."""
    highest = 0
    with contextlib.suppress(FileNotFoundError):
        for path in folder.iterdir():
            match = FRAME_NAME.match(path.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest


class Timelapse:
    """Makes timelapse jobs; one instance per agent."""

    def __init__(
        self,
        stream: StreamSupervisor,
        captures: Captures,
        journal: SeriesJournal,
        change_controls: ControlChange,
        lock_plan: LockPlan,
        min_interval_s: float,
    ) -> None:
        """``lock_plan``: see LockPlan; ``change_controls`` applies values like a settings
        command (validated, persisted, reported in state)."""
        self._stream = stream
        self._captures = captures
        self._journal = journal
        self._change_controls = change_controls
        self._lock_plan = lock_plan
        self._min_interval_s = min_interval_s

    def runner(self, params: dict[str, Any]) -> JobRunner:
        """Validate a `timelapse` request against the config and the clock (answered at once
        when wrong) and make its runner."""
        interval, until = params["interval"], params["until"]
        if interval < self._min_interval_s:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT,
                f"interval {interval:g} s is under the {self._min_interval_s:g} s minimum"
                " (jobs.timelapse_min_interval_s)",
            )
        now = time.time()
        if until is not None and until <= now:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT, f"until {_iso(until)} is in the past (now {_iso(now)})"
            )

        async def run(context: JobContext) -> dict[str, Any]:
            folder = self._captures.new_name("timelapse", "", at=now)
            try:
                await asyncio.to_thread(folder.mkdir)
            finally:
                self._captures.release(folder)  # the folder holds the name from now on
            entry = SeriesEntry(
                context.job.id, context.job.request_id, params, folder.name, now, next_tick=0
            )
            return await self._series(context, entry)

        return run

    def recover(self) -> list[tuple[Job, JobRunner]]:
        """Series a killed agent left running: each goes on where it was."""
        recovered: list[tuple[Job, JobRunner]] = []
        for entry in self._journal.pending():
            job = Job(
                kind="timelapse", params=entry.params, request_id=entry.request_id, id=entry.job_id
            )
            job.created = entry.start

            async def run(context: JobContext, entry: SeriesEntry = entry) -> dict[str, Any]:
                return await self._series(context, entry, resumed=True)

            log.warning("timelapse %s was interrupted by a restart; going on", entry.job_id)
            recovered.append((job, run))
        return recovered

    async def _series(
        self, context: JobContext, entry: SeriesEntry, resumed: bool = False
    ) -> dict[str, Any]:
        folder = self._captures.root / entry.folder
        context.job.writes.add(entry.folder + "/")
        if resumed:
            # The files are the truth: a frame written just before the crash is not retaken.
            entry.taken = await asyncio.to_thread(frames_in, folder)
        lateness: deque[float] = deque(maxlen=TIMING_WINDOW)
        suspended = False
        try:
            await self._journal_write(entry)
            await self._ticks(context, entry, folder, lateness, resumed)
            if entry.taken == 0:
                raise CommandError(
                    ErrorCode.NOT_AVAILABLE,
                    "no frame was taken" + (f" ({entry.gaps[-1]['cause']})" if entry.gaps else ""),
                )
            assemble = entry.params["assemble"]
            video = await self._assemble(context, entry, folder) if assemble else None
            return self._result(entry, video, sorted(lateness))
        except asyncio.CancelledError:
            # The agent is stopping: the journal (and the lock) carry the series over.
            suspended = context.suspended
            raise
        finally:
            if not suspended:
                if entry.unlocked is not None:
                    await self._unlock(entry)
                await asyncio.to_thread(self._journal.remove, entry.job_id)

    async def _ticks(
        self,
        context: JobContext,
        entry: SeriesEntry,
        folder: Path,
        lateness: deque[float],
        resumed: bool,
    ) -> None:
        """Take the frames on their ticks until the count, the end time or `stop`."""
        params = entry.params
        interval, count, until = params["interval"], params["count"], params["until"]
        while not context.stop_requested.is_set():
            if entry.taken >= (count or MAX_FRAMES):
                return
            tick_at = entry.start + entry.next_tick * interval
            if until is not None and tick_at > until:
                return
            if time.time() - tick_at > LATE_S:
                self._skip_to_now(entry, interval, "the agent was not running" if resumed
                                  else "the previous frame took too long")  # fmt: skip
                resumed = False
                continue
            resumed = False
            if await self._wait_until(context, tick_at):
                return  # stopped
            lateness.append(max(0.0, time.time() - tick_at))
            await self._take(entry, folder, interval)
            entry.next_tick += 1
            if params["lock"] and entry.lock is None and entry.taken >= 1:
                # After the first frame: automatic exposure has settled on the scene.
                entry.lock = await self._lock(entry)
            await self._journal_write(entry)
            context.progress(
                taken=entry.taken, of=count, missed=entry.missed,
                next_at=_iso(entry.start + entry.next_tick * interval),
            )  # fmt: skip

    async def _wait_until(self, context: JobContext, at: float) -> bool:
        """Sleep until the wall-clock time ``at``; True if the series was stopped meanwhile."""
        delay = at - time.time()
        if delay <= 0:
            return context.stop_requested.is_set()
        try:
            await asyncio.wait_for(context.stop_requested.wait(), delay)
        except TimeoutError:
            return False
        return True

    def _skip_to_now(self, entry: SeriesEntry, interval: float, cause: str) -> None:
        """Miss every tick whose time has passed; note them as one gap."""
        first = entry.next_tick
        entry.next_tick = max(first + 1, math.ceil((time.time() - entry.start) / interval))
        skipped = entry.next_tick - first
        self._note_gap(entry, first, skipped, interval, cause)

    def _note_gap(
        self, entry: SeriesEntry, first: int, skipped: int, interval: float, cause: str
    ) -> None:
        entry.missed += skipped
        last = entry.gaps[-1] if entry.gaps else None
        if last is not None and last["cause"] == cause and last["next_tick"] == first:
            last["ticks"] += skipped  # the same trouble going on: one gap
            last["to"] = _iso(entry.start + (first + skipped - 1) * interval)
            last["next_tick"] = first + skipped
        else:
            entry.gaps.append({
                "after_frame": entry.taken,
                "from": _iso(entry.start + first * interval),
                "to": _iso(entry.start + (first + skipped - 1) * interval),
                "ticks": skipped,
                "cause": cause,
                "next_tick": first + skipped,
            })  # fmt: skip
        log.warning("timelapse %s missed %d tick(s): %s", entry.job_id, skipped, cause)

    async def _take(self, entry: SeriesEntry, folder: Path, interval: float) -> None:
        number = entry.taken + 1
        try:
            await save_frame(
                self._stream, self._captures, folder / f"{number:06d}.jpg", entry.params["quality"]
            )
        except CommandError as err:
            # One bad tick does not end a series that may run for months.
            self._note_gap(entry, entry.next_tick, 1, interval, err.detail)
            return
        entry.taken = number

    async def _journal_write(self, entry: SeriesEntry) -> None:
        try:
            await asyncio.to_thread(self._journal.write, entry)
        except OSError as err:
            log.warning("cannot journal timelapse %s: %s", entry.job_id, err)

    async def _lock(self, entry: SeriesEntry) -> dict[str, Any]:
        """Freeze automatic exposure and white balance at their current values."""
        plan = self._lock_plan()
        if plan is None:
            return {"locked": False, "reason": "not applicable: the camera has no automatic"
                    " exposure or white balance running"}  # fmt: skip
        freeze, restore = plan
        try:
            await self._change_controls(freeze)
        except CommandError as err:
            return {"locked": False, "reason": err.detail}
        entry.unlocked = restore
        lock = {"locked": True, "controls": freeze}
        entry.lock = lock
        await self._journal_write(entry)
        return lock

    async def _unlock(self, entry: SeriesEntry) -> None:
        try:
            await self._change_controls(entry.unlocked or {})
        except CommandError as err:
            log.warning("timelapse %s could not restore %s: %s", entry.job_id, entry.unlocked, err)
        entry.unlocked = None

    async def _assemble(
        self, context: JobContext, entry: SeriesEntry, folder: Path
    ) -> dict[str, Any]:
        """The frames as an H.264 MP4 beside the folder, written atomically by a nice'd ffmpeg,
        with progress while it encodes."""
        fps = entry.params["fps"]
        final = folder.with_name(folder.name + ".mp4")
        # Held like the frames until the job has ended: retention must not take the video
        # between its rename into place and the result that describes it.
        context.job.writes.add(final.name)
        async with self._captures.writing(final) as partial:
            encoder = ManagedProcess(
                ["nice", "-n", "10", "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                 "-nostats", "-progress", "pipe:2", "-framerate", str(fps), "-start_number", "1",
                 "-i", str(folder / "%06d.jpg"), "-frames:v", str(entry.taken),
                 "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                 "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", "-f", "mp4", "-y", str(partial)],
                "timelapse-assembler",
            )  # fmt: skip
            await encoder.start()
            try:
                while True:
                    try:
                        code = await asyncio.wait_for(encoder.wait(), ASSEMBLE_PROGRESS_S)
                        break
                    except TimeoutError:
                        done = _encoded_frames(encoder.stderr_tail)
                        context.progress(taken=entry.taken, assembling=done, of=entry.taken)
            except asyncio.CancelledError:
                await encoder.stop()
                raise
            encoded = _encoded_frames(encoder.stderr_tail)
            if code != 0 or encoded != entry.taken:
                errors = [line for line in encoder.stderr_tail if "=" not in line]
                why = (
                    f"ffmpeg exit {code}: {' '.join(errors[-3:])}" if code != 0
                    else f"it would hold {encoded} of the {entry.taken} frames; one is missing"
                )  # fmt: skip
                raise CommandError(
                    ErrorCode.IO_ERROR,
                    f"the video could not be made ({why}); the {entry.taken} frames taken are"
                    f" kept in {entry.folder}/",
                )
        video = await asyncio.to_thread(describe_file, self._captures, final)
        video.update(fps=fps, frames=entry.taken)
        return video

    def _result(
        self, entry: SeriesEntry, video: dict[str, Any] | None, lateness: list[float]
    ) -> dict[str, Any]:
        gaps = [{k: v for k, v in gap.items() if k != "next_tick"} for gap in entry.gaps]
        where = f"{entry.folder}/" + (f" and {video['path']}" if video else "")
        missed = f" ({entry.missed} ticks missed)" if entry.missed else ""
        return {
            "folder": entry.folder,
            "folder_url": self._captures.url(entry.folder + "/"),
            "frames": entry.taken,
            "first": f"{entry.folder}/{1:06d}.jpg",
            "last": f"{entry.folder}/{entry.taken:06d}.jpg",
            "interval_s": entry.params["interval"],
            "started": _iso(entry.start),
            "missed": entry.missed,
            "gaps": gaps,
            "video": video,
            "lock": entry.lock,
            # How late frames were taken against their ticks (the last TIMING_WINDOW frames).
            "late_ms": {
                "median": round(lateness[len(lateness) // 2] * 1000, 1),
                "max": round(lateness[-1] * 1000, 1),
            }
            if lateness
            else None,
            "path": video["path"] if video else f"{entry.folder}/",
            "url": video["url"] if video else self._captures.url(entry.folder + "/"),
            "message": f"timelapse of {entry.taken} frames in {where}{missed}",
        }


def _encoded_frames(lines: Any) -> int:
    """The last `frame=N` ffmpeg's -progress wrote."""
    for line in reversed(list(lines)):
        if line.startswith("frame="):
            with contextlib.suppress(ValueError):
                return int(line.removeprefix("frame="))
    return 0

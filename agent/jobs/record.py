"""record: the camera's own H.264, cut from MediaMTX's recorder, never re-encoded.

MediaMTX records the stream continuously (fragmented MP4, flushed every second, kept for an
hour: see mediamtx/mediamtx.yml). A recording is the time range [command - preroll, stop],
fetched through the playback server when it ends; the server starts it on the keyframe before
that range, so the first frame is a keyframe and there is no gray start to trim.

Crash safety: while a recording runs, only a small journal entry is written
(`state_dir/jobs/ID.json`, replaced atomically every second with a heartbeat). If the agent is
killed, the next start finds the entry and cuts [start, last heartbeat] from the recorder: the
recording is finalized, never lost and never left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.atomicfile import write_atomic
from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file
from agent.jobs.manager import JobContext, JobRunner
from agent.jobs.model import Job
from agent.stream.mediamtx import MediaMtxPlayback
from agent.stream.supervisor import StreamState, StreamSupervisor

log = logging.getLogger(__name__)

PROGRESS_S = 1.0
FLUSH_WAIT_S = 5.0  # the recorder flushes a part every second; allow for a busy machine


@dataclass
class JournalEntry:
    job_id: str
    request_id: str | None
    params: dict[str, Any]
    start: float  # Unix time the recording starts at (command time - preroll)
    began: float  # Unix time of the command
    heartbeat: float  # last time the agent was known to be recording


class RecordJournal:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def write(self, entry: JournalEntry) -> None:
        write_atomic(self._directory / f"{entry.job_id}.json", json.dumps(asdict(entry)).encode())

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._directory / f"{job_id}.json").unlink()

    def pending(self) -> list[JournalEntry]:
        entries = []
        for path in sorted(self._directory.glob("*.json")):
            try:
                entries.append(JournalEntry(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as err:
                log.error("unreadable recording journal %s (%s); removed", path, err)
                path.unlink(missing_ok=True)
        return entries


class Recorder:
    """Makes recording jobs; one instance per agent."""

    def __init__(
        self,
        stream: StreamSupervisor,
        playback: MediaMtxPlayback,
        stream_path: str,
        captures: Captures,
        journal: RecordJournal,
        max_record_s: float,
        max_preroll_s: float,
    ) -> None:
        self._stream = stream
        self._playback = playback
        self._stream_path = stream_path
        self._captures = captures
        self._journal = journal
        self._max_record_s = max_record_s
        self._max_preroll_s = max_preroll_s

    def runner(self, params: dict[str, Any]) -> JobRunner:
        """Validate a `record` request (answered at once when wrong) and make its runner."""
        duration, preroll = params["duration"], params["preroll"]
        if duration is not None and duration > self._max_record_s:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT,
                f"duration {duration:g} s is over the {self._max_record_s:g} s limit"
                " (jobs.max_record_s)",
            )
        if preroll > self._max_preroll_s:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT,
                f"preroll {preroll:g} s is over the {self._max_preroll_s:g} s limit"
                " (jobs.max_preroll_s)",
            )
        if self._stream.state is not StreamState.ONLINE:
            raise CommandError(
                ErrorCode.NOT_AVAILABLE,
                f"the stream is {self._stream.state}; record needs it online (`stream start`)",
            )

        async def run(context: JobContext) -> dict[str, Any]:
            return await self._record(context, duration, preroll)

        return run

    async def _record(
        self, context: JobContext, duration: float | None, preroll: float
    ) -> dict[str, Any]:
        job = context.job
        began = time.time()
        entry = JournalEntry(job.id, job.request_id, job.params, began - preroll, began, began)
        self._journal.write(entry)
        limit = duration if duration is not None else self._max_record_s
        while not context.stop_requested.is_set():
            elapsed = time.time() - began
            if elapsed >= limit:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    context.stop_requested.wait(), min(PROGRESS_S, limit - elapsed)
                )
            entry.heartbeat = time.time()
            self._journal.write(entry)
            context.progress(elapsed_s=round(entry.heartbeat - began, 1), duration_s=duration)
        end = time.time()
        try:
            return await self._cut(entry.start, end, preroll)
        finally:
            self._journal.remove(job.id)

    async def _cut(self, start: float, end: float, preroll: float) -> dict[str, Any]:
        """Fetch [start, end] from the recorder into the captures directory, atomically."""
        deadline = time.monotonic() + FLUSH_WAIT_S
        while True:
            try:
                covered = await self._playback.recorded_until(self._stream_path)
            except OSError as err:
                raise CommandError(
                    ErrorCode.STREAM_ERROR, f"MediaMTX playback unreachable: {err}"
                ) from err
            if covered is not None and covered >= end - 0.05:
                break
            if time.monotonic() > deadline:
                if covered is None or covered <= start:
                    raise CommandError(
                        ErrorCode.STREAM_ERROR, "MediaMTX recorded nothing for this time"
                    )
                end = covered  # what the recorder has; the rest never reached it
                break
            await asyncio.sleep(0.2)
        final = self._captures.new_name("record", ".mp4", at=start)
        with self._captures.writing(final) as partial:
            try:
                await self._playback.download(self._stream_path, start, end - start, partial)
            except urllib.error.URLError as err:
                # A network or HTTP failure; disk errors (ENOSPC...) pass on as io_error.
                raise CommandError(
                    ErrorCode.STREAM_ERROR, f"MediaMTX playback failed: {err}"
                ) from err
        result = await asyncio.to_thread(describe_file, self._captures, final)
        result["start"] = start
        result["preroll_s"] = preroll
        return result

    def recover(self) -> list[tuple[Job, JobRunner]]:
        """Recordings a killed agent left running: cut each one up to its last heartbeat."""
        recovered: list[tuple[Job, JobRunner]] = []
        for entry in self._journal.pending():
            job = Job(
                kind="record", params=entry.params, request_id=entry.request_id, id=entry.job_id
            )
            job.created = entry.began

            async def run(context: JobContext, entry: JournalEntry = entry) -> dict[str, Any]:
                try:
                    result = await self._cut(
                        entry.start, entry.heartbeat, entry.params.get("preroll", 0)
                    )
                finally:
                    self._journal.remove(entry.job_id)
                result["recovered"] = True
                return result

            log.warning("recording %s was interrupted by a restart; finalizing it", entry.job_id)
            recovered.append((job, run))
        return recovered

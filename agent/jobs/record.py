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
import logging
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file, io_error
from agent.jobs.journal import Journal
from agent.jobs.manager import JobContext, JobRunner
from agent.jobs.model import Job
from agent.jobs.record_files import PartMedia, join_parts, probe_part
from agent.jobs.record_parts import (
    DEFAULT_FRAME_INTERVAL_S,
    Gap,
    Span,
    explain_gaps,
    gaps_within,
    group_compatible,
    parts_within,
    summary,
)
from agent.stream import outages
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


class RecordJournal(Journal[JournalEntry]):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, JournalEntry, "recording")


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
        self._running = 0

    def recording(self) -> bool:
        """Whether a recording is under way (a restart now splits it)."""
        return self._running > 0

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
        limit = duration if duration is not None else self._max_record_s
        # Named after its start from the beginning, so a client can tell it apart and a
        # `delete` of it while it records is refused.
        first = self._captures.new_name("record", ".mp4", at=entry.start)
        job.writes.add(first.name)
        try:
            await self._write_journal(entry)
            self._running += 1
            try:
                await self._wait_for_the_end(context, entry, began, limit, duration, first.name)
            finally:
                self._running -= 1
            return await self._cut(entry.start, time.time(), preroll, first)
        finally:
            self._captures.release(first)  # written by now, or never to be
            # Whatever happened: a journal left behind would make the next start "recover" a
            # recording that already ended (or failed).
            await asyncio.to_thread(self._journal.remove, job.id)

    async def _write_journal(self, entry: JournalEntry) -> None:
        """The crash-safety entry, written off the event loop (it syncs to disk)."""
        try:
            await asyncio.to_thread(self._journal.write, entry)
        except OSError as err:
            raise io_error(err, "cannot write the recording's journal") from err

    async def _wait_for_the_end(
        self,
        context: JobContext,
        entry: JournalEntry,
        began: float,
        limit: float,
        duration: float | None,
        file: str,
    ) -> None:
        while not context.stop_requested.is_set():
            elapsed = time.time() - began
            if elapsed >= limit:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    context.stop_requested.wait(), min(PROGRESS_S, limit - elapsed)
                )
            entry.heartbeat = time.time()
            await self._write_journal(entry)
            context.progress(
                elapsed_s=round(entry.heartbeat - began, 1), duration_s=duration, file=file
            )

    async def _cut(
        self, start: float, end: float, preroll: float, first: Path | None = None
    ) -> dict[str, Any]:
        """Fetch what the recorder has of [start, end] into the captures directory: one file
        per run of compatible parts (atomically), and what is missing, with its cause. The
        first file is ``first`` (default: named after ``start``)."""
        parts = await self._recorded_parts(start, end)
        if not parts:
            raise CommandError(ErrorCode.STREAM_ERROR, "MediaMTX recorded nothing for this time")
        if first is None or await asyncio.to_thread(first.exists):  # never replace a capture
            first = self._captures.new_name("record", ".mp4", at=start)
        # Each part beside the first file's temporary name, where start-up sweeps leftovers.
        partial = self._captures.partial_for(first)
        pieces = [
            partial.with_name(f"{partial.name}.part{i}.mp4") for i in range(1, len(parts) + 1)
        ]
        fetched: list[tuple[Span, Path, PartMedia]] = []
        try:
            for part, piece in zip(parts, pieces, strict=True):
                await self._fetch(part, piece)
                fetched.append((part, piece, await asyncio.to_thread(probe_part, piece)))
            files = await self._assemble(first, fetched)
        finally:
            self._captures.release(first)
            for piece in pieces:
                with contextlib.suppress(FileNotFoundError):
                    piece.unlink()
        shortest = max(
            (m.frame_interval_s for _, _, m in fetched), default=DEFAULT_FRAME_INTERVAL_S
        )
        gaps = explain_gaps(
            gaps_within(parts, start, end, 1.5 * shortest, self._stream.outages.length_near),
            start,
            self._stream.outages.cause_of,
        )
        kept = sum(part.duration for part in parts)
        requested = end - start
        result = dict(files[0])
        result.update(
            duration_s=round(kept, 3),
            requested_s=round(requested, 3),
            files=files,
            gaps=[gap.to_json() for gap in gaps],
            complete=not gaps,
            start=start,
            preroll_s=preroll,
            message=summary(requested, kept, [f["path"] for f in files], gaps),
        )
        return result

    async def _recorded_parts(self, start: float, end: float) -> list[Span]:
        """The recorded parts of [start, end], once the recorder has flushed up to ``end``
        (or FLUSH_WAIT_S has passed: what it has then is what it will have)."""
        deadline = time.monotonic() + FLUSH_WAIT_S
        while True:
            try:
                spans = [Span(a, b) for a, b in await self._playback.spans(self._stream_path)]
            except OSError as err:
                raise CommandError(
                    ErrorCode.STREAM_ERROR, f"MediaMTX playback unreachable: {err}"
                ) from err
            covered = max((span.end for span in spans), default=None)
            if (covered is not None and covered >= end - 0.05) or time.monotonic() > deadline:
                return parts_within(spans, start, end)
            await asyncio.sleep(0.2)

    async def _fetch(self, part: Span, dest: Path) -> None:
        try:
            await self._playback.download(self._stream_path, part.start, part.duration, dest)
        except urllib.error.URLError as err:
            # A network or HTTP failure; disk errors (ENOSPC...) pass on as io_error.
            raise CommandError(ErrorCode.STREAM_ERROR, f"MediaMTX playback failed: {err}") from err
        except OSError as err:
            raise io_error(err, f"cannot write {dest.name}") from err

    async def _assemble(
        self, first: Path, fetched: list[tuple[Span, Path, PartMedia]]
    ) -> list[dict[str, Any]]:
        """One final file per run of compatible parts: `record-<start>.mp4`, then `-p2`..."""
        files: list[dict[str, Any]] = []
        groups = group_compatible([media.signature for _, _, media in fetched])
        for number, group in enumerate(groups, 1):
            final = first if number == 1 else first.with_name(f"{first.stem}-p{number}.mp4")
            pieces = [fetched[i] for i in group]
            try:
                async with self._captures.writing(final) as partial:
                    if len(pieces) == 1:
                        pieces[0][1].replace(partial)
                    else:
                        await join_parts([(part, piece) for part, piece, _ in pieces], partial)
            except CommandError as err:
                if not files:
                    raise
                # Never a silent half: the files already written stay, and the error says so.
                kept = ", ".join(f"{f['path']} ({f['duration_s']} s)" for f in files)
                raise CommandError(err.code, f"{err.detail}; kept {kept}") from err
            described = await asyncio.to_thread(describe_file, self._captures, final)
            described["start"] = pieces[0][0].start
            described["duration_s"] = round(sum(part.duration for part, _, _ in pieces), 3)
            files.append(described)
        return files

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
                return _with_the_agents_outage(result, entry)

            log.warning("recording %s was interrupted by a restart; finalizing it", entry.job_id)
            recovered.append((job, run))
        return recovered


def _with_the_agents_outage(result: dict[str, Any], entry: JournalEntry) -> dict[str, Any]:
    """A recovered recording's result, honest about what the agent's death cost: the seconds
    from its last heartbeat to the end the command asked for are a gap of their own, so a
    30 s recording cut at 4 s says "recorded 4.0 of 30.0 s", not "of 4.0 s"."""
    duration = entry.params.get("duration")
    if duration is None:  # until `stop`: the agent's death ended it, not a `stop`
        result["message"] += "; ended when the agent stopped, not by `stop`"
        result["complete"] = False
        return result
    asked_end = entry.began + float(duration)
    if asked_end - entry.heartbeat <= 0.5:  # killed right at its end: nothing worth a gap
        return result
    lost = Gap(entry.heartbeat - entry.start, asked_end - entry.heartbeat, outages.AGENT_DOWN)
    gaps = [Gap(**gap) for gap in result["gaps"]] + [lost]
    requested = asked_end - entry.start
    result.update(
        requested_s=round(requested, 3),
        gaps=[gap.to_json() for gap in gaps],
        complete=False,
        message=summary(
            requested, result["duration_s"], [f["path"] for f in result["files"]], gaps
        ),
    )
    return result

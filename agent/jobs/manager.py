"""Runs jobs with bounded concurrency and reports every transition.

Each job runs as its own task; a limit per kind (one recording at a time by default, a few
pictures) answers `busy` beyond it. Every transition is a `BASE/status` event carrying the job
id and the id of the request that created it. `BASE/state` lists the running jobs and the last
few finished ones (a retained message must stay far below the broker's packet limit however busy
the camera is); the `jobs` action pages through the rest of the last hour, bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import CommandError, ErrorCode
from agent.jobs.ledger import JobLedger
from agent.jobs.model import Job, JobState

log = logging.getLogger(__name__)

RECENT_S = 3600.0
HISTORY_MAX = 1000  # finished jobs kept for the `jobs` action (within RECENT_S)
STATE_FINISHED = 10  # finished jobs shown in BASE/state
INTERRUPTED_DETAIL = (
    "the agent stopped (killed, crashed or lost power) while this job ran; nothing it made was kept"
)


class JobContext:
    """What a running job may do: report progress, and learn that it should stop early."""

    def __init__(self, job: Job, manager: JobManager) -> None:
        self.job = job
        self._manager = manager
        self.stop_requested = asyncio.Event()
        # Set when the agent stops: the job is set aside, not ended (see JobKind.suspends).
        self.suspended = False

    def progress(self, **values: Any) -> None:
        self.job.progress = values
        self._manager._emit(self.job, "job.progress", True, "")


JobRunner = Callable[[JobContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class JobKind:
    runner_factory: Callable[[dict[str, Any]], JobRunner]
    limit: int
    # True: `stop` ends the job early and keeps what it made (a recording); False: cancels it.
    stop_finishes: bool = False
    # True: the kind keeps a journal of its own and recovers its jobs itself (a recording);
    # the others are noted in the JobLedger and reported `interrupted` after a crash.
    own_journal: bool = False
    # True: when the agent stops, the job is suspended, not finished: it publishes no end, and
    # its journal carries it over to the next start (a timelapse series).
    suspends: bool = False


JobReport = Callable[[Job, str, bool, str], None]


class JobManager:
    def __init__(
        self,
        kinds: dict[str, JobKind],
        report: JobReport,
        changed: Callable[[], None],
        ledger: JobLedger | None = None,
        before_success: Callable[[Job], Awaitable[None]] | None = None,
    ) -> None:
        """``before_success``: awaited with a job that succeeded before its success is
        published (its captures go into the upload journal first, so an upload is never lost
        between the two)."""
        self._kinds = kinds
        self._before_success = before_success
        self._ledger = ledger
        self._report = report
        self._changed = changed
        self._jobs: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._contexts: dict[str, JobContext] = {}

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        request_id: str | None,
        requested_by: str | None = None,
    ) -> Job:
        spec = self._kinds[kind]
        active = [j for j in self._jobs.values() if j.kind == kind and not j.state.finished]
        if len(active) >= spec.limit:
            raise CommandError(
                ErrorCode.BUSY,
                f"{kind} is busy: {', '.join(j.id for j in active)} running"
                f" (at most {spec.limit} at a time); `stop` it first",
            )
        runner = spec.runner_factory(params)
        job = Job(kind=kind, params=params, request_id=request_id, requested_by=requested_by)
        self._jobs[job.id] = job
        context = JobContext(job, self)
        self._contexts[job.id] = context
        if self._ledger is not None and not spec.own_journal:
            self._ledger.add(job.to_json())
        self._tasks[job.id] = asyncio.create_task(self._run(job, context, runner), name=job.id)
        self._prune()
        self._changed()
        return job

    def adopt(self, job: Job, runner: JobRunner) -> None:
        """Run a job recovered after a restart (it keeps its id and request id)."""
        self._jobs[job.id] = job
        context = JobContext(job, self)
        self._contexts[job.id] = context
        self._tasks[job.id] = asyncio.create_task(self._run(job, context, runner), name=job.id)

    async def _run(self, job: Job, context: JobContext, runner: JobRunner) -> None:
        job.state, job.started = JobState.RUNNING, time.time()
        self._emit(job, "job.running", True, f"{job.kind} {job.id} running")
        try:
            job.result = await runner(context)
        except asyncio.CancelledError:
            if context.suspended:
                log.info("%s %s suspended until the next start", job.kind, job.id)
                self._tasks.pop(job.id, None)
                self._contexts.pop(job.id, None)
                return
            self._finish(job, JobState.CANCELLED, "job.cancelled", f"{job.kind} {job.id} cancelled")
            return
        except CommandError as err:
            job.error = {"code": str(err.code), "detail": err.detail}
            self._finish(
                job, JobState.FAILED, "job.failed", f"ERROR: {job.kind} failed: {err.detail}"
            )
            return
        except Exception as err:
            log.exception("job %s crashed", job.id)
            job.error = {"code": str(ErrorCode.INTERNAL_ERROR), "detail": f"internal error: {err}"}
            self._finish(
                job, JobState.FAILED, "job.failed", f"ERROR: {job.kind} failed: internal error"
            )
            return
        if self._before_success is not None:
            try:
                await self._before_success(job)
            except Exception:  # the job's own work is done and kept whatever this says
                log.exception("after job %s", job.id)
        result = job.result or {}
        # A runner may say what it did in words (a recording: how much it kept, and why not all).
        said = result.get("message")
        path = result.get("path")
        done = said or (f"{job.kind} saved as {path}" if path else f"{job.kind} done")
        self._finish(job, JobState.SUCCEEDED, "job.succeeded", f"SUCCESS: {done}")

    def _finish(self, job: Job, state: JobState, event: str, message: str) -> None:
        job.state, job.finished = state, time.time()
        self._tasks.pop(job.id, None)
        self._contexts.pop(job.id, None)
        if self._ledger is not None and not self._kinds[job.kind].own_journal:
            # Before the event, in the same step: a restart never reports a job twice.
            self._ledger.remove(job.id)
        self._emit(job, event, state is JobState.SUCCEEDED, message)

    def report_interrupted(self) -> list[Job]:
        """At start: jobs an earlier run was killed in the middle of end as failed, so whoever
        asked for them hears how they ended."""
        if self._ledger is None:
            return []
        reported = []
        for entry in self._ledger.take_interrupted():
            kind = entry.get("kind")
            job = Job(
                kind=kind if isinstance(kind, str) else "unknown",
                params=entry.get("params") or {},
                request_id=entry.get("request_id"),
                requested_by=entry.get("requested_by"),
                id=entry["id"],
                created=entry.get("created") or time.time(),
                started=entry.get("started"),
            )
            job.state, job.finished = JobState.FAILED, time.time()
            job.error = {"code": str(ErrorCode.INTERRUPTED), "detail": INTERRUPTED_DETAIL}
            self._jobs[job.id] = job
            log.warning("job %s was interrupted by the agent's end; reported failed", job.id)
            self._emit(job, "job.failed", False, f"ERROR: {job.kind} failed: {INTERRUPTED_DETAIL}")
            reported.append(job)
        return reported

    def _emit(self, job: Job, event: str, ok: bool, message: str) -> None:
        self._report(job, event, ok, message)
        if event != "job.progress":
            self._changed()

    def find(self, job_id: str) -> Job | None:
        """The job with this id, if it is still known (running, or finished within the hour)."""
        return self._jobs.get(job_id)

    def stop(self, job_id: str | None) -> Job:
        """`stop [job]`: end the given job, or without an id the running recording."""
        if job_id is None:
            candidates = [
                j
                for j in self._jobs.values()
                if self._kinds[j.kind].stop_finishes and not j.state.finished
            ]
            if not candidates:
                raise CommandError(ErrorCode.NOT_FOUND, "no recording or timelapse is running")
            job = candidates[0]
        else:
            found = self._jobs.get(job_id)
            if found is None:
                raise CommandError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
            if found.state.finished:
                raise CommandError(ErrorCode.NOT_FOUND, f"job {job_id} has already {found.state}")
            job = found
        if self._kinds[job.kind].stop_finishes:
            self._contexts[job.id].stop_requested.set()
        else:
            self._cancel(job)
        return job

    def _cancel(self, job: Job) -> None:
        self._tasks[job.id].cancel()
        if job.state is JobState.QUEUED:
            # Cancelled before its task took its first step: `_run` never runs, so the job
            # ends here (it would otherwise stay queued, with no terminal event, for ever).
            self._finish(job, JobState.CANCELLED, "job.cancelled", f"{job.kind} {job.id} cancelled")

    def files_in_use(self) -> set[str]:
        """Captures that running jobs read (a trim's source) or will write (a recording's
        file), by name."""
        running = [job for job in self._jobs.values() if not job.state.finished]
        reads = {
            str(job.params["file"]) for job in running if isinstance(job.params.get("file"), str)
        }
        return reads.union(*(job.writes for job in running))

    def snapshot(self) -> list[dict[str, Any]]:
        """For `BASE/state`: every running job and the last STATE_FINISHED finished ones."""
        self._prune()
        running = [job for job in self._jobs.values() if not job.state.finished]
        finished = [job for job in self._jobs.values() if job.state.finished]
        return [job.to_json() for job in [*running, *finished[-STATE_FINISHED:]]]

    def history(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Jobs of the last hour, newest first: a page of them, and how many there are."""
        self._prune()
        newest_first = list(reversed(self._jobs.values()))
        return [job.to_json() for job in newest_first[offset : offset + limit]], len(newest_first)

    def _prune(self) -> None:
        horizon = time.time() - RECENT_S
        for job_id in [i for i, j in self._jobs.items() if j.finished and j.finished < horizon]:
            del self._jobs[job_id]
        finished = [i for i, j in self._jobs.items() if j.state.finished]
        for job_id in finished[: max(0, len(finished) - HISTORY_MAX)]:
            del self._jobs[job_id]

    async def shutdown(self, grace_s: float = 15.0) -> None:
        """Finish recordings (they are kept), suspend timelapse series, cancel the rest.

        A recording that cannot finish in time is cancelled too; its journal survives and the
        next start finalizes it.
        """
        for job_id, context in list(self._contexts.items()):
            kind = self._kinds[self._jobs[job_id].kind]
            if kind.suspends:
                context.suspended = True
                self._tasks[job_id].cancel()
            elif kind.stop_finishes:
                context.stop_requested.set()
            else:
                self._cancel(self._jobs[job_id])
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

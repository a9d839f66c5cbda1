"""The action handlers that start and stop jobs; each answers with the job it queued."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent.jobs.manager import JobManager
from agent.jobs.model import Job
from agent.protocol import ActionCommand
from agent.router import ActionHandler, Answer


def _queued(job: Job) -> Answer:
    return Answer(
        "job.queued",
        f"SUCCESS: {job.kind} queued as job {job.id}",
        {"kind": job.kind, "params": job.params},
        job=job.id,
    )


class JobActions:
    def __init__(
        self, manager: JobManager, ensure_room: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """``ensure_room``: raises when the disk is too full for a job that writes."""
        self._manager = manager
        self._ensure_room = ensure_room

    def submitter(self, kind: str, *, writes: bool = True) -> ActionHandler:
        async def submit(command: ActionCommand) -> Answer:
            if writes and self._ensure_room is not None:
                await self._ensure_room()
            return _queued(self._manager.submit(kind, command.params, command.id, command.by))

        return submit

    async def history(self, command: ActionCommand) -> Answer:
        """`jobs [offset] [limit]`: the last hour's jobs, newest first, a page at a time."""
        offset, limit = command.params["offset"], command.params["limit"]
        jobs, total = self._manager.history(offset, limit)
        return Answer(
            "jobs.listed",
            f"SUCCESS: jobs {offset + 1}-{offset + len(jobs)} of {total}" if jobs
            else f"SUCCESS: no jobs from {offset + 1} on ({total} in the last hour)",
            {"jobs": jobs, "offset": offset, "limit": limit, "total": total},
        )  # fmt: skip

    async def stop(self, command: ActionCommand) -> Answer:
        job = self._manager.stop(command.params["job"])
        return Answer(
            "job.stopping",
            f"SUCCESS: stopping {job.kind} {job.id}",
            {"kind": job.kind},
            job=job.id,
        )

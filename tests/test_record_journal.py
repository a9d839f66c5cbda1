"""The recording journal: a disk that refuses it fails the job with io_error, and no stale entry
is left for the next start to "recover"."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.jobs.captures import Captures
from agent.jobs.manager import JobKind, JobManager
from agent.jobs.record import JournalEntry, Recorder, RecordJournal
from agent.stream.supervisor import StreamState


class FullDisk(RecordJournal):
    """Takes the first entry, then the disk is full (a heartbeat fails)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.writes = 0

    def write(self, entry: JournalEntry) -> None:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(entry)


async def test_a_journal_the_disk_refuses_fails_the_job_with_io_error(tmp_path: Path) -> None:
    journal = FullDisk(tmp_path / "jobs")
    (tmp_path / "jobs").mkdir()
    stream = SimpleNamespace(state=StreamState.ONLINE)
    recorder = Recorder(
        stream,  # type: ignore[arg-type]  # only its state is read before a cut
        None,  # type: ignore[arg-type]  # no cut: the journal fails first
        "cam_recorded",
        Captures(tmp_path / "captures"),
        journal,
        60,
        10,
    )
    done = asyncio.Event()
    events: list[tuple[str, Any]] = []

    def report(job: Any, name: str, ok: bool, message: str) -> None:
        events.append((name, job.error))
        if name in ("job.succeeded", "job.failed"):
            done.set()

    jobs = JobManager({"record": JobKind(recorder.runner, 1, True)}, report, lambda: None)
    jobs.submit("record", {"duration": 5, "preroll": 0}, None)
    await asyncio.wait_for(done.wait(), 10)
    name, error = events[-1]
    assert name == "job.failed"
    assert error["code"] == "io_error" and "ENOSPC" in error["detail"]
    assert journal.pending() == []  # nothing left for the next start to "recover"
    assert not recorder.recording()

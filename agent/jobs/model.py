"""The job record (after Frigate's jobs/job.py): what a client sees of a job, and nothing more."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def new_job_id(kind: str) -> str:
    # Sortable by time, unique without coordination, safe in file names and topics.
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass
class Job:
    kind: str
    params: dict[str, Any]
    request_id: str | None = None
    requested_by: str | None = None  # the person a front end asked for (`by`), if it said
    id: str = ""
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    # Captures the job will write, by name, before they exist: `delete` of one is `busy`.
    writes: set[str] = field(default_factory=set)
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_job_id(self.kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": str(self.state),
            "request_id": self.request_id,
            "requested_by": self.requested_by,
            "params": self.params,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
        }

"""Journals of long jobs in `state_dir`: one JSON file per running job, replaced atomically, so
that a job the agent was killed in the middle of can be finished or continued at the next start
(recordings, timelapse series)."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from agent.atomicfile import write_atomic

log = logging.getLogger(__name__)


class JournalEntry(Protocol):
    job_id: str


E = TypeVar("E", bound=JournalEntry)


class Journal(Generic[E]):
    def __init__(self, directory: Path, kind: type[E], what: str) -> None:
        self._directory = directory
        self._kind = kind
        self._what = what

    def write(self, entry: E) -> None:
        body: dict[str, Any] = asdict(entry)  # type: ignore[call-overload]
        write_atomic(self._directory / f"{entry.job_id}.json", json.dumps(body).encode())

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._directory / f"{job_id}.json").unlink()

    def pending(self) -> list[E]:
        entries = []
        for path in sorted(self._directory.glob("*.json")):
            try:
                entries.append(self._kind(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as err:
                log.error("unreadable %s journal %s (%s); removed", self._what, path, err)
                path.unlink(missing_ok=True)
        return entries

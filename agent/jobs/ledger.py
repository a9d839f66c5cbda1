"""Which jobs are running, on disk, so that a job the agent was killed in the middle of still
gets its terminal event: the next start reports it `job.failed` with code `interrupted`.

One small file per running job (`state_dir/running/JOB.json`), made when the job starts and
removed just before its terminal event is published. Written without fsync, on purpose: the
entry only has to survive the agent process (SIGKILL, a crash, the OOM killer), which the page
cache does; paying a disk sync per picture would cost every picture 10-100 ms on an SD card.
After a power cut an entry may be missing (the job goes unreported) or, for a job that ended in
the last seconds before it, still present (reported interrupted after its real end).

Recordings keep their own journal (record.py), from which the next start finishes them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from agent.atomicfile import TEMP_MARK

log = logging.getLogger(__name__)


class JobLedger:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, job_id: str) -> Path:
        return self._directory / f"{job_id}.json"

    def add(self, job: dict[str, Any]) -> None:
        """Note a job as running; a disk that refuses is logged, never fails the job."""
        path = self._path(job["id"])
        tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(json.dumps(job).encode())
            tmp.replace(path)  # never a torn entry under the final name
        except OSError as err:
            log.warning("cannot note job %s as running in %s: %s", job["id"], path, err)

    def remove(self, job_id: str) -> None:
        try:
            self._path(job_id).unlink(missing_ok=True)
        except OSError as err:
            log.warning("cannot remove %s: %s", self._path(job_id), err)

    def take_interrupted(self) -> list[dict[str, Any]]:
        """The jobs a previous run left running (oldest first); their entries are removed."""
        jobs = []
        for path in sorted(self._directory.glob("*.json")):
            try:
                body = json.loads(path.read_text())
                if isinstance(body, dict) and isinstance(body.get("id"), str):
                    jobs.append(body)
                else:
                    log.error("unreadable job entry %s; removed", path)
            except (OSError, ValueError) as err:
                log.error("unreadable job entry %s (%s); removed", path, err)
            path.unlink(missing_ok=True)
        return sorted(jobs, key=lambda job: job.get("created") or 0)

"""Captures copied to an S3-compatible object store, through a journal that survives a kill.

A finished capture is queued before its job's success is published: one journal file per queued
upload in `state_dir/uploads/` (written atomically, with fsync), so a SIGKILL or a power cut
after the job's end never loses an upload, and the next start carries on with the queue. One
upload at a time, oldest first, in a worker process (agent/upload_worker.py) that lives while
something is queued. The object key is fixed when the capture is queued, so an upload repeated
after a crash or an outage puts the same object again: never a second copy. A failed upload
waits (retry_min_s, doubling to retry_max_s) and goes to the back of the queue; after
FAILED_AFTER attempts `upload.failed` says why in the store's words, and it stays queued.

When the store confirmed an upload, its key and SHA-256 are appended to `uploaded.jsonl` (what
`files` shows, and what `upload.then = delete_after_days N` removes from); the log is compacted
to the files still on disk at start. A capture deleted before its turn is dropped from the
queue with `upload.dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.atomicfile import sweep_temporaries, write_atomic
from agent.config import UploadSettings
from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures
from agent.jobs.journal import Journal
from agent.jobs.model import Job
from agent.process import ManagedProcess

log = logging.getLogger(__name__)

FAILED_AFTER = 5  # attempts before `upload.failed` (the upload stays queued)
SWEEP_EVERY_S = 3600.0  # `delete_after_days`: how often uploaded captures are looked at
MOTION_REQUESTER = "motion"  # requested_by of the recordings the motion service starts
DAY_S = 86400.0

UploadReport = Callable[[str, bool, str, dict[str, Any]], None]


@dataclass
class QueuedUpload:
    """One capture waiting for its upload (a journal file). ``job_id`` is the upload's own id
    (the journal's file name), not the id of the job that made the capture (``job``)."""

    job_id: str
    file: str  # relative to the captures directory
    key: str
    kind: str
    size: int
    queued: float
    job: str | None = None
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class Uploaded:
    key: str
    sha256: str
    at: float
    bytes: int


def kind_of_job(job: Job) -> str:
    if job.kind == "picture":
        return "pictures"
    if job.kind == "timelapse":
        return "timelapse"
    if job.kind == "record" and job.requested_by == MOTION_REQUESTER:
        return "motion"
    return "recordings"  # record, trim


def kind_of_name(name: str) -> str:
    """The upload kind of a capture queued by hand, from the name the agent gave it."""
    stem = name.split("/", 1)[0].split("-", 1)[0]  # a series' frame: its folder's name
    return {"picture": "pictures", "timelapse": "timelapse"}.get(stem, "recordings")


def files_of(job: Job) -> list[str]:
    """The captures a finished job made (a recording may be several files)."""
    result = job.result or {}
    if job.kind == "timelapse":
        video = result.get("video")
        return [video["path"]] if isinstance(video, dict) and video.get("path") else []
    files = result.get("files")
    if isinstance(files, list) and files:
        return [str(f["path"]) for f in files if isinstance(f, dict) and f.get("path")]
    path = result.get("path")
    return [str(path)] if isinstance(path, str) and not path.endswith("/") else []


def read_ca(settings: UploadSettings) -> str | None:
    """The PEM of `upload.ca_file`, if set; a ValueError in words when unreadable."""
    if settings.ca_file is None:
        return None
    try:
        text = settings.ca_file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"upload.ca_file {settings.ca_file}: {err}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"upload.ca_file {settings.ca_file}: no PEM certificate in it")
    return text


def read_credentials(settings: UploadSettings) -> tuple[str, str]:
    """The access key pair, from `credentials_file` or the environment; ConfigError-worthy
    problems come back as ValueError, in words (never the secret)."""
    values: dict[str, str] = {}
    if settings.credentials_file is not None:
        try:
            text = settings.credentials_file.read_text()
        except OSError as err:
            raise ValueError(
                f"upload.credentials_file {settings.credentials_file}: {err.strerror}"
            ) from None
        for line in text.splitlines():
            name, sep, value = line.strip().partition("=")
            if sep and not name.startswith("#"):
                values[name.strip()] = value.strip().strip('"')
        where = str(settings.credentials_file)
    else:
        values = dict(os.environ)
        where = "the environment"
    key_id = values.get("AWS_ACCESS_KEY_ID", "")
    secret = values.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise ValueError(
            f"upload.enabled needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in {where}"
        )
    return key_id, secret


class UploadWorker:
    """The worker process: started with the store's settings, asked one upload at a time."""

    def __init__(self, store: dict[str, Any]) -> None:
        self._store = store
        self._process: ManagedProcess | None = None

    async def start(self) -> ManagedProcess:
        process = ManagedProcess(
            [sys.executable, "-m", "agent.upload_worker"], "the upload process", talk=True
        )
        self._process = process
        await process.start()
        await process.send_line(json.dumps(self._store).encode())
        return process

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One upload; a worker that died answers as a failure, with its last words."""
        process = self._process
        if process is None or process.returncode is not None:
            await self.stop()  # one that ended between two uploads: its stderr reader too
            process = await self.start()
        try:
            await process.send_line(json.dumps(request).encode())
            line = await process.read_line()
        except (OSError, RuntimeError):
            line = b""
        if not line:
            await self.stop()
            return {"ok": False, "error": f"the upload process ended ({process.ended_in_words()})"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.stop(grace_s=5.0)


class Uploader:
    def __init__(
        self,
        settings: UploadSettings,
        camera_id: str,
        captures: Captures,
        directory: Path,
        report: UploadReport,
        changed: Callable[[], None],
        in_use: Callable[[], set[str]] = set,
    ) -> None:
        self.settings = settings
        self._camera_id = camera_id
        self._captures = captures
        self._directory = directory
        self._report = report
        self._changed = changed
        self._in_use = in_use
        self._journal: Journal[QueuedUpload] = Journal(directory, QueuedUpload, "upload")
        self._queue: dict[str, QueuedUpload] = {}  # by file, oldest first
        self._uploaded: dict[str, Uploaded] = {}
        self._uploaded_lines = 0
        self._wake = asyncio.Event()
        self._current: QueuedUpload | None = None
        self._last_error: str | None = None
        self._done = 0
        self._worker: UploadWorker | None = None
        self._serial = 0

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def _log_path(self) -> Path:
        return self._directory / "uploaded.jsonl"

    def start(self) -> None:
        """Read the journal and the uploaded log (blocking: before the loop has work). With
        uploads off, a journal an earlier run left waits, untouched, for them to be on again;
        meanwhile retention treats those captures like any other."""
        if not self.enabled:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        for leftover in sweep_temporaries(self._directory):
            log.warning("removed %s, a write an earlier run did not finish", leftover)
        for entry in sorted(self._journal.pending(), key=lambda e: e.queued):
            self._queue[entry.file] = entry
        self._uploaded = self._read_log()
        # Compacted to what is still on disk: the log stays as long as the captures directory.
        live = {n: u for n, u in self._uploaded.items() if (self._captures.root / n).is_file()}
        if len(live) != len(self._uploaded) or self._uploaded_lines != len(live):
            self._uploaded = live
            self._rewrite_log()
        if self._queue:
            log.info("%d uploads queued from an earlier run", len(self._queue))
            self._wake.set()

    def _read_log(self) -> dict[str, Uploaded]:
        found: dict[str, Uploaded] = {}
        self._uploaded_lines = 0
        with contextlib.suppress(FileNotFoundError), self._log_path.open() as handle:
            for line in handle:
                self._uploaded_lines += 1
                try:
                    body = json.loads(line)
                    found[body["file"]] = Uploaded(
                        body["key"], body["sha256"], body["at"], body["bytes"]
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a line a power cut cut short
        return found

    def _rewrite_log(self) -> None:
        lines = [json.dumps({"file": n, **asdict(u)}) for n, u in self._uploaded.items()]
        write_atomic(self._log_path, "".join(line + "\n" for line in lines).encode())
        self._uploaded_lines = len(lines)

    def _append_log(self, name: str, uploaded: Uploaded) -> None:
        with self._log_path.open("a") as handle:
            handle.write(json.dumps({"file": name, **asdict(uploaded)}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._uploaded_lines += 1

    def key_for(self, name: str, kind: str, at: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(at))
        prefix = self.settings.prefix.format(camera=self._camera_id, kind=kind, date=day)
        # The whole relative name: a frame queued by hand keeps its series folder, so that
        # `000001.jpg` of two series are two objects.
        return prefix + name

    # -- queueing ------------------------------------------------------------------------

    async def queue_job(self, job: Job) -> None:
        """Before the job's success is published: its captures into the journal."""
        if not self.enabled:
            return
        kind = kind_of_job(job)
        if kind not in self.settings.kinds:
            return
        for name in files_of(job):
            await self._queue_file(name, kind, job.id)

    async def queue_by_hand(self, name: str) -> QueuedUpload:
        """`upload <file>`: a capture queued (again) by hand."""
        if not self.enabled:
            raise CommandError(
                ErrorCode.NOT_AVAILABLE, "uploads are off: set upload.enabled and a bucket"
            )
        path = await asyncio.to_thread(self._captures.resolve_existing, name)
        name = self._captures.relative(path)
        queued = self._queue.get(name)
        if queued is not None:
            return queued
        entry = await self._queue_file(name, kind_of_name(name), None)
        if entry is None:
            raise CommandError(ErrorCode.IO_ERROR, f"cannot queue {name}: {self._last_error}")
        return entry

    async def _queue_file(self, name: str, kind: str, job_id: str | None) -> QueuedUpload | None:
        path = self._captures.root / name
        try:
            info = await asyncio.to_thread(path.stat)
            self._serial += 1
            entry = QueuedUpload(
                job_id=f"{time.time_ns()}-{self._serial}",
                file=name,
                key=self.key_for(name, kind, info.st_mtime),
                kind=kind,
                size=info.st_size,
                queued=time.time(),
                job=job_id,
            )
            await asyncio.to_thread(self._journal.write, entry)
        except OSError as err:
            # The capture is kept; only its upload could not be noted (a full disk).
            self._last_error = f"cannot queue {name} for upload: {err.strerror or err}"
            log.warning("%s", self._last_error)
            self._report(
                "upload.failed",
                False,
                f"ERROR: {self._last_error}; the file is kept, `upload {name}` queues it again",
                {"file": name, "key": None, "attempts": 0, "error": self._last_error,
                 "queued": False},
            )  # fmt: skip
            return None
        self._queue[name] = entry
        self._wake.set()
        self._changed()
        return entry

    def forget(self, names: Iterable[str]) -> None:
        """Captures deleted (`delete`, retention): their queued uploads are dropped now."""
        for name in names:
            self._uploaded.pop(name, None)
            entry = self._queue.get(name)
            if entry is not None and entry is not self._current:
                self._drop(entry, "the file was deleted before its upload")

    def _drop(self, entry: QueuedUpload, reason: str) -> None:
        if entry.attempts:
            # A store killed after it stored the object but before its answer left counts as
            # a failed attempt: say that the object may be there all the same.
            reason += (
                f" (after {entry.attempts} failed attempt(s): the store may hold {entry.key}"
                " from one whose answer was lost)"
            )
        self._queue.pop(entry.file, None)
        self._journal.remove(entry.job_id)
        log.warning("upload of %s dropped: %s", entry.file, reason)
        self._report(
            "upload.dropped",
            True,
            f"SUCCESS: upload of {entry.file} dropped: {reason}",
            {"file": entry.file, "key": entry.key, "reason": reason, "attempts": entry.attempts},
        )
        self._changed()

    # -- what others ask -----------------------------------------------------------------

    def pending(self) -> set[str]:
        """Captures not yet uploaded (retention spares them, bar the free-space floor)."""
        return set(self._queue)

    def status_of(self, name: str) -> dict[str, Any] | None:
        """For `files`: a capture's upload, or None when it has none."""
        entry = self._queue.get(name)
        if entry is not None:
            state = "uploading" if entry is self._current else "queued"
            if entry.attempts >= FAILED_AFTER:
                state = "failed"
            return {"state": state, "key": entry.key, "attempts": entry.attempts,
                    "error": entry.last_error}  # fmt: skip
        done = self._uploaded.get(name)
        if done is not None:
            return {"state": "done", "key": done.key, "sha256": done.sha256, "at": done.at}
        return None

    def snapshot(self) -> dict[str, Any]:
        """For `BASE/state`: the queue in numbers."""
        now = time.time()
        oldest = min((e.queued for e in self._queue.values()), default=None)
        current = self._current
        return {
            "enabled": self.enabled,
            "queued": len(self._queue),
            "bytes_pending": sum(e.size for e in self._queue.values()),
            "oldest_pending_s": round(now - oldest, 1) if oldest is not None else None,
            "uploading": current.file if current is not None else None,
            "uploaded": self._done,
            "last_error": self._last_error,
        }

    # -- the worker loop -----------------------------------------------------------------

    async def run(self) -> None:
        if not self.enabled:
            return
        try:
            key_id, secret = read_credentials(self.settings)
            ca = read_ca(self.settings)
        except ValueError as err:
            self._last_error = str(err)
            log.error("uploads cannot start: %s", err)
            self._changed()
            return
        s = self.settings
        self._worker = UploadWorker({
            "endpoint": s.endpoint, "region": s.region, "bucket": s.bucket,
            "access_key_id": key_id, "secret_access_key": secret, "max_kbit_s": s.max_kbit_s,
            "ca": ca,
        })  # fmt: skip
        sweeper = asyncio.create_task(self._sweep_loop(), name="upload-sweep")
        pause = s.retry_min_s
        try:
            while True:
                if not self._queue:
                    await self._worker.stop()  # nothing to do: its memory back
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                entry = next(iter(self._queue.values()))
                if await self._upload(entry):
                    pause = s.retry_min_s
                    continue
                await asyncio.sleep(pause)
                pause = min(pause * 2, s.retry_max_s)
        finally:
            sweeper.cancel()
            await self._worker.stop()

    async def _upload(self, entry: QueuedUpload) -> bool:
        path = self._captures.root / entry.file
        if not await asyncio.to_thread(path.is_file):
            self._drop(entry, "the file was deleted before its upload")
            return True
        if self._worker is None:
            return False
        self._current = entry
        self._changed()
        try:
            answer = await self._worker.ask({
                "id": entry.job_id, "path": str(path), "key": entry.key,
            })  # fmt: skip
        finally:
            self._current = None
        if entry.file not in self._queue:  # deleted while it went up
            return True
        if not answer.get("ok"):
            return self._failed(entry, str(answer.get("error") or "unknown error"))
        uploaded = Uploaded(entry.key, answer["sha256"], time.time(), int(answer["bytes"]))
        try:
            await asyncio.to_thread(self._append_log, entry.file, uploaded)
        except OSError as err:  # the next start uploads it again, under the same key
            log.warning("cannot note the upload of %s: %s", entry.file, err)
        self._uploaded[entry.file] = uploaded
        self._queue.pop(entry.file, None)
        self._journal.remove(entry.job_id)
        self._done += 1
        self._last_error = None
        removed = bool(
            self.settings.delete_after_days == 0 and await self._remove_uploaded([entry.file])
        )
        seconds = float(answer.get("seconds") or 0.0)
        rate = uploaded.bytes / seconds / 1e6 * 8 if seconds > 0 else 0.0
        self._report(
            "upload.done",
            True,
            f"SUCCESS: {entry.file} uploaded as {entry.key} ({uploaded.bytes} bytes in"
            f" {seconds:.1f} s, {rate:.1f} Mbit/s)"
            + ("; removed here (upload.then = delete_after_days 0)" if removed else ""),
            {
                "file": entry.file, "key": entry.key, "bytes": uploaded.bytes,
                "seconds": seconds, "sha256": uploaded.sha256, "url": self._object_url(entry.key),
                "kind": entry.kind, "job": entry.job, "attempts": entry.attempts + 1,
                "removed": removed,
            },
        )  # fmt: skip
        self._changed()
        return True

    def _failed(self, entry: QueuedUpload, error: str) -> bool:
        entry.attempts += 1
        entry.last_error = error
        self._last_error = f"{entry.file}: {error}"
        # To the back of the queue: one capture the store refuses holds up none of the others.
        self._queue.pop(entry.file, None)
        self._queue[entry.file] = entry
        with contextlib.suppress(OSError):
            self._journal.write(entry)
        log.warning("upload of %s failed (attempt %d): %s", entry.file, entry.attempts, error)
        if entry.attempts == FAILED_AFTER:
            self._report(
                "upload.failed",
                False,
                f"ERROR: {entry.file} could not be uploaded after {entry.attempts} attempts:"
                f" {error}; it stays queued and is tried again",
                {"file": entry.file, "key": entry.key, "attempts": entry.attempts,
                 "error": error, "queued": True},
            )  # fmt: skip
        self._changed()
        return False

    def _object_url(self, key: str) -> str | None:
        s = self.settings
        if not s.endpoint:
            return f"https://{s.bucket}.s3.{s.region}.amazonaws.com/{key}"
        return f"{s.endpoint.rstrip('/')}/{s.bucket}/{key}"

    # -- upload.then ---------------------------------------------------------------------

    def removable(self, now: float) -> list[str]:
        """Uploaded captures whose `delete_after_days` has passed."""
        days = self.settings.delete_after_days
        if days is None:
            return []
        horizon = now - days * DAY_S
        return [name for name, done in self._uploaded.items() if done.at <= horizon]

    async def _sweep_loop(self) -> None:
        if self.settings.delete_after_days is None:
            return
        while True:
            await self._remove_uploaded(self.removable(time.time()))
            await asyncio.sleep(SWEEP_EVERY_S)

    async def _remove_uploaded(self, names: list[str]) -> list[str]:
        """Remove uploaded captures (upload.then); returns those removed."""
        busy = self._in_use()
        removed = []
        for name in names:
            if name in busy:
                continue  # a running job reads it (a trim); the next sweep takes it
            try:
                size = await self._captures.delete(name)
            except CommandError as err:
                if err.code is ErrorCode.NOT_FOUND:
                    self._uploaded.pop(name, None)
                else:
                    log.warning("cannot remove uploaded %s: %s", name, err.detail)
                continue
            self._uploaded.pop(name, None)
            removed.append(name)
            log.info("removed %s (%d bytes): uploaded, upload.then = %s", name, size,
                     self.settings.then)  # fmt: skip
        if self._uploaded_lines > 2 * len(self._uploaded) + 1000:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._rewrite_log)
        self._changed()
        return removed

    async def stop(self) -> None:
        if self._worker is not None:
            await self._worker.stop()

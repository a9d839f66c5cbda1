"""`files` and `delete`: the captures directory, managed over MQTT."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures
from agent.jobs.manager import JobManager
from agent.protocol import ActionCommand
from agent.router import Answer

if TYPE_CHECKING:
    from agent.upload import Uploader


class FileActions:
    def __init__(
        self, captures: Captures, jobs: JobManager, uploads: Uploader | None = None
    ) -> None:
        self._captures = captures
        self._jobs = jobs
        self._uploads = uploads

    async def listing(self, command: ActionCommand) -> Answer:
        """`files [prefix]`: captures newest first, a page of `limit` after the file `before`."""
        prefix, before, limit = (command.params[k] for k in ("prefix", "before", "limit"))
        files = await asyncio.to_thread(self._captures.listing, prefix)
        start = 0
        if before is not None:
            names = [f["name"] for f in files]
            if before not in names:
                raise CommandError(
                    ErrorCode.NOT_FOUND, f"no capture named {before!r} to page from (deleted?)"
                )
            start = names.index(before) + 1
        page = files[start : start + limit]
        if self._uploads is not None and self._uploads.enabled:
            for item in page:
                item["upload"] = self._uploads.status_of(item["name"])
        more = start + limit < len(files)
        return Answer(
            "files.listed",
            f"SUCCESS: {len(page)} of {len(files)} files" + (" (more)" if more else ""),
            {
                "files": page,
                "total": len(files),
                "next_before": page[-1]["name"] if more and page else None,
            },
        )

    async def delete(self, command: ActionCommand) -> Answer:
        """`delete <file>`: remove a capture, unless a running job reads or writes it."""
        name = command.params["file"]
        normal = str(PurePosixPath(name))
        in_use = self._jobs.files_in_use()  # names, and folders (ending in `/`) being filled
        if normal in in_use or any(normal.startswith(f) for f in in_use if f.endswith("/")):
            raise CommandError(ErrorCode.BUSY, f"{name} is in use by a running job; try later")
        size = await self._captures.delete(name)
        if self._uploads is not None:
            self._uploads.forget([normal])
        return Answer("file.deleted", f"SUCCESS: deleted {name}", {"file": name, "size": size})

    async def upload(self, command: ActionCommand) -> Answer:
        """`upload <file>`: queue a capture for the object store (again, or one made before
        uploads were on)."""
        if self._uploads is None:
            raise CommandError(ErrorCode.NOT_AVAILABLE, "uploads are off: set upload.enabled")
        entry = await self._uploads.queue_by_hand(command.params["file"])
        queued = len(self._uploads.pending())
        return Answer(
            "upload.queued",
            f"SUCCESS: {entry.file} queued for upload as {entry.key} ({queued} in the queue)",
            {"file": entry.file, "key": entry.key, "bytes": entry.size, "queued": queued},
        )

"""The captures directory: where files may be read, and how they are written.

Names from commands are resolved strictly inside the directory: no absolute paths, no `..`, no
symbolic link leading out, and the file must exist. New files are written under a temporary
name (`.NAME.partial`) and renamed when complete, so a crash never leaves a corrupt file under a
final name; leftovers are swept at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote

from agent.errors import CommandError, ErrorCode

PARTIAL_SUFFIX = ".partial"


def io_error(err: OSError, what: str) -> CommandError:
    reason = "disk full (ENOSPC)" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return CommandError(ErrorCode.IO_ERROR, f"{what}: {reason}")


class CaptureWatcher(Protocol):
    """Told of every capture written or deleted (the retention's index)."""

    def note_written(self, path: Path) -> None: ...

    def note_removed(self, name: str) -> None: ...


class Captures:
    def __init__(
        self, root: Path, public_url: str = "", watcher: CaptureWatcher | None = None
    ) -> None:
        self.root = root
        self._public_url = public_url
        self._watcher = watcher
        # Names handed out by new_name and not written yet: two jobs started in the same
        # millisecond (a burst of commands the broker kept while the agent was away) would
        # otherwise get one name, and one's rename would take the other's temporary file.
        # A claim ends when the file is written (`writing`) or its job lets it go (`release`).
        self._claimed: set[str] = set()

    def url(self, name: str) -> str | None:
        """Where nginx serves the capture ``name`` (storage.public_url), or None without one."""
        return self._public_url + quote(name) if self._public_url else None

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def resolve_existing(self, name: str) -> Path:
        """The file ``name`` names inside the directory, or invalid_path / not_found."""
        pure = PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts or "\x00" in name:
            raise CommandError(
                ErrorCode.INVALID_PATH, f"{name!r} is not a name inside the captures directory"
            )
        root = self.root.resolve()
        candidate = (root / pure).resolve()
        if not candidate.is_relative_to(root):
            raise CommandError(
                ErrorCode.INVALID_PATH, f"{name!r} leads out of the captures directory"
            )
        if not candidate.is_file() or candidate.name.endswith(PARTIAL_SUFFIX):
            raise CommandError(ErrorCode.NOT_FOUND, f"no capture named {name!r}")
        return candidate

    def new_name(self, stem: str, suffix: str, at: float | None = None) -> Path:
        """A free final name such as `picture-20261121T091500.123Z.jpg`, for the Unix time
        ``at`` (default: now; a recording is named after the moment it starts)."""
        now = time.time() if at is None else at
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        path = self.root / f"{stem}-{stamp}{suffix}"
        counter = 1
        while path.name in self._claimed or path.exists() or self.partial_for(path).exists():
            path = self.root / f"{stem}-{stamp}-{counter}{suffix}"
            counter += 1
        self._claimed.add(path.name)
        return path

    def release(self, path: Path) -> None:
        """The job that asked for ``path`` (new_name) is done with the name."""
        self._claimed.discard(path.name)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    @staticmethod
    def partial_for(final: Path) -> Path:
        return final.with_name(f".{final.name}{PARTIAL_SUFFIX}")

    @contextlib.asynccontextmanager
    async def writing(self, final: Path) -> AsyncIterator[Path]:
        """Yield the temporary path to write; on success it becomes ``final`` atomically.

        The syncs run in a worker thread: on an SD card one takes 10-100 ms, which on the
        event loop would delay every answer and event behind it.
        """
        partial = self.partial_for(final)
        try:
            yield partial
            await asyncio.to_thread(_commit, partial, final)
            if self._watcher is not None:
                self._watcher.note_written(final)
        except OSError as err:
            raise io_error(err, f"cannot write {final.name}") from err
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            self.release(final)

    def listing(self, prefix: str) -> list[dict[str, Any]]:
        """The finished captures whose names start with ``prefix``, newest first (blocking).
        Temporary files, hidden files and symbolic links are not captures."""
        found: list[tuple[int, str, int, int | None]] = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.name.startswith(prefix):
                continue
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                # A timelapse series: one entry for the folder, with its frames and their size.
                inside = [
                    f for f in os.scandir(entry.path)
                    if not f.name.startswith(".") and f.is_file(follow_symlinks=False)
                ]  # fmt: skip
                size = sum(f.stat(follow_symlinks=False).st_size for f in inside)
                mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                found.append((mtime_ns, entry.name + "/", size, len(inside)))
            elif entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                found.append((info.st_mtime_ns, entry.name, info.st_size, None))
        found.sort(reverse=True)
        listed = []
        for mtime_ns, name, size, frames in found:
            item: dict[str, Any] = {
                "name": name, "kind": _kind(name), "size": size, "time": mtime_ns / 1e9,
                "url": self.url(name),
            }  # fmt: skip
            if frames is not None:
                item["frames"] = frames
            listed.append(item)
        return listed

    async def write_file(self, final: Path, data: bytes) -> None:
        """A small capture (a sidecar) written whole, atomically."""
        async with self.writing(final) as partial:
            await asyncio.to_thread(partial.write_bytes, data)

    async def delete(self, name: str) -> int:
        """Remove the capture ``name`` (strict path rules); returns its size."""
        path = await asyncio.to_thread(self.resolve_existing, name)
        try:
            size = await asyncio.to_thread(_unlink, path)
        except OSError as err:
            raise io_error(err, f"cannot delete {name}") from err
        if self._watcher is not None:
            self._watcher.note_removed(self.relative(path))
        return size

    def sweep_partials(self) -> list[str]:
        """Remove temporary files a crash left behind; returns their names."""
        swept = []
        # `.NAME.partial` and the pieces a job makes beside it (`.NAME.partial.head.ts`), in the
        # directory and in its folders (a timelapse series).
        pattern = f".*{PARTIAL_SUFFIX}*"
        for leftover in [*self.root.glob(pattern), *self.root.glob(f"*/{pattern}")]:
            with contextlib.suppress(OSError):
                leftover.unlink()
                swept.append(self.relative(leftover))
        return swept


def _unlink(path: Path) -> int:
    size = path.stat().st_size
    path.unlink()
    return size


def _kind(name: str) -> str:
    """What a capture is, from the name the agent gave it."""
    if name.endswith("/"):
        return "timelapse"
    if name.endswith(".json"):
        return "sidecar"
    if "-trim-" in name:
        return "trim"
    stem = name.split("-", 1)[0]
    if stem == "timelapse":
        return "timelapse_video"
    return stem if stem in ("picture", "record") else "other"


def _commit(partial: Path, final: Path) -> None:
    """Durably: the data on disk, then the name, then the directory entry."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    partial.replace(final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def probe_media(path: Path) -> dict[str, Any]:
    """Duration and resolution of a media file, from ffprobe."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json",
         "-show_entries", "stream=width,height,codec_name,profile:format=duration", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return {}
    body = json.loads(result.stdout)
    stream = (body.get("streams") or [{}])[0]
    duration = body.get("format", {}).get("duration")
    return {
        "width": stream.get("width"),
        "height": stream.get("height"),
        "codec": stream.get("codec_name"),
        "profile": stream.get("profile"),
        "duration_s": round(float(duration), 3) if duration not in (None, "N/A") else None,
    }


def describe_file(
    captures: Captures, path: Path, media: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job result: path relative to the captures directory, size, SHA-256, media facts.

    ``media`` spares the ffprobe run when the caller knows the facts already (pictures).
    """
    media = probe_media(path) if media is None else media
    relative = captures.relative(path)
    return {
        "path": relative,
        "url": captures.url(relative),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "duration_s": media.get("duration_s"),
        "resolution": f"{media['width']}x{media['height']}" if media.get("width") else None,
        "codec": media.get("codec"),
    }

"""Atomic file writes: a temporary name in the same directory, fsync, then rename.

A reader (or a process restarted after a crash) sees either the old file or the complete new
one, never a torn write, because rename(2) within one filesystem is atomic.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``; the file has ``mode`` from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own for every write: in a container the agent is always PID 1, so a name
    # from the PID alone, left behind by a power cut, would make every later O_EXCL open fail.
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    # O_EXCL with the final mode: a private key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)  # the umask may have narrowed the mode given to open()
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # Persist the rename itself; without this a power cut can bring back the old name.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sweep_temporaries(directory: Path) -> list[str]:
    """Remove the temporary files writes left in ``directory`` when the power went (at start,
    before anything writes there); returns their names."""
    swept = []
    for leftover in directory.glob(f".*{TEMP_MARK}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            swept.append(leftover.name)
    return swept

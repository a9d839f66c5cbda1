"""Retention of the captures directory: by age, by total size, and a floor of free space.

The captures are indexed once at start (a scan), then kept up to date by the writes and deletes
that go through `Captures`, so a pass that has nothing to do costs a `statvfs` and a look at the
oldest entry, however many files there are. Oldest first, a timelapse series as one unit aged
by its newest frame; never a file a running job reads or writes, nor a series a running job
fills or reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import CommandError, ErrorCode

log = logging.getLogger(__name__)

DAY_S = 86400.0
MIB = 1 << 20


@dataclass(frozen=True)
class StorageLimits:
    max_bytes: int = 0  # 0: no cap
    max_age_days: float = 0.0  # 0: keep for ever
    min_free_bytes: int = 512 * MIB


@dataclass
class Entry:
    """A unit of retention: a capture file, or a series folder taken as one (its frames'
    total size, and the time of its newest frame: a finished series ages from when it ended,
    and goes whole, never a frame at a time)."""

    size: int
    mtime: float
    files: dict[str, tuple[int, float]] | None = None  # a folder's frames: size, mtime

    @property
    def count(self) -> int:
        return 1 if self.files is None else len(self.files)


@dataclass(order=True)
class _Aged:
    mtime: float
    name: str = field(compare=True)


def unit_of(name: str) -> str:
    """The unit a capture belongs to: a file in a series folder is part of `folder/`."""
    folder, sep, _ = name.partition("/")
    return folder + "/" if sep else name


class CaptureIndex:
    """Every finished capture as units (see Entry) by name relative to the directory, a series
    folder's ending in `/`, with a heap that gives the oldest unit first. Hidden and partial
    files and symlinks are not captures. Not thread-safe: the event loop owns it; scans build a
    new one off the loop."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._heap: list[_Aged] = []  # may hold stale items; checked against _entries
        self.total_bytes = 0
        self.files = 0

    def __len__(self) -> int:
        return self.files

    def __contains__(self, name: str) -> bool:
        entry = self._entries.get(unit_of(name))
        if entry is None:
            return False
        return entry.files is None or name in entry.files or name.endswith("/")

    @classmethod
    def scan(cls, root: Path) -> CaptureIndex:
        """A fresh index of ``root`` and its capture folders (blocking)."""
        index = cls()
        for name, size, mtime in _walk(root, ""):
            index._put(name, size, mtime)
        index._heap = [_Aged(e.mtime, n) for n, e in index._entries.items()]
        heapq.heapify(index._heap)
        return index

    def add(self, name: str, size: int, mtime: float) -> None:
        self.remove(name)
        unit = self._put(name, size, mtime)
        heapq.heappush(self._heap, _Aged(self._entries[unit].mtime, unit))

    def _put(self, name: str, size: int, mtime: float) -> str:
        unit = unit_of(name)
        self.total_bytes += size
        self.files += 1
        if unit == name:
            self._entries[unit] = Entry(size, mtime)
            return unit
        entry = self._entries.get(unit)
        files = entry.files if entry is not None else None
        if entry is None or files is None:
            files = {}
            entry = self._entries[unit] = Entry(0, mtime, files)
        files[name] = (size, mtime)
        entry.size += size
        entry.mtime = max(entry.mtime, mtime)
        return unit

    def remove(self, name: str) -> None:
        """Forget a capture file, or a whole unit (`folder/`)."""
        unit = unit_of(name)
        entry = self._entries.get(unit)
        if entry is None:
            return
        if entry.files is None or name == unit:
            del self._entries[unit]
            self.total_bytes -= entry.size
            self.files -= entry.count
            return
        removed = entry.files.pop(name, None)
        if removed is None:
            return
        self.total_bytes -= removed[0]
        self.files -= 1
        entry.size -= removed[0]
        if not entry.files:
            del self._entries[unit]
        elif removed[1] >= entry.mtime:  # its newest frame went: the folder is older now
            entry.mtime = max(mtime for _, mtime in entry.files.values())
            heapq.heappush(self._heap, _Aged(entry.mtime, unit))

    def unit(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def oldest(self) -> Iterator[tuple[str, Entry]]:
        """The units from the oldest on. Consuming the iterator does not remove them."""
        self._drop_stale()
        seen: set[str] = set()  # a unit re-pushed with an unchanged time is in the heap twice
        for aged in self._heap_order():
            entry = self._entries.get(aged.name)
            if entry is not None and entry.mtime == aged.mtime and aged.name not in seen:
                seen.add(aged.name)
                yield aged.name, entry

    def oldest_mtime(self) -> float | None:
        self._drop_stale()
        return self._heap[0].mtime if self._heap else None

    def _heap_order(self) -> Iterator[_Aged]:
        # A copy popped lazily: a pass that removes ten files out of 100,000 costs ten pops.
        heap = list(self._heap)
        while heap:
            yield heapq.heappop(heap)

    def _drop_stale(self) -> None:
        # Stale items (a unit removed, a folder grown newer) dominate: rebuild. Every frame of
        # a series leaves one behind, so this also bounds the heap of a long series.
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._heap = [_Aged(e.mtime, n) for n, e in self._entries.items()]
            heapq.heapify(self._heap)
        while self._heap:
            top = self._heap[0]
            entry = self._entries.get(top.name)
            if entry is not None and entry.mtime == top.mtime:
                return
            heapq.heappop(self._heap)


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, int, float]]:
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if not prefix:  # capture folders are one level deep
                    yield from _walk(Path(entry.path), entry.name + "/")
                continue
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                yield prefix + entry.name, info.st_size, info.st_mtime


def _remove(root: Path, units: list[tuple[str, Entry]]) -> dict[str, list[str]]:
    """Blocking: unlink the units' files (a series folder's every frame, then the folder).
    Returns, by unit, the files that are gone."""
    gone: dict[str, list[str]] = {}
    for unit, entry in units:
        names = [unit] if entry.files is None else sorted(entry.files)
        for name in names:
            try:
                (root / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("retention could not remove %s: %s", name, err)
                continue
            gone.setdefault(unit, []).append(name)
        if entry.files is not None:
            with contextlib.suppress(OSError):  # not empty (a frame kept by an error): fine
                (root / unit).rmdir()
    return gone


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


PRUNED_LISTED = 50  # units named in one storage.pruned event; `more` counts the rest


@dataclass
class Pruned:
    """What one pass removed, by unit (a file, or a series folder as `folder/`)."""

    # name, mtime, bytes, files
    units: list[tuple[str, float, int, int]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    # Captures removed before their upload (only ever for min_free_bytes).
    not_uploaded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        oldest = min(self.units, key=lambda n: n[1])
        newest = max(self.units, key=lambda n: n[1])
        return {
            "count": sum(files for _, _, _, files in self.units),
            "bytes": sum(size for _, _, size, _ in self.units),
            "oldest": {"file": oldest[0], "time": oldest[1]},
            "newest": {"file": newest[0], "time": newest[1]},
            "rule": "+".join(self.rules),
            "files": [name for name, _, _, _ in self.units[:PRUNED_LISTED]],
            "more": max(0, len(self.units) - PRUNED_LISTED),
            "not_uploaded": self.not_uploaded,
        }


StorageReport = Callable[[str, bool, str, dict[str, Any]], None]

CHECK_EVERY_S = 180.0  # besides at start and after every job that wrote a file


class Retention:
    """Keeps the captures directory within its limits and says what it removed."""

    def __init__(
        self,
        root: Path,
        limits: StorageLimits,
        protected: Callable[[], set[str]],
        report: StorageReport,
        changed: Callable[[], None],
        not_uploaded: Callable[[], set[str]] = set,
    ) -> None:
        """``protected``: names and folder prefixes (ending in `/`) that running jobs use;
        ``not_uploaded``: captures waiting for their upload, removed only for the free-space
        floor (and then named in `storage.pruned`)."""
        self._root = root
        self._not_uploaded = not_uploaded
        self.limits = limits
        self._protected = protected
        self._report = report
        self._changed = changed
        self.index = CaptureIndex()
        self._lock = asyncio.Lock()
        self._free = 0
        self.low = False

    async def start(self) -> None:
        """Index the directory (off the loop) and run a first pass."""
        started = time.monotonic()
        try:
            self.index = await asyncio.to_thread(CaptureIndex.scan, self._root)
        except OSError as err:  # the next writes still index themselves
            log.warning("cannot index the captures in %s: %s", self._root, err)
        log.info(
            "indexed %d captures (%.1f MiB) in %.2f s",
            len(self.index), self.index.total_bytes / MIB, time.monotonic() - started,
        )  # fmt: skip
        await self.check()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            await self.check()

    async def check(self) -> None:
        """One pass (see `_check`); a filesystem error is logged, and the next pass retries."""
        try:
            await self._check()
        except OSError as err:
            log.warning("retention could not check %s: %s", self._root, err)

    def note_written(self, path: Path) -> None:
        """A capture was just committed under ``path`` (called by Captures)."""
        with contextlib.suppress(OSError, ValueError):
            info = path.stat()
            self.index.add(str(path.relative_to(self._root)), info.st_size, info.st_mtime)

    def note_removed(self, name: str) -> None:
        self.index.remove(name)

    async def _check(self) -> None:
        """One pass: remove what the limits ask, oldest first; report it; note a low disk."""
        async with self._lock:
            self._free = await asyncio.to_thread(free_bytes, self._root)
            pruned = Pruned()
            if self._over_a_limit(self._free, time.time()):
                # Chosen on the loop (in memory, the oldest first), removed in a worker thread.
                waiting = self._not_uploaded()
                victims, rules = self._choose(self._protected(), self._free, waiting)
                removed = await asyncio.to_thread(_remove, self._root, victims)
                for unit, entry in victims:
                    names = removed.get(unit, [])
                    if not names:
                        continue
                    size = sum(entry.files[n][0] for n in names) if entry.files else entry.size
                    for name in names:
                        self.index.remove(name)
                    pruned.units.append((unit, entry.mtime, size, len(names)))
                    pruned.not_uploaded.extend(n for n in names if n in waiting)
                pruned.rules = rules
                self._free = await asyncio.to_thread(free_bytes, self._root)
        if pruned.units:
            body = pruned.to_json()
            message = (
                f"SUCCESS: removed {body['count']} old captures ({body['bytes'] / MIB:.1f} MiB)"
                f" for {body['rule']}"
            )
            if pruned.not_uploaded:
                message += (
                    f"; {len(pruned.not_uploaded)} of them not yet uploaded (the disk floor"
                    " comes first): their uploads are dropped"
                )
            log.info("%s", message)
            self._report("storage.pruned", True, message, body)
        self._set_low(self._free < self.limits.min_free_bytes)
        self._changed()

    async def ensure_room(self) -> None:
        """Before a job that writes: io_error "disk nearly full" rather than a failure half-way."""
        try:
            if await asyncio.to_thread(free_bytes, self._root) >= self.limits.min_free_bytes:
                return
        except OSError as err:  # cannot tell: the job itself will say what failed
            log.warning("cannot read the free space of %s: %s", self._root, err)
            return
        await self.check()
        if self.low:
            raise CommandError(
                ErrorCode.IO_ERROR,
                f"disk nearly full: {self._free / MIB:.0f} MiB free on the captures filesystem,"
                f" storage.min_free_bytes keeps {self.limits.min_free_bytes / MIB:.0f} MiB",
            )

    def snapshot(self) -> dict[str, Any]:
        return {
            "used_bytes": self.index.total_bytes,
            "files": len(self.index),
            "free_bytes": self._free,
            "max_bytes": self.limits.max_bytes,
            "max_age_days": self.limits.max_age_days,
            "min_free_bytes": self.limits.min_free_bytes,
            "low": self.low,
        }

    def _over_a_limit(self, free: int, now: float) -> bool:
        limits = self.limits
        oldest = self.index.oldest_mtime()
        return (
            (limits.max_bytes > 0 and self.index.total_bytes > limits.max_bytes)
            or (limits.max_age_days > 0 and oldest is not None
                and oldest < now - limits.max_age_days * DAY_S)
            or free < limits.min_free_bytes
        )  # fmt: skip

    def _choose(
        self, protected: set[str], free: int, waiting: AbstractSet[str] = frozenset()
    ) -> tuple[list[tuple[str, Entry]], list[str]]:
        """The oldest units to remove so that every limit holds again, and the rules that
        asked for them; protected names and folders are passed over (a folder a job fills, and
        a file a job reads, writes or is about to assemble), and so are captures ``waiting``
        for their upload, unless the free-space floor asks."""
        limits = self.limits
        cutoff = time.time() - limits.max_age_days * DAY_S if limits.max_age_days > 0 else None
        total = self.index.total_bytes
        folders = tuple(p for p in protected if p.endswith("/"))
        victims: list[tuple[str, Entry]] = []
        rules: list[str] = []
        for name, entry in self.index.oldest():
            if cutoff is not None and entry.mtime < cutoff:
                rule = "max_age_days"
            elif limits.max_bytes > 0 and total > limits.max_bytes:
                rule = "max_bytes"
            elif free < limits.min_free_bytes:
                rule = "min_free_bytes"
            else:
                break
            if name in protected or name.startswith(folders):
                continue
            if name in waiting:
                if free >= limits.min_free_bytes:
                    continue  # its upload first; only the disk floor goes before it
                rule = "min_free_bytes"
            if entry.files is not None and any(f in protected for f in entry.files):
                continue  # a frame of a finished series that a job reads (a trim)
            victims.append((name, entry))
            total -= entry.size
            free += entry.size
            if rule not in rules:
                rules.append(rule)
        return victims, rules

    def _set_low(self, low: bool) -> None:
        if low and not self.low:
            message = (
                f"disk nearly full: {self._free / MIB:.0f} MiB free, below storage.min_free_bytes"
                f" ({self.limits.min_free_bytes / MIB:.0f} MiB), and no capture may be removed"
                " to make room; jobs that write are refused until there is room"
            )
            log.warning("%s", message)
            self._report(
                "storage.low",
                False,
                f"ERROR: {message}",
                {"free_bytes": self._free, "min_free_bytes": self.limits.min_free_bytes},
            )
        elif self.low and not low:
            log.info("the captures filesystem has room again")
        if low != self.low:
            self.low = low
            self._changed()

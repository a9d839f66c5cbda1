"""Retention of the captures directory: by age, by size and a floor of free space, first on the
Retention object over a real directory, then in the real agent (a tmpfs where a disk must fill)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker, MediaServer

from agent.errors import CommandError
from agent.jobs.retention import CaptureIndex, Retention, StorageLimits
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe, wait_until
from tests.test_jobs import ask, run_job

DAY = 86400.0


def make_capture(root: Path, name: str, size: int, age_s: float) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, dict[str, Any]]] = []

    def __call__(self, name: str, ok: bool, message: str, data: dict[str, Any]) -> None:
        self.seen.append((name, ok, data))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for seen, _, data in self.seen if seen == name]


def retention(
    root: Path, limits: StorageLimits, protected: set[str] | None = None
) -> tuple[Retention, Events]:
    events = Events()
    return Retention(root, limits, lambda: protected or set(), events, lambda: None), events


def test_the_oldest_go_first_until_under_max_bytes_sparing_what_jobs_use(tmp_path: Path) -> None:
    for n in range(10):  # capture-0 is the oldest
        make_capture(tmp_path, f"picture-{n}.jpg", 1000, age_s=100 - n)
    make_capture(tmp_path, "timelapse-a/000001.jpg", 1000, age_s=200)  # a running series
    make_capture(tmp_path, ".picture-9.jpg.partial", 50_000, age_s=300)  # not a capture
    store, events = retention(
        tmp_path, StorageLimits(max_bytes=5500, min_free_bytes=0),
        protected={"picture-1.jpg", "timelapse-a/"},
    )  # fmt: skip
    asyncio.run(store.start())
    left = sorted(p.name for p in tmp_path.glob("picture-*.jpg"))
    # 11 captures of 1000 bytes, 5 may stay: picture-1 and the series are spared (and still
    # count), so the six oldest of the others go: 0, 2, 3, 4, 5, 6.
    assert left == ["picture-1.jpg", *(f"picture-{n}.jpg" for n in range(7, 10))]
    assert (tmp_path / "timelapse-a/000001.jpg").exists()
    assert (tmp_path / ".picture-9.jpg.partial").exists()
    (pruned,) = events.named("storage.pruned")  # one event for the pass
    assert pruned["count"] == 6 and pruned["bytes"] == 6000 and pruned["rule"] == "max_bytes"
    assert pruned["oldest"]["file"] == "picture-0.jpg"
    assert pruned["newest"]["file"] == "picture-6.jpg"
    assert store.snapshot()["used_bytes"] == 5000 and store.snapshot()["files"] == 5
    # Nothing over the limit: a pass removes nothing and says nothing.
    asyncio.run(store.check())
    assert len(events.named("storage.pruned")) == 1


def test_max_age_days_removes_old_files_and_empty_series_folders(tmp_path: Path) -> None:
    make_capture(tmp_path, "picture-old.jpg", 10, age_s=3 * DAY)
    make_capture(tmp_path, "timelapse-old/000001.jpg", 10, age_s=3 * DAY)
    make_capture(tmp_path, "picture-new.jpg", 10, age_s=60)
    store, events = retention(tmp_path, StorageLimits(max_age_days=2, min_free_bytes=0))
    asyncio.run(store.start())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture-new.jpg"]
    (pruned,) = events.named("storage.pruned")
    assert pruned["rule"] == "max_age_days" and pruned["count"] == 2


def test_a_finished_series_goes_whole_and_ages_from_its_last_frame(tmp_path: Path) -> None:
    """Its first frames are the oldest files, but the series ended after the pictures: the
    pictures go first, and when the series goes it goes whole, named as one."""
    for n in range(1, 6):  # frames from 10 days to 6 days old, the last one 1 day old
        make_capture(tmp_path, f"timelapse-a/{n:06d}.jpg", 100, age_s=(11 - n) * DAY)
    make_capture(tmp_path, "timelapse-a/000006.jpg", 100, age_s=1 * DAY)
    make_capture(tmp_path, "picture-3d.jpg", 100, age_s=3 * DAY)
    make_capture(tmp_path, "picture-2d.jpg", 100, age_s=2 * DAY)
    make_capture(tmp_path, "picture-now.jpg", 100, age_s=60)
    store, events = retention(tmp_path, StorageLimits(max_bytes=800, min_free_bytes=0))
    asyncio.run(store.start())  # 900 bytes: one file over
    assert not (tmp_path / "picture-3d.jpg").exists()
    assert len(list((tmp_path / "timelapse-a").iterdir())) == 6
    store.limits = StorageLimits(max_bytes=350, min_free_bytes=0)
    asyncio.run(store.check())  # the 2-day picture, then the series (1 day) as one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture-now.jpg"]
    last = events.named("storage.pruned")[-1]
    assert last["files"] == ["picture-2d.jpg", "timelapse-a/"] and last["more"] == 0
    assert last["count"] == 7 and last["bytes"] == 700
    assert store.snapshot()["files"] == 1 and store.snapshot()["used_bytes"] == 100


def test_a_series_a_job_reads_or_fills_stays_and_a_long_pass_says_how_many_more(
    tmp_path: Path,
) -> None:
    make_capture(tmp_path, "timelapse-a/000001.jpg", 100, age_s=5 * DAY)  # a trim reads it
    make_capture(tmp_path, "timelapse-b.mp4", 100, age_s=5 * DAY)  # being assembled
    for n in range(60):
        make_capture(tmp_path, f"picture-{n}.jpg", 10, age_s=4 * DAY - n)
    store, events = retention(
        tmp_path, StorageLimits(max_age_days=1, min_free_bytes=0),
        protected={"timelapse-a/000001.jpg", "timelapse-b.mp4"},
    )  # fmt: skip
    asyncio.run(store.start())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timelapse-a", "timelapse-b.mp4"]
    (pruned,) = events.named("storage.pruned")
    assert pruned["count"] == 60 and len(pruned["files"]) == 50 and pruned["more"] == 10


def test_the_index_of_a_long_series_stays_small(tmp_path: Path) -> None:
    """Every frame makes the folder newer; the index keeps one unit, not a heap per frame."""
    index = CaptureIndex()
    for n in range(1, 20_001):
        index.add(f"timelapse-a/{n:06d}.jpg", 10, float(n))
    index.add("picture.jpg", 10, 0.5)
    assert [name for name, _ in index.oldest()] == ["picture.jpg", "timelapse-a/"]
    assert len(index._heap) < 2 * 2 + 1024 + 2
    index.remove("timelapse-a/020000.jpg")  # the newest frame deleted: the folder is older
    entry = index.unit("timelapse-a/")
    assert entry is not None and entry.mtime == 19_999.0 and len(index) == 20_000


def test_the_index_follows_writes_and_deletes_without_rescanning(tmp_path: Path) -> None:
    make_capture(tmp_path, "a.jpg", 100, age_s=10)
    store, _ = retention(tmp_path, StorageLimits(max_bytes=250, min_free_bytes=0))
    asyncio.run(store.start())
    store.note_written(make_capture(tmp_path, "b.jpg", 100, age_s=5))
    assert store.snapshot()["used_bytes"] == 200
    store.note_written(make_capture(tmp_path, "c.jpg", 100, age_s=1))
    asyncio.run(store.check())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jpg", "c.jpg"]
    store.note_removed("b.jpg")
    assert store.snapshot()["used_bytes"] == 100


def test_an_index_of_100000_files_answers_the_oldest_without_sorting_again(
    tmp_path: Path,
) -> None:
    index = CaptureIndex()
    for n in range(100_000):
        index.add(f"picture-{n}.jpg", 10, float(100_000 - n))
    assert index.oldest_mtime() == 1.0
    first = next(index.oldest())
    assert first[0] == "picture-99999.jpg"
    index.remove("picture-99999.jpg")
    assert index.oldest_mtime() == 2.0 and len(index) == 99_999


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs as the captures directory."""
    captures = tmp_path / "agent" / "captures"
    captures.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(captures)], check=True)
    yield captures
    subprocess.run(["umount", "-l", str(captures)], check=False)


def test_a_floor_that_cannot_be_kept_refuses_jobs_up_front_and_says_so_once(
    small_disk: Path, tmp_path: Path
) -> None:
    # The disk is full of something that is not a capture (hidden: never removed).
    (small_disk / ".other").write_bytes(b"\0" * (20 << 20))
    make_capture(small_disk, "picture-old.jpg", 1 << 20, age_s=60)
    store, events = retention(small_disk, StorageLimits(min_free_bytes=16 << 20))
    asyncio.run(store.start())
    assert not (small_disk / "picture-old.jpg").exists()  # the floor took what it could
    assert [d["rule"] for d in events.named("storage.pruned")] == ["min_free_bytes"]
    assert store.low and len(events.named("storage.low")) == 1
    with pytest.raises(CommandError, match="disk nearly full"):
        asyncio.run(store.ensure_room())
    asyncio.run(store.check())
    assert len(events.named("storage.low")) == 1  # once per episode
    (small_disk / ".other").unlink()
    asyncio.run(store.ensure_room())
    asyncio.run(store.check())
    assert not store.low


def test_the_agent_keeps_max_bytes_and_reports_each_pass(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    cap = 300_000
    env = {"CAMERA_AGENT_STORAGE__MAX_BYTES": str(cap)}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    captures = tmp_path / "agent" / "captures"
    try:
        operator.wait_event(event="stream.online", timeout=15)
        made = [
            run_job(operator, {"id": f"p{n}", "action": "picture", "quality": 95})["data"]
            for n in range(6)
        ]
        assert sum(m["result"]["size"] for m in made) > cap, "the pictures must overflow the cap"
        pruned = operator.wait_event(event="storage.pruned")
        wait_until(
            lambda: sum(p.stat().st_size for p in captures.iterdir()) <= cap, what="under the cap"
        )
        left = {p.name: p.stat().st_size for p in captures.iterdir()}
        state = operator.wait_for(
            lambda m: (
                m.topic == "camera/state"
                and m.json()["storage"]["used_bytes"] == sum(left.values())
            ),
            what="state with the storage left",
        ).json()
    finally:
        agent.stop()
    names = [m["result"]["path"] for m in made]
    assert pruned["ok"] is True and pruned["data"]["rule"] == "max_bytes"
    assert pruned["data"]["oldest"]["file"] == names[0] and names[0] not in left
    assert names[-1] in left  # the newest stays
    assert state["storage"]["max_bytes"] == cap and state["storage"]["files"] == len(left)


def test_a_full_disk_refuses_jobs_but_the_agent_stays_healthy(
    broker: Broker, media: MediaServer, operator: Probe, small_disk: Path, tmp_path: Path
) -> None:
    (small_disk / ".other").write_bytes(b"\0" * (20 << 20))
    env = {"CAMERA_AGENT_STORAGE__MIN_FREE_BYTES": str(16 << 20)}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        low = operator.wait_event(event="storage.low")
        assert low["ok"] is False and low["error"]["code"] == "io_error"
        for n in range(2):
            refused = ask(operator, {"id": f"full{n}", "action": "picture"})
            assert refused["ok"] is False and refused["error"]["code"] == "io_error"
            assert "disk nearly full" in refused["error"]["detail"]
        # Once per episode: the refusals above did not raise it again.
        assert not any(b'"storage.low"' in m.payload for m in operator.history)
        operator.subscribe("camera/state")
        state = operator.wait_for(lambda m: m.topic == "camera/state" and m.retain).json()
        assert state["storage"]["low"] is True
        assert any("disk nearly full" in w for w in state["warnings"])
        health = subprocess.run(
            [sys.executable, "-m", "agent", "health", "--config", str(agent.config_path)],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert health.returncode == 0, health.stdout + health.stderr
        # Room again: the next picture is taken.
        (small_disk / ".other").unlink()
        taken = run_job(operator, {"id": "room", "action": "picture"})
        assert taken["ok"] is True, taken
    finally:
        agent.stop()


def test_old_captures_are_removed_at_start(broker: Broker, operator: Probe, tmp_path: Path) -> None:
    captures = tmp_path / "agent" / "captures"
    make_capture(captures, "picture-ancient.jpg", 100, age_s=40 * DAY)
    make_capture(captures, "picture-recent.jpg", 100, age_s=DAY)
    env = {"CAMERA_AGENT_STORAGE__MAX_AGE_DAYS": "30"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", env=env), operator)
    try:
        pruned = operator.wait_event(event="storage.pruned")
    finally:
        agent.stop()
    assert pruned["data"]["rule"] == "max_age_days"
    assert pruned["data"]["files"] == ["picture-ancient.jpg"]
    assert sorted(p.name for p in captures.iterdir()) == ["picture-recent.jpg"]

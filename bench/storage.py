"""Storage benchmark: timelapse timing, and what retention costs on a large captures directory.

- timelapse: a series of N frames at 1 s through the real agent; how far from its schedule each
  frame was taken (the agent's own clock, in the result) and landed on disk (the files' times
  against start + k x interval), against the naive loop the original system's users scripted:
  `picture`, wait for it, sleep the interval, again (its drift accumulates);
- retention over 100,000 files: the start-up scan, a pass with nothing to do, and a pass that
  removes 1,000 files, against a naive pass that rescans and sorts the directory each time.

Usage: `scripts/bench storage [--frames N] [--files N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.stack import local_stack
from tests.support import AgentProcess, Probe


def series_deviation(captures: Path, result: dict[str, float | str]) -> list[float]:
    """Milliseconds each frame landed on disk after its tick."""
    folder = captures / str(result["folder"])
    started = dt.datetime.fromisoformat(str(result["started"])).timestamp()
    interval = float(result["interval_s"])
    names = sorted(folder.iterdir())
    return [
        ((path.stat().st_mtime - (started + k * interval)) * 1000) for k, path in enumerate(names)
    ]


def naive_deviation(operator: Probe, frames: int, interval: float) -> list[float]:
    """The scripted loop: picture, wait for it, sleep the interval. Milliseconds late against
    the schedule its first picture set."""
    late = []
    first = None
    for k in range(frames):
        sent = time.time()
        first = sent if first is None else first
        late.append((sent - (first + k * interval)) * 1000)
        operator.publish(
            "camera/control/action", json.dumps({"id": f"n{k}", "action": "picture"}), wait=False
        )
        operator.wait_event(id=f"n{k}", event="job.succeeded", timeout=10)
        operator.history.clear()
        time.sleep(interval)
    return late


def timelapse(frames: int) -> tuple[dict[str, float], list[float], list[float]]:
    with local_stack() as stack:
        operator = Probe(stack.broker, "operator")
        operator.subscribe("camera/#")
        agent = AgentProcess(stack.broker, stack.root / "agent", media=stack.media)
        agent.start()
        try:
            operator.wait_event(event="stream.online", timeout=20)
            operator.publish("camera/control/action", json.dumps(
                {"id": "tl", "action": "timelapse", "interval": 1, "count": frames,
                 "assemble": False}))  # fmt: skip
            done = operator.wait_event(id="tl", event="job.succeeded", timeout=frames + 30)
            operator.history.clear()
            result = done["data"]["result"]
            on_disk = series_deviation(stack.root / "agent" / "captures", result)
            naive = naive_deviation(operator, frames, 1.0)
        finally:
            agent.stop()
            operator.close()
    return result["late_ms"], on_disk, naive


def retention_costs(files: int) -> list[tuple[str, float]]:
    from agent.jobs.retention import CaptureIndex, Retention, StorageLimits  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="camera-bench-retention-") as tmp:
        root = Path(tmp)
        now = time.time()
        for n in range(files):
            path = root / f"picture-{n:06d}.jpg"
            path.write_bytes(b"x")
            os.utime(path, (now - files + n, now - files + n))
        rows = []
        started = time.perf_counter()
        CaptureIndex.scan(root)
        rows.append(("start-up scan (index built)", (time.perf_counter() - started) * 1000))

        limits = StorageLimits(max_bytes=files, min_free_bytes=0)
        store = Retention(root, limits, set, lambda *a: None, lambda: None)

        async def passes() -> tuple[float, float]:
            await store.start()
            idle = []
            for _ in range(100):
                begun = time.perf_counter()
                await store.check()
                idle.append((time.perf_counter() - begun) * 1000)
            store.limits = StorageLimits(max_bytes=files - 1000, min_free_bytes=0)
            begun = time.perf_counter()
            await store.check()
            return statistics.median(idle), (time.perf_counter() - begun) * 1000

        idle, pruning = asyncio.run(passes())
        rows.append(("pass with nothing to do (median of 100)", idle))
        rows.append(("pass removing the 1,000 oldest", pruning))

        started = time.perf_counter()
        entries = sorted(
            (entry.stat().st_mtime, entry.name, entry.stat().st_size) for entry in os.scandir(root)
        )
        over = sum(size for _, _, size in entries) > files
        naive_ms = (time.perf_counter() - started) * 1000
        rows.append((f"naive pass: rescan and sort ({'over' if over else 'within'} the cap)",
                     naive_ms))  # fmt: skip
        return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args(argv)
    taken, on_disk, naive = timelapse(args.frames)
    costs = retention_costs(args.files)

    print(f"\ntimelapse: {args.frames} frames at 1 s, deviation from the schedule (ms)")
    print(f"{'approach':<58}{'median':>9}{'max':>9}")
    print(f"{'naive loop: picture, wait, sleep 1 s (command sent)':<58}"
          f"{statistics.median(naive):>9.1f}{max(naive):>9.1f}")  # fmt: skip
    print(f"{'timelapse: frame taken (agent clock)':<58}"
          f"{taken['median']:>9.1f}{taken['max']:>9.1f}")  # fmt: skip
    print(f"{'timelapse: frame on disk (file time)':<58}"
          f"{statistics.median(on_disk):>9.1f}{max(on_disk):>9.1f}")  # fmt: skip
    print("target: jitter under 50 ms")
    print(f"\nretention over {args.files:,} captures")
    naive_pass = costs[-1][1]
    print(f"{'step':<46}{'ms':>10}{'ratio to naive':>16}")
    for name, ms in costs:
        print(f"{name:<46}{ms:>10.2f}{ms / naive_pass:>16.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

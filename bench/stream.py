"""Stream benchmark: readiness, glass-to-glass latency, control latency, agent CPU.

Real Mosquitto, MediaMTX, ffmpeg and agent on loopback; frames are read back by a real ffmpeg
decoder (tests.support.RtspReader) and timed by the wall clock the pipeline burns into them.
Each figure stands beside a baseline measured in the same run:

- stream ready: `camera-agent run` until MediaMTX reports the path online, against a bare ffmpeg
  pusher started by hand (what the agent's own start-up costs on top);
- glass-to-glass at 1280x720 30 fps: the agent's pipeline against the same source pushed by an
  ffmpeg with libx264's defaults (what the latency tuning buys);
- control latency: brightness command to the first decoded frame showing it, against the
  glass-to-glass latency (a change cannot show sooner than a frame travels);
- CPU while streaming: the agent process against its ffmpeg pusher.

Usage: `scripts/bench stream [--runs N] [--seconds S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devstack import Broker, MediaServer, terminate_group

from agent.stream.mediamtx import MediaMtxApi
from bench.control_plane import process_usage, quantile
from bench.stack import local_stack
from tests.support import AgentProcess, Frame, Probe, RtspReader

WIDTH, HEIGHT, FPS = 1280, 720, 30


def publisher_online(media: MediaServer) -> bool:
    """MediaMTX reports a publisher on the viewers' path. (Not an RTSP DESCRIBE: the path is
    alwaysAvailable, so it answers 200 with its placeholder even when no camera publishes.)"""
    api = MediaMtxApi(media.api_url, "agent", media.credentials.agent)
    status = asyncio.run(api.path(media.path))
    return status is not None and status.online


def time_until(ready: Callable[[], bool], timeout: float = 20) -> float:
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(0.01)
    return time.monotonic() - start


def stream_ready(broker: Broker, media: MediaServer, work: Path, runs: int) -> list[float]:
    samples = []
    for run in range(runs):
        agent = AgentProcess(broker, work / f"ready-{run}", media=media)
        started = time.monotonic()
        agent.start()
        time_until(lambda: publisher_online(media))
        samples.append(time.monotonic() - started)
        agent.stop()
        time_until(lambda: not publisher_online(media))
    return samples


def bare_pusher(media: MediaServer, tuned: bool) -> subprocess.Popen[bytes]:
    """The same source and stamp filter as the agent's, pushed by a hand-started ffmpeg."""
    from agent.camera.testsrc import TestPatternCamera  # noqa: PLC0415
    from agent.stream.ffmpeg_args import pattern_pusher_args  # noqa: PLC0415
    from agent.stream.target import StreamTarget  # noqa: PLC0415

    params = TestPatternCamera(WIDTH, HEIGHT, FPS).params()
    target = StreamTarget(media.rtsp_url, "agent", media.credentials.agent)
    argv = pattern_pusher_args(
        params, "ipc:///tmp/bench-unused.zmq", target.url_with_credentials(), "/tmp/bench-still.yuv"
    )
    if not tuned:  # libx264's defaults: preset medium, lookahead, B-frames
        for flag in ("-preset", "-tune", "-profile:v"):
            i = argv.index(flag)
            del argv[i : i + 2]
    return subprocess.Popen(argv, stderr=subprocess.DEVNULL, start_new_session=True)


def bare_ready(media: MediaServer, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.monotonic()
        pusher = bare_pusher(media, tuned=True)
        time_until(lambda: publisher_online(media))
        samples.append(time.monotonic() - started)
        terminate_group(pusher)
        time_until(lambda: not publisher_online(media))
    return samples


def latencies(frames: list[Frame]) -> list[float]:
    return [f.arrived * 1000 - f.stamp_ms for f in frames]


def read_for(media: MediaServer, seconds: float) -> list[Frame]:
    reader = RtspReader(media.viewer_url(), WIDTH, HEIGHT)
    try:
        reader.wait_for(lambda f: True, timeout=15)
        time.sleep(seconds)  # collecting frames for a fixed span is the measurement
        return reader.snapshot()[FPS:]  # the first second includes the decoder's start
    finally:
        reader.close()


def control_latency(media: MediaServer, operator: Probe, runs: int) -> list[float]:
    reader = RtspReader(media.viewer_url(), WIDTH, HEIGHT)
    samples = []
    try:
        base = reader.wait_for(lambda f: True, timeout=15).luma
        for run in range(runs):
            bright = run % 2 == 0
            sent = time.time()
            operator.publish(
                "camera/control/settings", f"brightness {0.5 if bright else 0.0}", wait=False
            )

            def shows_it(f: Frame, bright: bool = bright, sent: float = sent) -> bool:
                changed = f.luma > base + 40 if bright else f.luma < base + 10
                return f.arrived > sent and changed

            frame = reader.wait_for(shows_it)
            samples.append((frame.arrived - sent) * 1000)
            time.sleep(0.2)  # let the picture settle before the next change
    finally:
        reader.close()
    return samples


def measure_agent(
    broker: Broker, media: MediaServer, root: Path, seconds: float, control_runs: int
) -> tuple[list[float], float, float, list[float]]:
    """Glass-to-glass, CPU % of agent and pusher, and control latency of a running agent."""
    operator = Probe(broker, "operator")
    operator.subscribe("camera/#")
    agent = AgentProcess(broker, root / "agent", media=media)
    agent.start()
    try:
        operator.wait_event(event="stream.online", timeout=20)
        assert agent.process is not None
        pid = agent.process.pid
        pusher_pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        cpu_agent0, _ = process_usage(pid)
        cpu_ffmpeg0, _ = process_usage(pusher_pid)
        t0 = time.monotonic()
        g2g = latencies(read_for(media, seconds))
        span = time.monotonic() - t0
        cpu_agent = 100 * (process_usage(pid)[0] - cpu_agent0) / span
        cpu_ffmpeg = 100 * (process_usage(pusher_pid)[0] - cpu_ffmpeg0) / span
        controls = control_latency(media, operator, control_runs)
    finally:
        agent.stop()
        operator.close()
    return g2g, cpu_agent, cpu_ffmpeg, controls


def row(name: str, values: list[float], base: float | None, unit: str = "ms") -> None:
    median = statistics.median(values)
    ratio = f"{median / base:.2f}" if base else "1.00"
    print(f"{name:<44}{median:>10.1f}{quantile(values, 0.95):>10.1f}  {unit:<4}{ratio:>8}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with local_stack() as stack:
        broker, media, root = stack.broker, stack.media, stack.root
        ready_bare = bare_ready(media, args.runs)
        ready_agent = stream_ready(broker, media, root, args.runs)

        pusher = bare_pusher(media, tuned=False)
        time_until(lambda: publisher_online(media))
        g2g_default = latencies(read_for(media, args.seconds))
        terminate_group(pusher)
        time_until(lambda: not publisher_online(media))

        g2g_agent, cpu_agent, cpu_ffmpeg, controls = measure_agent(
            broker, media, root, args.seconds, max(10, args.runs * 4)
        )

    print(f"\nstream at {WIDTH}x{HEIGHT} {FPS} fps on loopback ({os.cpu_count()} cores)")
    print(f"{'measure':<44}{'median':>10}{'p95':>10}  {'unit':<4}{'ratio':>8}")
    row("stream ready: bare ffmpeg pusher (baseline)", [s * 1000 for s in ready_bare], None)
    row("stream ready: camera-agent run", [s * 1000 for s in ready_agent],
        statistics.median(ready_bare) * 1000)  # fmt: skip
    row("glass-to-glass: x264 defaults (baseline)", g2g_default, None)
    row("glass-to-glass: agent pipeline", g2g_agent, statistics.median(g2g_default))
    row("control latency: brightness to frame", controls, statistics.median(g2g_agent))
    print("  (ratio of control latency: against the agent's glass-to-glass median)")
    print(f"\nCPU while streaming, % of one core: agent {cpu_agent:.2f}, ffmpeg pusher "
          f"{cpu_ffmpeg:.1f} (ratio {cpu_agent / cpu_ffmpeg:.3f})")  # fmt: skip
    print("targets: ready < 1500 ms, glass-to-glass median < 150 ms, control median < 200 ms,"
          " agent CPU < 2 %")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

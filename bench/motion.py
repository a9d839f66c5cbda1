"""Motion detection benchmark: what it costs, how soon it speaks, and how often it is wrong.

Real Mosquitto, MediaMTX, ffmpeg and agent on loopback, the test pattern at 1280x720 30 fps:

- CPU: one analysis of a grey frame (320x180, as the pipeline writes it) by the agent's
  detector, against the naive detector people write first (a full-resolution frame difference
  in Python: NumPy on the 1280x720 luma, and pure Python over it), as % of one core at 5 fps;
  and the running agent's own CPU with detection on against off (same pipeline), and the
  pipeline's grey output (ffmpeg with it against without it);
- latency: from the first frame that shows the moving box (read by a player, timed by the wall
  clock burned into it) to `motion.started` arriving at a subscriber; median and p95;
- false events: `motion.started` on the `still` scene (sensor noise, a running clock), per hour.

Usage: `scripts/bench motion [--seconds 30] [--cycles 20] [--still-minutes 10]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from devstack import Broker, MediaServer, terminate_group

from agent.motion.detector import DetectorSettings, MotionDetector
from agent.stream.ffmpeg_args import TestPatternParams, pattern_pusher_args
from agent.stream.target import StreamTarget
from bench.control_plane import process_usage, quantile
from bench.stack import local_stack
from tests.support import AgentProcess, Frame, Probe, RtspReader, settle

WIDTH, HEIGHT, FPS = 1280, 720, 30
GREY = (320, 180)
RATE = 5.0
SETTINGS = "camera/control/settings"


def per_frame_s(analyse: Callable[[], object], seconds: float = 3.0) -> float:
    """Mean seconds per call, over about `seconds`."""
    calls, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        analyse()
        calls += 1
    return (time.process_time() - start) / calls


def detector_costs() -> dict[str, float]:
    """% of one core at RATE frames a second: ours, naive NumPy, naive pure Python."""
    rng = np.random.default_rng(1)
    small = [rng.integers(0, 255, (GREY[1], GREY[0]), dtype=np.uint8) for _ in range(8)]
    full = [rng.integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8) for _ in range(2)]
    detector = MotionDetector(DetectorSettings(fps=RATE))
    frames = iter(small * 10_000_000)
    for _ in range(12):  # past the calibration
        detector.analyse(next(frames))
    ours = per_frame_s(lambda: detector.analyse(next(frames)))

    def naive_numpy() -> float:
        diff = np.abs(full[0].astype(np.int16) - full[1].astype(np.int16))
        return float((diff > 25).mean())

    previous, current = full[0].tobytes(), full[1].tobytes()

    def naive_python() -> float:
        changed = sum(1 for a, b in zip(previous, current, strict=True) if abs(a - b) > 25)
        return changed / len(current)

    return {
        "ours": 100 * RATE * ours,
        "numpy": 100 * RATE * per_frame_s(naive_numpy),
        "python": 100 * RATE * per_frame_s(naive_python, seconds=2.0),
    }


def agent_env(enabled: bool) -> dict[str, str]:
    return {
        "CAMERA_AGENT_CAMERA__WIDTH": str(WIDTH), "CAMERA_AGENT_CAMERA__HEIGHT": str(HEIGHT),
        "CAMERA_AGENT_CAMERA__FPS": str(FPS), "CAMERA_AGENT_MOTION__ENABLED": str(enabled).lower(),
        "CAMERA_AGENT_MOTION__OFF_DELAY_S": "1",
    }  # fmt: skip


def still_agent(broker: Broker, media: MediaServer, work: Path, enabled: bool) -> AgentProcess:
    (work / "state").mkdir(parents=True)
    (work / "state" / "controls.json").write_text(json.dumps({"pattern": "still"}))
    return AgentProcess(broker, work, media=media, env=agent_env(enabled))


def started(agent: AgentProcess, operator: Probe) -> None:
    agent.start()
    operator.wait_for(lambda m: m.topic == "camera/availability" and m.payload == b"online")
    operator.wait_event(event="stream.online", timeout=30)


def agent_cpu(broker: Broker, media: MediaServer, work: Path, seconds: float) -> dict[bool, float]:
    """The agent process's CPU (% of one core) on the still scene, detection on and off."""
    operator = Probe(broker, "operator")
    operator.subscribe("camera/#")
    usage = {}
    try:
        for enabled in (False, True):
            agent = still_agent(broker, media, work / f"cpu-{enabled}", enabled)
            started(agent, operator)
            try:
                time.sleep(5)  # past start-up and the detector's calibration
                assert agent.process is not None
                before, began = process_usage(agent.process.pid)[0], time.monotonic()
                time.sleep(seconds)  # the window measured
                usage[enabled] = (
                    100
                    * (process_usage(agent.process.pid)[0] - before)
                    / (time.monotonic() - began)
                )
            finally:
                agent.stop()
    finally:
        operator.close()
    return usage


def pipeline_cpu(media: MediaServer, work: Path, seconds: float) -> dict[bool, float]:
    """The test-pattern pusher's CPU with the grey output and without it."""
    params = TestPatternParams(WIDTH, HEIGHT, FPS, 2000, 1.0, "still", False, False, 0.0, 1.0,
                               1.0, 1.0, 0.0, motion_fps=RATE)  # fmt: skip
    usage = {}
    for grey in (False, True):
        run = work / f"pipeline-{grey}"
        run.mkdir()
        motion = (str(run / "motion.gray"), *GREY) if grey else None
        url = StreamTarget(media.rtsp_url, "agent", media.credentials.agent).url_with_credentials()
        argv = pattern_pusher_args(params, f"ipc://{run / 'zmq'}", url, str(run / "still.yuv"),
                                   motion=motion)  # fmt: skip
        log = (run / "ffmpeg.log").open("wb")
        pusher = subprocess.Popen(argv, start_new_session=True, stderr=log)
        try:
            time.sleep(3)  # past the encoder's start
            if pusher.poll() is not None:
                raise RuntimeError(f"the pusher ended: {(run / 'ffmpeg.log').read_text()[-500:]}")
            before, began = process_usage(pusher.pid)[0], time.monotonic()
            time.sleep(seconds)  # the window measured
            usage[grey] = 100 * (process_usage(pusher.pid)[0] - before) / (time.monotonic() - began)
        finally:
            terminate_group(pusher)
            log.close()
    return usage


def box_in(frame: Frame) -> bool:
    run = best = 0
    for value in frame.middle_row:
        run = run + 1 if value > 220 else 0
        best = max(best, run)
    return best >= HEIGHT // 6 - 4


def latencies(
    broker: Broker, media: MediaServer, work: Path, cycles: int
) -> tuple[list[float], list[float]]:
    """ms from the first frame showing the box to motion.started at a subscriber; and of
    that, ms from the same frame to the grey frame the detector saw it in (the event's time)."""
    operator = Probe(broker, "operator")
    operator.subscribe("camera/#")
    agent = still_agent(broker, media, work / "latency", True)
    started(agent, operator)
    player = RtspReader(media.viewer_url(), WIDTH, HEIGHT)
    samples, in_pipeline = [], []
    try:
        operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["motion"]["calibrating"] is False,
            timeout=20,
        )
        for cycle in range(cycles):
            seen = len(player.snapshot())
            operator.publish(SETTINGS, json.dumps({"id": f"on-{cycle}",
                                                   "set": {"moving_box": True}}))  # fmt: skip
            event = operator.wait_for(
                lambda m: m.topic == "camera/status" and m.json()["event"] == "motion.started",
                timeout=10,
            )
            first = next(f for f in player.snapshot()[seen:] if box_in(f))
            samples.append(1000 * (event.arrived - first.stamp_ms / 1000))
            at = dt.datetime.fromisoformat(event.json()["data"]["time"].replace("Z", "+00:00"))
            in_pipeline.append(1000 * at.timestamp() - first.stamp_ms)
            operator.publish(SETTINGS, json.dumps({"id": f"off-{cycle}",
                                                   "set": {"moving_box": False}}))  # fmt: skip
            operator.wait_event(event="motion.ended", timeout=10)
    finally:
        player.close()
        agent.stop()
        operator.close()
    return samples, in_pipeline


def false_events(broker: Broker, media: MediaServer, work: Path, minutes: float) -> int:
    operator = Probe(broker, "operator")
    operator.subscribe("camera/#")
    agent = still_agent(broker, media, work / "still", True)
    try:
        started(agent, operator)
        heard = settle(operator, minutes * 60)  # the still scene, listened to
    finally:
        agent.stop()
        operator.close()
    return sum(
        1 for m in heard
        if m.topic == "camera/status" and m.json()["event"] == "motion.started"
    )  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU windows")
    parser.add_argument("--cycles", type=int, default=20, help="box on/off cycles timed")
    parser.add_argument("--still-minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    costs = detector_costs()
    with local_stack() as stack:
        broker, media, root = stack.broker, stack.media, stack.root
        agent = agent_cpu(broker, media, root, args.seconds)
        pipeline = pipeline_cpu(media, root, args.seconds)
        waits, in_pipeline = latencies(broker, media, root, args.cycles)
        false = false_events(broker, media, root, args.still_minutes)

    print(f"\nmotion detection at {RATE:g} fps, {WIDTH}x{HEIGHT} {FPS} fps test pattern"
          f" ({os.cpu_count()} cores)")  # fmt: skip
    print(f"{'CPU, % of one core':<52}{'value':>9}{'ratio':>9}")
    print(f"{'naive: pure Python frame difference, full res':<52}{costs['python']:>9.1f}"
          f"{'':>9}")  # fmt: skip
    print(f"{'naive: NumPy frame difference, full res':<52}{costs['numpy']:>9.2f}"
          f"{costs['numpy'] / costs['python']:>9.4f}")  # fmt: skip
    print(f"{'ours: detector on the 320x180 grey frame':<52}{costs['ours']:>9.2f}"
          f"{costs['ours'] / costs['python']:>9.4f}")  # fmt: skip
    added = agent[True] - agent[False]
    print(f"{'agent process, detection off':<52}{agent[False]:>9.2f}")
    print(f"{'agent process, detection on':<52}{agent[True]:>9.2f}"
          f"{agent[True] / agent[False]:>9.2f}")  # fmt: skip
    print(f"{'ffmpeg pusher without the grey output':<52}{pipeline[False]:>9.1f}")
    print(f"{'ffmpeg pusher with it':<52}{pipeline[True]:>9.1f}"
          f"{pipeline[True] / pipeline[False]:>9.3f}")  # fmt: skip
    grey = pipeline[True] - pipeline[False]
    print(f"{'added by detection (agent + grey output)':<52}{added + grey:>9.2f}"
          "   (target < 3)")  # fmt: skip
    print(f"\n{'latency, first moving frame to motion.started':<52}{'median':>9}{'p95':>9}")
    print(f"{f'ms, {len(waits)} events':<52}{statistics.median(waits):>9.0f}"
          f"{quantile(waits, 0.95):>9.0f}   (target < 400)")  # fmt: skip
    print(f"{'  of which: to the capture of the frame it was seen in':<52}"
          f"{statistics.median(in_pipeline):>9.0f}{quantile(in_pipeline, 0.95):>9.0f}")  # fmt: skip
    hours = args.still_minutes / 60
    print(f"\nfalse events on the still scene: {false} in {args.still_minutes:g} min"
          f" = {false / hours:.1f} per hour (target 0)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

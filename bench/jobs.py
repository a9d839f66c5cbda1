"""Jobs benchmark: picture latency and recording CPU, each against the original system's way.

- picture: command on MQTT to the `job.succeeded` event, at 1280x720 and 1920x1080, against the
  original approach of an ffmpeg that opens the RTSP stream and grabs one frame (which waits for
  a keyframe), timed from spawn to its JPEG on disk;
- JPEG encoding alone, of one raw frame at 1280x720, 1920x1080 and the Pi HQ camera's 4056x3040:
  in process (libjpeg-turbo, what a picture uses) against an ffmpeg process (what it used);
- record: CPU seconds per recorded second of the agent and MediaMTX together while a recording
  runs (stream copy from the recorder), against the original second ffmpeg re-encoding the
  RTSP stream with libx264.

Usage: `scripts/bench jobs [--pictures N] [--record-seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from devstack import MediaServer, terminate_group

from bench.control_plane import process_usage, quantile
from bench.stack import local_stack
from tests.support import AgentProcess, Probe


def picture_latencies(operator: Probe, count: int) -> list[float]:
    samples = []
    for i in range(count + 3):
        sent = time.perf_counter()
        operator.publish(
            "camera/control/action", json.dumps({"id": f"p{i}", "action": "picture"}), wait=False
        )
        job = operator.wait_event(id=f"p{i}", event="job.queued")["job"]
        operator.wait_event(job=job, event="job.succeeded", timeout=10)
        if i >= 3:  # warm-up: first encoder spawns fill the page cache
            samples.append((time.perf_counter() - sent) * 1000)
        operator.history.clear()
    return samples


def original_picture(media: MediaServer, work: Path, count: int) -> list[float]:
    samples = []
    for i in range(count):
        out = work / f"original-{i}.jpg"
        started = time.perf_counter()
        subprocess.run(
            ["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", media.viewer_url(),
             "-frames:v", "1", "-q:v", "2", "-y", str(out)],
            check=True, timeout=30,
        )  # fmt: skip
        samples.append((time.perf_counter() - started) * 1000)
    return samples


ENCODE_SIZES = ((1280, 720), (1920, 1080), (4056, 3040))


def encode_latencies(
    work: Path, width: int, height: int, count: int
) -> tuple[list[float], list[float]]:
    """(in process, ffmpeg process) milliseconds to encode one raw frame of this size."""
    from agent.jobs.jpeg import encode, read_yuv420p  # noqa: PLC0415
    from agent.stream.ffmpeg_args import still_to_jpeg_args  # noqa: PLC0415

    raw = work / f"frame-{width}x{height}.yuv"
    # Noise: the hardest content for JPEG, so neither side gets an easy frame.
    raw.write_bytes(os.urandom(width * height * 3 // 2))
    ours, theirs = [], []
    for i in range(count + 2):
        started = time.perf_counter()
        encode(read_yuv420p(raw, width, height), 90)
        elapsed = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        argv = still_to_jpeg_args(str(raw), width, height, "yuv420p", 90, str(work / "f.jpg"))
        subprocess.run(argv, check=True, timeout=60)
        if i >= 2:
            ours.append(elapsed)
            theirs.append((time.perf_counter() - started) * 1000)
    return ours, theirs


def cpu_seconds(pids: list[int]) -> float:
    return sum(process_usage(pid)[0] for pid in pids)


def record_cpu(operator: Probe, pids: list[int], seconds: float) -> float:
    before = cpu_seconds(pids)
    operator.publish(
        "camera/control/action", json.dumps({"id": "rec", "action": "record", "duration": seconds})
    )
    job = operator.wait_event(id="rec", event="job.queued")["job"]
    done = operator.wait_event(job=job, event="job.succeeded", timeout=seconds + 30)
    recorded = float(done["data"]["result"]["duration_s"])
    return (cpu_seconds(pids) - before) / recorded


def original_record_cpu(media: MediaServer, work: Path, seconds: float) -> float:
    recorder = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", media.viewer_url(),
         "-t", str(seconds), "-c:v", "libx264", "-y", str(work / "original.mp4")],
        start_new_session=True,
    )  # fmt: skip
    cpu = 0.0
    while recorder.poll() is None:
        cpu = process_usage(recorder.pid)[0]  # the last reading before it exits
        time.sleep(0.1)
    terminate_group(recorder)
    return cpu / seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pictures", type=int, default=30)
    parser.add_argument("--record-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with local_stack() as stack:
        broker, media, root = stack.broker, stack.media, stack.root
        operator = Probe(broker, "operator")
        operator.subscribe("camera/#")
        agent = AgentProcess(broker, root / "agent", media=media)
        agent.start()
        try:
            operator.wait_event(event="stream.online", timeout=20)
            time.sleep(1)  # a second of recorder history, as a running camera has
            ours = picture_latencies(operator, args.pictures)
            theirs = original_picture(media, root, max(5, args.pictures // 5))
            assert agent.process is not None
            assert media.process is not None
            pids = [agent.process.pid, media.process.pid]
            record_ours = record_cpu(operator, pids, args.record_seconds)
            record_theirs = original_record_cpu(media, root, args.record_seconds)
        finally:
            agent.stop()
        # The same at 1920x1080: a second agent with the larger stream.
        env = {"CAMERA_AGENT_CAMERA__WIDTH": "1920", "CAMERA_AGENT_CAMERA__HEIGHT": "1080"}
        large = AgentProcess(broker, root / "agent-1080", media=media, env=env)
        large.start()
        try:
            operator.wait_event(event="stream.online", timeout=20)
            ours_1080 = picture_latencies(operator, args.pictures)
        finally:
            large.stop()
            operator.close()
        encodes = {
            size: encode_latencies(root, *size, max(5, args.pictures // 2)) for size in ENCODE_SIZES
        }

    base = statistics.median(theirs)
    print("\npicture: command to a JPEG on disk")
    print(f"{'approach':<50}{'median ms':>10}{'p95 ms':>10}{'ratio':>8}")
    for name, samples in (
        ("original: ffmpeg grabs a frame over RTSP, 1280x720", theirs),
        ("agent: MQTT command to job.succeeded, 1280x720", ours),
        ("agent: MQTT command to job.succeeded, 1920x1080", ours_1080),
    ):
        median = statistics.median(samples)
        print(f"{name:<50}{median:>10.1f}{quantile(samples, 0.95):>10.1f}{median / base:>8.3f}")
    print("target: agent median < 30 ms at 1280x720")
    print("\nJPEG encoding of one raw frame (quality 90, noise)")
    print(f"{'size':<12}{'ffmpeg process ms':>18}{'in process ms':>15}{'ratio':>8}")
    for (width, height), (inproc, process) in encodes.items():
        median_in, median_proc = statistics.median(inproc), statistics.median(process)
        ratio = median_in / median_proc
        print(f"{width}x{height:<7}{median_proc:>18.1f}{median_in:>15.1f}{ratio:>8.3f}")
    print(f"\nrecording, CPU seconds per recorded second ({args.record_seconds:g} s)")
    for name, cpu in (
        ("original: second ffmpeg re-encoding with libx264", record_theirs),
        ("agent + MediaMTX: stream copy from the recorder", record_ours),
    ):
        print(f"{name:<52}{cpu:>8.3f}{cpu / record_theirs:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

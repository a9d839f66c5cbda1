"""Jobs through the real broker, MediaMTX and ffmpeg: picture, record, stop, trim."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import simplejpeg
from devstack import MediaServer

from agent.stream.ffmpeg_args import STAMP_HEIGHT, decode_stamp
from agent.stream.mediamtx import MediaMtxPlayback
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe, wait_until

ACTION = "camera/control/action"
FRAME_MS = 1000 / 30


def captures_dir(agent: AgentProcess) -> Path:
    return agent.work_dir / "captures"


def gray_frames(path: Path, width: int, height: int) -> list[bytes]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    size = width * height
    return [raw[i : i + size] for i in range(0, len(raw) - size + 1, size)]


def stamp_of(frame: bytes, width: int, near_ms: float) -> int:
    return decode_stamp(frame[width * (STAMP_HEIGHT // 2) :], width, int(near_ms))


def streaming_agent_pusher(operator: Probe) -> int:
    """The pusher's pid from the newest retained state a fresh subscriber gets."""
    operator.subscribe("camera/state")  # resubscribing redelivers the retained state
    state = operator.wait_for(lambda m: m.topic == "camera/state" and m.retain, what="state")
    pid: int = state.json()["stream"]["pid"]
    return pid


def run_job(operator: Probe, command: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
    """Send an action; return its job's terminal event (after checking the queued answer)."""
    operator.publish(ACTION, json.dumps(command))
    queued = operator.wait_event(id=command["id"], event="job.queued")
    assert queued["ok"] is True and queued["job"]
    terminal: dict[str, Any] = operator.wait_for(
        lambda m: (
            m.topic == "camera/status"
            and m.json().get("job") == queued["job"]
            and m.json()["event"] in ("job.succeeded", "job.failed", "job.cancelled")
        ),
        timeout=timeout,
        what=f"end of job {queued['job']}",
    ).json()
    assert terminal["id"] == command["id"]  # every job event carries the request id
    return terminal


def test_picture_is_the_current_frame_at_full_resolution(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    pid_before = streaming_agent_pusher(operator)
    sent = time.time() * 1000
    done = run_job(operator, {"id": "p1", "action": "picture", "quality": 95, "sidecar": True})
    assert done["ok"] is True, done.get("error")
    result = done["data"]["result"]
    path = captures_dir(streaming_agent) / result["path"]
    assert path.suffix == ".jpg" and path.parent == captures_dir(streaming_agent)
    assert result["size"] == path.stat().st_size
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["resolution"] == "1280x720"
    (frame,) = gray_frames(path, 1280, 720)
    stamp = stamp_of(frame, 1280, sent)
    assert abs(stamp - sent) < 2 * FRAME_MS + 15, stamp - sent
    sidecar = json.loads((captures_dir(streaming_agent) / result["sidecar"]).read_text())
    assert sidecar["controls"]["brightness"] == 0.0
    assert sidecar["picture"] == result["path"]
    # The stream kept running: no outage, the same pusher.
    events = [m.json()["event"] for m in operator.history if m.topic == "camera/status"]
    assert "stream.down" not in events
    assert streaming_agent_pusher(operator) == pid_before


def test_pictures_asked_for_at_once_each_get_a_file_of_their_own(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    """A burst (what the broker hands over after an outage), as many as `jobs.picture_limit`
    lets run at once, during a restart: they wait for the new pipeline's first frame (they
    failed with "the stream is online (`stream start` first)") and go on in the same
    millisecond; each is its own file (two took one name, and one's rename took the other's
    temporary file: "No such file or directory", found by scripts/chaos)."""
    ids = [f"burst-{n}" for n in range(4)]
    # Right after a restart, so that they wait for the new pipeline's first frame together.
    operator.publish(ACTION, json.dumps({"id": "r", "action": "stream", "op": "restart"}))
    for command_id in ids:
        operator.publish(ACTION, json.dumps({"id": command_id, "action": "picture"}), wait=False)
    assert operator.wait_event(id="r", timeout=20)["ok"] is True

    def end_of(command_id: str) -> dict[str, Any]:
        body: dict[str, Any] = operator.wait_for(
            lambda m: m.topic == "camera/status" and m.json().get("id") == command_id
            and m.json()["event"] in ("job.succeeded", "job.failed"),
            timeout=30, what=f"the end of {command_id}",
        ).json()  # fmt: skip
        return body

    ends = [end_of(command_id) for command_id in ids]
    assert [e["event"] for e in ends] == ["job.succeeded"] * len(ids), [e["message"] for e in ends]
    paths = [e["data"]["result"]["path"] for e in ends]
    assert len(set(paths)) == len(ids), paths
    for end in ends:
        result = end["data"]["result"]
        data = (captures_dir(streaming_agent) / result["path"]).read_bytes()
        assert data[:2] == b"\xff\xd8" and hashlib.sha256(data).hexdigest() == result["sha256"]
    assert not list(captures_dir(streaming_agent).glob(".*"))  # no temporary file left


def test_job_transitions_are_reported_and_listed_in_state(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    done = run_job(operator, {"id": "p2", "action": "picture"})
    job_id = done["job"]
    events = [
        m.json()["event"]
        for m in operator.history
        if m.topic == "camera/status" and m.json().get("job") == job_id
    ]
    assert "job.running" in events
    state = operator.wait_for(
        lambda m: (
            m.topic == "camera/state"
            and any(j["id"] == job_id and j["state"] == "succeeded" for j in m.json()["jobs"])
        ),
        what="finished job in state",
    ).json()
    listed = next(j for j in state["jobs"] if j["id"] == job_id)
    assert listed["kind"] == "picture" and listed["request_id"] == "p2"
    assert listed["result"]["path"] == done["data"]["result"]["path"]


def test_picture_while_not_streaming_fails_clearly(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, "stream stop")
    operator.wait_event(event="stream.stopped")
    done = run_job(operator, {"id": "p3", "action": "picture"})
    assert done["ok"] is False
    assert done["error"]["code"] == "not_available"
    assert "stream start" in done["error"]["detail"]
    assert list(captures_dir(streaming_agent).iterdir()) == []


def test_stop_without_a_recording_is_answered(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, "stop")
    answer = operator.wait_event(ok=False)
    assert answer["error"]["code"] == "not_found"
    operator.publish(ACTION, "stop nosuchjob")
    assert operator.wait_event(ok=False)["error"]["code"] == "not_found"


def probe(path_or_url: str) -> dict[str, Any]:
    rtsp = ["-rtsp_transport", "tcp"] if path_or_url.startswith("rtsp") else []
    out = subprocess.run(
        ["ffprobe", "-v", "error", *rtsp, "-select_streams", "v:0", "-of", "json",
         "-show_entries", "stream=codec_name,profile,level,width,height,pix_fmt:format=duration",
         path_or_url],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    body: dict[str, Any] = json.loads(out)
    return body


def assert_clean_timestamps(path: Path) -> None:
    """What strict players and editors need: decode timestamps strictly increasing from the
    first sample, no sample of zero duration, and `ffmpeg -c copy` remuxes without a warning."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json",
         "-show_entries", "packet=dts_time,duration_time", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    packets = json.loads(out)["packets"]
    dts = [float(p["dts_time"]) for p in packets]
    assert all(b > a for a, b in itertools.pairwise(dts)), "decode timestamps repeat"
    assert all(float(p.get("duration_time") or 0) > 0 for p in packets), "a zero-duration sample"
    remux = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "warning", "-i", str(path), "-c", "copy",
         "-f", "mp4", "-y", str(path.with_suffix(".remux.mp4"))],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    path.with_suffix(".remux.mp4").unlink()
    assert remux.stderr == "", remux.stderr


def first_frames(path: Path, count: int) -> list[dict[str, Any]]:
    """The first samples in decode order. A recording's lead-in (from the keyframe before the
    asked start) is kept but hidden by an edit list, so these are read as packets: the file
    decodes from its first sample on, and a player shows it from the edit point."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json",
         "-show_entries", "packet=flags", "-read_intervals", f"%+#{count}", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [{"key_frame": int("K" in p["flags"])} for p in json.loads(out)["packets"]]


def test_record_is_the_cameras_h264_from_a_keyframe_with_its_duration(
    streaming_agent: AgentProcess, operator: Probe, media: MediaServer
) -> None:
    done = run_job(operator, {"id": "r3", "action": "record", "duration": 3}, timeout=30)
    assert done["ok"] is True, done.get("error")
    result = done["data"]["result"]
    path = captures_dir(streaming_agent) / result["path"]
    info = probe(str(path))
    assert abs(float(info["format"]["duration"]) - 3) <= 1.0  # within one GOP (1 s)
    assert abs(result["duration_s"] - 3) <= 1.0
    assert first_frames(path, 1)[0]["key_frame"] == 1
    assert_clean_timestamps(path)
    # No re-encode: the same codec parameters as the stream viewers get.
    live = probe(media.viewer_url())["streams"][0]
    recorded = info["streams"][0]
    for key in ("codec_name", "profile", "level", "width", "height", "pix_fmt"):
        assert recorded[key] == live[key], key
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    progress = [
        m.json() for m in operator.history
        if m.topic == "camera/status" and m.json()["event"] == "job.progress"
    ]  # fmt: skip
    assert progress and progress[-1]["data"]["progress"]["elapsed_s"] >= 2


def recorded_seconds(media: MediaServer) -> float:
    """How much of the stream MediaMTX's recorder holds now (its playback server's list)."""
    playback = MediaMtxPlayback(media.playback_url, "agent", media.credentials.agent)
    return sum(end - start for start, end in asyncio.run(playback.spans("cam_recorded")))


def test_preroll_contains_frames_from_before_the_command(
    streaming_agent: AgentProcess, media: MediaServer, operator: Probe
) -> None:
    # The recorder must hold more than the pre-roll asked for.
    wait_until(lambda: recorded_seconds(media) >= 2.5, timeout=20, what="2.5 s recorded")
    sent = time.time() * 1000
    done = run_job(
        operator, {"id": "pre", "action": "record", "duration": 1, "preroll": 2}, timeout=30
    )
    assert done["ok"] is True, done.get("error")
    path = captures_dir(streaming_agent) / done["data"]["result"]["path"]
    # Named after the start of the span, the pre-roll included, not after the moment it ended.
    named = dt.datetime.strptime(path.name, "record-%Y%m%dT%H%M%S.%fZ.mp4").replace(tzinfo=dt.UTC)
    assert abs(named.timestamp() * 1000 - (sent - 2000)) < 500, (path.name, sent)
    frames = gray_frames(path, 1280, 720)
    first = stamp_of(frames[0], 1280, sent)
    assert first < sent - 1500, sent - first  # about two seconds before the command
    assert abs(float(probe(str(path))["format"]["duration"]) - 3) <= 1.0
    assert_clean_timestamps(path)


def test_record_until_stop_then_stop_by_id_and_busy(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, json.dumps({"id": "open", "action": "record"}))
    job = operator.wait_event(id="open", event="job.queued")["job"]
    operator.publish(ACTION, "record 5")
    busy = operator.wait_event(ok=False)
    assert busy["error"]["code"] == "busy"
    assert job in busy["error"]["detail"]
    operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json()["event"] == "job.progress"
        and m.json()["data"]["progress"]["elapsed_s"] >= 2,
        what="two seconds recorded",
    )  # fmt: skip
    operator.publish(ACTION, "stop")  # the original system's plain stop
    assert operator.wait_event(event="job.stopping")["job"] == job
    done = operator.wait_event(job=job, event="job.succeeded", timeout=20)
    assert 1.5 <= done["data"]["result"]["duration_s"] <= 4.5
    assert_clean_timestamps(captures_dir(streaming_agent) / done["data"]["result"]["path"])

    operator.publish(ACTION, json.dumps({"id": "two", "action": "record", "duration": 60}))
    second = operator.wait_event(id="two", event="job.queued")["job"]
    operator.wait_event(job=second, event="job.progress")
    operator.publish(ACTION, f"stop {second}")
    finished = operator.wait_event(job=second, event="job.succeeded", timeout=20)
    assert finished["data"]["result"]["duration_s"] < 10
    assert_clean_timestamps(captures_dir(streaming_agent) / finished["data"]["result"]["path"])


def test_stop_is_answered_before_a_restart_class_change_sent_just_before_it(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, json.dumps({"id": "long", "action": "record", "duration": 60}))
    job = operator.wait_event(id="long", event="job.queued")["job"]
    operator.wait_event(job=job, event="job.progress")
    # The size change restarts the pipeline (a second or more); the stop behind it must not
    # wait for that.
    operator.publish("camera/control/settings", json.dumps({"id": "resize", "set": {"width": 960}}))
    operator.publish(ACTION, json.dumps({"id": "halt", "action": "stop", "job": job}))
    assert operator.wait_event(id="resize", timeout=30)["ok"] is True
    # Messages seen while waiting for the change's answer stay in the history.
    before = [m.json()["id"] for m in operator.history if m.topic == "camera/status"]
    assert "halt" in before, "the stop was answered only after the size change"
    assert operator.wait_event(job=job, event="job.succeeded", timeout=30)["ok"] is True


@pytest.mark.parametrize("duration", [30, None])
def test_recording_survives_the_agent_being_killed(
    streaming_agent: AgentProcess, operator: Probe, duration: int | None
) -> None:
    asked = {"duration": duration} if duration is not None else {}  # None: until `stop`
    operator.publish(ACTION, json.dumps({"id": "k", "action": "record", **asked}))
    job = operator.wait_event(id="k", event="job.queued")["job"]
    operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json()["event"] == "job.progress"
        and m.json()["data"]["progress"]["elapsed_s"] >= 4,
        timeout=20, what="four seconds recorded",
    )  # fmt: skip
    streaming_agent.kill()
    streaming_agent.start()
    done = operator.wait_event(job=job, event="job.succeeded", timeout=30)
    assert done["id"] == "k"
    result = done["data"]["result"]
    assert result["recovered"] is True
    # Honest about what the agent's death cost: not "recorded 4.0 of 4.0 s".
    assert result["complete"] is False
    if duration is None:
        assert result["message"].endswith("; ended when the agent stopped, not by `stop`")
    else:
        assert 29.5 < result["requested_s"] < 31
        assert result["gaps"][-1]["cause"] == "agent down"
        assert "s lost while the agent was down" in result["message"]
        assert f"of {result['requested_s']:.1f} s" in result["message"]
    path = captures_dir(streaming_agent) / result["path"]
    assert float(probe(str(path))["format"]["duration"]) >= 3
    assert first_frames(path, 1)[0]["key_frame"] == 1
    assert_clean_timestamps(path)
    assert not list(captures_dir(streaming_agent).glob(".*partial"))


def test_full_disk_fails_the_job_and_leaves_no_corrupt_file(
    broker: Any, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    # No free-space floor: the disk fills during the write, which must fail cleanly (the floor
    # refusing jobs up front is tests/test_retention.py's).
    env = {"CAMERA_AGENT_STORAGE__MIN_FREE_BYTES": "0"}
    agent = AgentProcess(broker, tmp_path / "agent", media=media, env=env)
    captures = captures_dir(agent)
    captures.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(captures)], check=True)
    try:
        start_agent(agent, operator)
        operator.wait_event(event="stream.online", timeout=15)
        done = run_job(operator, {"id": "full", "action": "record", "duration": 3}, timeout=30)
        assert done["ok"] is False
        assert done["error"]["code"] == "io_error"
        assert "ENOSPC" in done["error"]["detail"]
        assert agent.alive()
        assert list(captures.iterdir()) == []  # no final file, no partial left behind
        # Still healthy: it answers, and takes a (small) picture.
        picture = run_job(operator, {"id": "after", "action": "picture", "quality": 10})
        assert picture["ok"] is True, picture.get("error")
    finally:
        agent.stop()
        subprocess.run(["umount", str(captures)], check=False)


FPS, GOP = 25, 25


def make_source(directory: Path, name: str = "source.mp4", profile: str = "high") -> Path:
    """A 6 s clip with a keyframe every second, written straight into the captures dir."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}",
         "-t", "6", "-c:v", "libx264", "-g", str(GOP), "-keyint_min", str(GOP),
         "-sc_threshold", "0", "-profile:v", profile, "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def closest_source_frame(frame: bytes, source_frames: list[bytes]) -> int:
    def distance(other: bytes) -> int:
        return sum(abs(a - b) for a, b in zip(frame[::53], other[::53], strict=True))

    return min(range(len(source_frames)), key=lambda i: distance(source_frames[i]))


def test_trim_fast_copies_from_the_keyframe_before_start(
    agent: AgentProcess, operator: Probe
) -> None:
    source = make_source(captures_dir(agent))
    done = run_job(
        operator,
        {"id": "t1", "action": "trim", "file": "source.mp4", "start": 1.5, "end": "00:00:04.000"},
    )
    assert done["ok"] is True, done.get("error")
    result = done["data"]["result"]
    out = captures_dir(agent) / result["path"]
    assert out.parent == source.parent and out != source
    assert result["mode"] == "fast" and result["source"] == "source.mp4"
    assert first_frames(out, 1)[0]["key_frame"] == 1
    frames = gray_frames(out, 320, 240)
    first = closest_source_frame(frames[0], gray_frames(source, 320, 240))
    assert first == 25  # the keyframe at 1.0 s, the last one before 1.5 s
    assert 75 <= len(frames) <= 78  # 1.0 s .. 4.0 s (a copy may keep a frame or two more)
    assert probe(str(out))["streams"][0]["profile"] == probe(str(source))["streams"][0]["profile"]


def test_trim_exact_starts_on_the_frame_asked(agent: AgentProcess, operator: Probe) -> None:
    source = make_source(captures_dir(agent), profile="baseline")  # like the camera's stream
    done = run_job(
        operator,
        {
            "id": "t2",
            "action": "trim",
            "file": "source.mp4",
            "start": 1.48,
            "end": 4,
            "mode": "exact",
        },
    )
    assert done["ok"] is True, done.get("error")
    out = captures_dir(agent) / done["data"]["result"]["path"]
    frames = gray_frames(out, 320, 240)
    source_frames = gray_frames(source, 320, 240)
    indices = [closest_source_frame(f, source_frames) for f in frames]
    assert indices == list(range(37, 100))  # 1.48 s to 4.0 s, every frame, in order
    assert first_frames(out, 1)[0]["key_frame"] == 1
    # Only the 13 frames before the keyframe at 2.0 s were re-encoded; the rest is the source's
    # own H.264, so it decodes to the very same pixels (a lossy re-encode never would).
    assert frames[13:] == source_frames[50:100]
    assert frames[:13] != source_frames[37:50]


@dataclass
class Shown:
    """A video as a player shows it: each frame's pixels (grey) and time."""

    frames: list[bytes]
    times: list[float]
    keyframes: list[float]

    def index(self, at: float) -> int:
        """The frame shown at `at` seconds."""
        return next(i for i, t in enumerate(self.times) if t >= at - 1e-3)


def make_recording_like(directory: Path) -> tuple[Path, Shown]:
    """What the record job writes: 30 fps in a 90 kHz timebase, its lead-in from the keyframe
    before the asked start kept behind an edit list, so keyframes fall between milliseconds
    (0.0333.., 1.0333.. s; measured on a pod recording)."""
    directory.mkdir(parents=True, exist_ok=True)
    camera = directory / "camera.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-t", "5", "-c:v", "libx264", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
         "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-video_track_timescale", "90000",
         "-y", str(camera)],
        check=True, timeout=60,
    )  # fmt: skip
    path = directory / "recording.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", "0.95", "-i", str(camera), "-c", "copy",
         "-video_track_timescale", "90000", "-y", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    camera.unlink()

    def shown_times(*options: str) -> list[float]:
        return [float(line) for line in subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", *options,
             "-show_entries", "frame=pts_time", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.split()]  # fmt: skip

    shown = Shown(gray_frames(path, 320, 240), shown_times(), shown_times("-skip_frame", "nokey"))
    assert shown.keyframes[:2] == [0.033333, 1.033333], shown.keyframes  # what this is about
    assert len(shown.frames) == len(shown.times)
    return path, shown


def test_trim_exact_of_a_recording_copies_from_the_keyframe_between_milliseconds(
    agent: AgentProcess, operator: Probe
) -> None:
    # Found in the pod: a seek to the keyframe's printed time (1.033) landed on the one before
    # (0.0333), and the copied part ran a second long.
    source, shown = make_recording_like(captures_dir(agent))
    done = run_job(operator, {"id": "t5", "action": "trim", "file": source.name,
                              "start": 0.5, "end": 2.5, "mode": "exact"})  # fmt: skip
    assert done["ok"] is True, done.get("error")
    frames = gray_frames(captures_dir(agent) / done["data"]["result"]["path"], 320, 240)
    indices = [closest_source_frame(f, shown.frames) for f in frames]
    first, keyframe, end = shown.index(0.5), shown.index(1.033333), shown.index(2.5)
    assert indices == list(range(first, end)), indices  # 2 s, every frame, in order
    assert frames[keyframe - first :] == shown.frames[keyframe:end]  # copied as is

    done = run_job(operator, {"id": "t6", "action": "trim", "file": source.name,
                              "start": 1.033, "end": 2.5})  # fmt: skip
    assert done["ok"] is True, done.get("error")
    frames = gray_frames(captures_dir(agent) / done["data"]["result"]["path"], 320, 240)
    # The keyframe a player shows at 1.033 s, not the one a second before it.
    assert closest_source_frame(frames[0], shown.frames) == keyframe
    assert end - keyframe <= len(frames) <= end - keyframe + 2


def test_trim_replace_swaps_the_file_atomically(agent: AgentProcess, operator: Probe) -> None:
    source = make_source(captures_dir(agent))
    done = run_job(
        operator,
        {"id": "t3", "action": "trim", "file": "source.mp4", "start": 2, "end": 3, "replace": True},
    )
    assert done["ok"] is True, done.get("error")
    assert done["data"]["result"]["path"] == "source.mp4"
    assert 25 <= len(gray_frames(source, 320, 240)) <= 28  # 2.0 s .. 3.0 s now
    assert sorted(p.name for p in captures_dir(agent).iterdir()) == ["source.mp4"]


def test_trim_refuses_paths_outside_the_captures_directory(
    agent: AgentProcess, operator: Probe, tmp_path: Path
) -> None:
    make_source(captures_dir(agent))
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    (captures_dir(agent) / "link.mp4").symlink_to(secret)
    cases = {
        "../secret.mp4": "invalid_path",
        str(secret): "invalid_path",
        "link.mp4": "invalid_path",
        "nothere.mp4": "not_found",
        ".": "not_found",
    }
    for number, (name, code) in enumerate(cases.items()):
        # An id of its own per case: a repeated id would get the first case's cached answer,
        # and the later cases (the symlink escape among them) would never reach the path check.
        request = f"bad-{number}"
        operator.publish(
            ACTION,
            json.dumps({"id": request, "action": "trim", "file": name, "start": 0, "end": 1}),
        )
        answer = operator.wait_event(id=request)
        assert answer["ok"] is False and answer["error"]["code"] == code, (name, answer)
        assert "duplicate" not in answer, (name, answer)
        operator.history.clear()
    operator.publish(ACTION, "trim source.mp4 7 9")  # past the end of a 6 s file
    failed = operator.wait_event(event="job.failed")
    assert failed["error"]["code"] == "invalid_argument"
    assert secret.read_bytes() == b"not yours"


def test_a_recording_without_a_duration_stops_at_max_record_s(
    broker: Any, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    env = {"CAMERA_AGENT_JOBS__MAX_RECORD_S": "2"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        done = run_job(operator, {"id": "open-ended", "action": "record"}, timeout=30)
        assert done["ok"] is True, done.get("error")
        assert 1.5 <= done["data"]["result"]["duration_s"] <= 3.0
    finally:
        agent.stop()


def test_partial_captures_a_crash_left_are_swept_at_start_and_finished_ones_kept(
    broker: Any, operator: Probe, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent")
    captures = captures_dir(agent)
    captures.mkdir(parents=True)
    leftover = captures / ".picture-20260101T000000.000Z.jpg.partial"
    leftover.write_bytes(b"half a jpeg")
    finished = captures / "picture-20260101T000000.000Z.jpg"
    finished.write_bytes(b"a whole jpeg")
    start_agent(agent, operator)
    try:
        assert not leftover.exists()
        assert finished.read_bytes() == b"a whole jpeg"
        assert f"removed {leftover.name}, left unfinished by an earlier run" in agent.log_text()
    finally:
        agent.stop()


def test_the_latest_picture_is_on_mqtt_retained_with_its_info(
    streaming_agent: AgentProcess, broker: Any, operator: Probe
) -> None:
    done = run_job(operator, {"id": "shown", "action": "picture"})
    result = done["data"]["result"]
    # A viewer subscribing afterwards gets both, retained: what an MQTT image entity reads.
    viewer = Probe(broker, "viewer")
    try:
        viewer.subscribe("camera/picture/#")
        viewer.subscribe("camera/picture")
        jpeg = viewer.wait_for(lambda m: m.topic == "camera/picture", what="the picture")
        info = viewer.wait_for(lambda m: m.topic == "camera/picture/info", what="its info").json()
    finally:
        viewer.close()
    assert jpeg.retain
    assert simplejpeg.decode_jpeg_header(jpeg.payload)[:2] == (720, 1280)  # (height, width)
    assert hashlib.sha256(jpeg.payload).hexdigest() == result["sha256"]  # the file itself
    assert info["file"] == result["path"]
    assert info["preview"] == {"resolution": "1280x720", "bytes": len(jpeg.payload),
                               "downscaled": False}  # fmt: skip


def test_a_picture_larger_than_max_picture_bytes_is_shown_downscaled(
    broker: Any, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    env = {"CAMERA_AGENT_MQTT__MAX_PICTURE_BYTES": str(20 * 1024)}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        done = run_job(operator, {"id": "big", "action": "picture", "quality": 95})
        jpeg = operator.wait_for(lambda m: m.topic == "camera/picture", what="the preview")
        info = operator.wait_for(lambda m: m.topic == "camera/picture/info").json()
    finally:
        agent.stop()
    assert done["data"]["result"]["size"] > 20 * 1024  # the file itself is full size
    assert len(jpeg.payload) <= 20 * 1024
    height, width = simplejpeg.decode_jpeg_header(jpeg.payload)[:2]
    assert width < 1280 and abs(width / height - 1280 / 720) < 0.05
    assert info["preview"] == {"resolution": f"{width}x{height}", "bytes": len(jpeg.payload),
                               "downscaled": True}  # fmt: skip


def ask(operator: Probe, command: dict[str, Any]) -> dict[str, Any]:
    operator.publish(ACTION, json.dumps(command))
    return operator.wait_event(id=command["id"])


def test_files_lists_the_captures_newest_first_and_delete_removes_one(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    first = run_job(operator, {"id": "f1", "action": "picture", "sidecar": True})
    second = run_job(operator, {"id": "f2", "action": "picture"})
    (captures_dir(streaming_agent) / ".x.jpg.partial").write_bytes(b"unfinished")
    listed = ask(operator, {"id": "ls", "action": "files", "prefix": "picture-"})
    names = [f["name"] for f in listed["data"]["files"]]
    assert names[0] == second["data"]["result"]["path"]  # newest first
    assert set(names) == {first["data"]["result"]["path"], second["data"]["result"]["path"],
                          first["data"]["result"]["sidecar"]}  # fmt: skip
    assert {f["kind"] for f in listed["data"]["files"]} == {"picture", "sidecar"}
    page = ask(operator, {"id": "p1", "action": "files", "limit": 1})
    assert [f["name"] for f in page["data"]["files"]] == [names[0]]
    assert page["data"]["next_before"] == names[0]
    rest = ask(operator, {"id": "p2", "action": "files", "limit": 50, "before": names[0]})
    assert [f["name"] for f in rest["data"]["files"]] == names[1:]

    gone = ask(operator, {"id": "rm", "action": "delete", "file": names[0]})
    assert gone["ok"] is True and gone["event"] == "file.deleted"
    assert not (captures_dir(streaming_agent) / names[0]).exists()
    again = ask(operator, {"id": "rm2", "action": "delete", "file": names[0]})
    assert again["error"]["code"] == "not_found"
    for n, bad in enumerate(["../agent.toml", "/etc/passwd", ".x.jpg.partial", "a/../../x"]):
        refused = ask(operator, {"id": f"bad{n}", "action": "delete", "file": bad})
        assert refused["error"]["code"] in ("invalid_path", "not_found"), refused
    assert (streaming_agent.work_dir / "agent.toml").exists()  # nothing outside touched

"""Jobs through the real broker, MediaMTX and ffmpeg: picture, record, stop, trim."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from devstack import MediaServer

from agent.stream.ffmpeg_args import STAMP_HEIGHT, decode_stamp
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe

ACTION = "camera/control/action"
FRAME_MS = 1000 / 30


def captures_dir(agent: AgentProcess) -> Path:
    return agent.work_dir / "captures"


def gray_frames(path: Path, width: int, height: int) -> list[bytes]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
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


def first_frames(path: Path, count: int) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json",
         "-show_entries", "frame=key_frame,pict_type", "-read_intervals", f"%+#{count}", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    frames: list[dict[str, Any]] = json.loads(out)["frames"]
    return frames


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


def test_preroll_contains_frames_from_before_the_command(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    time.sleep(2.5)  # let the recorder hold more than the pre-roll asked for
    sent = time.time() * 1000
    done = run_job(
        operator, {"id": "pre", "action": "record", "duration": 1, "preroll": 2}, timeout=30
    )
    assert done["ok"] is True, done.get("error")
    path = captures_dir(streaming_agent) / done["data"]["result"]["path"]
    frames = gray_frames(path, 1280, 720)
    first = stamp_of(frames[0], 1280, sent)
    assert first < sent - 1500, sent - first  # about two seconds before the command
    assert abs(float(probe(str(path))["format"]["duration"]) - 3) <= 1.0


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

    operator.publish(ACTION, json.dumps({"id": "two", "action": "record", "duration": 60}))
    second = operator.wait_event(id="two", event="job.queued")["job"]
    operator.wait_event(job=second, event="job.progress")
    operator.publish(ACTION, f"stop {second}")
    finished = operator.wait_event(job=second, event="job.succeeded", timeout=20)
    assert finished["data"]["result"]["duration_s"] < 10


def test_recording_survives_the_agent_being_killed(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, json.dumps({"id": "k", "action": "record", "duration": 30}))
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
    path = captures_dir(streaming_agent) / result["path"]
    assert float(probe(str(path))["format"]["duration"]) >= 3
    assert first_frames(path, 1)[0]["key_frame"] == 1
    assert not list(captures_dir(streaming_agent).glob(".*partial"))


def test_full_disk_fails_the_job_and_leaves_no_corrupt_file(
    broker: Any, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent", media=media)
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

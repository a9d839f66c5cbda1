"""Jobs through the real broker, MediaMTX and ffmpeg: picture, record, stop, trim."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from agent.stream.ffmpeg_args import STAMP_HEIGHT, decode_stamp
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

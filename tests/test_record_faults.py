"""Recordings across faults, through the real agent, MediaMTX and ffmpeg: a recording holds every
frame the recorder has for the time asked, in order, and says exactly what it holds."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from devstack import MediaServer

from tests.support import AgentProcess, Probe
from tests.test_jobs import ACTION, assert_clean_timestamps, captures_dir, probe
from tests.test_stream import pusher_pid

SETTINGS = "camera/control/settings"


def start_recording(operator: Probe, seconds: float, request_id: str) -> str:
    operator.publish(
        ACTION, json.dumps({"id": request_id, "action": "record", "duration": seconds})
    )
    return str(operator.wait_event(id=request_id, event="job.queued")["job"])


def wait_elapsed(operator: Probe, job: str, seconds: float) -> None:
    operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json().get("job") == job
        and m.json()["event"] == "job.progress"
        and m.json()["data"]["progress"]["elapsed_s"] >= seconds,
        timeout=20, what=f"{seconds} s recorded",
    )  # fmt: skip


def media_duration(path: Path) -> float:
    return float(probe(str(path))["format"]["duration"])


def check_files(agent: AgentProcess, result: dict[str, Any]) -> list[Path]:
    files = [captures_dir(agent) / f["path"] for f in result["files"]]
    assert files[0] == captures_dir(agent) / result["path"]
    for path, described in zip(files, result["files"], strict=True):
        assert_clean_timestamps(path)
        assert described["resolution"] == "{width}x{height}".format(
            **probe(str(path))["streams"][0]
        )
    return files


def test_a_killed_pusher_costs_the_outage_not_the_rest_of_the_recording(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    job = start_recording(operator, 8, "kill")
    wait_elapsed(operator, job, 3)
    os.kill(pusher_pid(streaming_agent), signal.SIGKILL)
    outage = operator.wait_event(event="stream.online", timeout=15)["data"]["downtime_s"]
    done = operator.wait_event(job=job, event="job.succeeded", timeout=40)
    result = done["data"]["result"]
    assert result["requested_s"] >= 8
    # Everything but the outage (and the keyframe interval the new pusher needs to start on).
    assert result["duration_s"] >= 8 - outage - 1.0, (result, outage)
    assert result["complete"] is False
    assert [g["cause"] for g in result["gaps"]] == ["stream restart"], result["gaps"]
    assert 2 <= result["gaps"][0]["offset_s"] <= 5
    lost = sum(g["length_s"] for g in result["gaps"])
    assert "lost while the stream restarted" in done["message"]
    assert (
        f"recorded {result['duration_s']:.1f} of {result['requested_s']:.1f} s" in done["message"]
    )
    assert abs(result["requested_s"] - result["duration_s"] - lost) < 0.2
    files = check_files(streaming_agent, result)
    assert len(files) == 1  # the same encoder settings: one file, the outage a jump in time
    assert media_duration(files[0]) >= 8 - 1.0


def test_a_mediamtx_restart_costs_the_outage_it_caused(
    streaming_agent: AgentProcess, operator: Probe, media: MediaServer
) -> None:
    job = start_recording(operator, 10, "mtx")
    wait_elapsed(operator, job, 3)
    media.restart()
    outage = operator.wait_event(event="stream.online", timeout=30)["data"]["downtime_s"]
    done = operator.wait_event(job=job, event="job.succeeded", timeout=60)
    result = done["data"]["result"]
    assert result["duration_s"] >= 10 - outage - 1.5, (result, outage)
    causes = {g["cause"] for g in result["gaps"]}
    assert causes and causes <= {"stream restart", "MediaMTX unreachable"}, result["gaps"]
    check_files(streaming_agent, result)


def test_a_size_change_splits_the_recording_into_parts_and_keeps_both(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    job = start_recording(operator, 6, "size")
    wait_elapsed(operator, job, 2)
    operator.publish(SETTINGS, json.dumps({"id": "w", "set": {"width": 960}}))
    answer = operator.wait_event(id="w", event="settings.applied", timeout=20)
    assert answer["data"]["recording_split"] is True
    assert "the running recording continues after the gap" in answer["message"]
    done = operator.wait_event(job=job, event="job.succeeded", timeout=40)
    result = done["data"]["result"]
    files = check_files(streaming_agent, result)
    assert [f["resolution"] for f in result["files"]] == ["1280x720", "960x720"]
    first = Path(result["files"][0]["path"])
    assert result["files"][1]["path"] == f"{first.stem}-p2.mp4"
    assert result["files"][1]["start"] > result["files"][0]["start"]
    assert [g["cause"] for g in result["gaps"]] == ["settings change"], result["gaps"]
    assert result["duration_s"] >= 6 - result["gaps"][0]["length_s"] - 1.0
    assert all(media_duration(f) > 0.5 for f in files)
    assert f"in {files[0].name} and {files[1].name}" in done["message"]


def test_a_recording_with_mediamtx_gone_fails_and_writes_nothing(
    streaming_agent: AgentProcess, operator: Probe, media: MediaServer
) -> None:
    job = start_recording(operator, 3, "gone")
    wait_elapsed(operator, job, 1)
    media.stop()  # and it does not come back: the recorder's files are out of reach
    failed = operator.wait_event(job=job, event="job.failed", timeout=40)
    assert failed["ok"] is False
    assert failed["error"]["code"] == "stream_error"
    assert "MediaMTX playback" in failed["error"]["detail"]
    assert list(captures_dir(streaming_agent).glob("record-*")) == []
    assert list(captures_dir(streaming_agent).glob(".*")) == []  # no partial left behind

"""Timelapse series in the real agent (real broker, MediaMTX, ffmpeg): frames on the wall clock,
the video, `stop`, a SIGKILL in the middle, bad input, and what retention must spare."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import simplejpeg
from devstack import Broker, MediaServer

from agent.jobs.retention import Retention, StorageLimits
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe, children_of
from tests.test_jobs import ACTION, ask, gray_frames, probe, run_job, stamp_of


def frames(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def decoded_frames(path: Path) -> int:
    """How many frames a player decodes from ``path`` (ffprobe counts them)."""
    counted = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return int(counted.stdout.strip())


def terminal(operator: Probe, request_id: str, timeout: float = 40) -> dict[str, Any]:
    body: dict[str, Any] = operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json().get("id") == request_id
        and m.json()["event"] in ("job.succeeded", "job.failed", "job.cancelled"),
        timeout=timeout, what=f"end of {request_id}",
    ).json()  # fmt: skip
    return body


def test_a_series_takes_its_frames_on_time_and_makes_a_video(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    done = run_job(operator, {"id": "tl", "action": "timelapse", "interval": 1, "count": 5,
                              "fps": 5}, timeout=40)  # fmt: skip
    assert done["ok"] is True, done
    result = done["data"]["result"]
    captures = streaming_agent.work_dir / "captures"
    folder = captures / result["folder"]
    assert frames(folder) == [f"{n:06d}.jpg" for n in range(1, 6)]
    for name in frames(folder):
        height, width = simplejpeg.decode_jpeg_header((folder / name).read_bytes())[:2]
        assert (width, height) == (1280, 720)
    assert result["frames"] == 5 and result["missed"] == 0 and result["gaps"] == []
    video = result["video"]
    assert video["path"] == result["folder"] + ".mp4" and video["frames"] == 5
    facts = probe(str(captures / video["path"]))
    assert facts["streams"][0]["codec_name"] == "h264"
    assert decoded_frames(captures / video["path"]) == 5
    assert abs(float(facts["format"]["duration"]) - 1.0) < 0.05  # 5 frames at 5 fps
    # On the wall clock: frames a second apart, none late by more than a fraction of it.
    assert result["late_ms"]["max"] < 500, result["late_ms"]
    # The clock burned into each frame: what the pictures show, a second apart (a file's own
    # time also holds its encoding, and the first encode loads the encoder).
    near = (folder / "000001.jpg").stat().st_mtime * 1000
    stamps = [stamp_of(gray_frames(folder / name, 1280, 720)[0], 1280, near)
              for name in frames(folder)]  # fmt: skip
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(850 < step < 1150 for step in steps), steps
    # The lock was not asked for; the test pattern would say it has nothing to lock.
    assert result["lock"] is None
    # `files` lists the series as a folder with its frames, and its video.
    listed = ask(operator, {"id": "ls", "action": "files", "prefix": "timelapse-"})["data"]
    kinds = {f["name"]: (f["kind"], f.get("frames")) for f in listed["files"]}
    assert kinds == {
        result["folder"] + "/": ("timelapse", 5),
        video["path"]: ("timelapse_video", None),
    }


def test_stop_ends_a_series_with_what_it_has(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, json.dumps({"id": "tl", "action": "timelapse", "interval": 1,
                                         "count": 100, "lock": True}))  # fmt: skip
    queued = operator.wait_event(id="tl", event="job.queued")
    progress = operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json()["event"] == "job.progress"
        and m.json()["data"]["progress"].get("taken") == 3, timeout=10,
    ).json()  # fmt: skip
    assert progress["data"]["progress"]["of"] == 100
    folder = next((streaming_agent.work_dir / "captures").glob("timelapse-*"))
    busy = ask(operator, {"id": "rm", "action": "delete", "file": f"{folder.name}/000001.jpg"})
    assert busy["error"]["code"] == "busy", busy  # a frame of a running series
    stopping = ask(operator, {"id": "halt", "action": "stop", "job": queued["job"]})
    assert stopping["ok"] is True
    done = terminal(operator, "tl")
    assert done["event"] == "job.succeeded", done
    result = done["data"]["result"]
    assert result["frames"] == 3
    assert frames(streaming_agent.work_dir / "captures" / result["folder"]) == [
        "000001.jpg",
        "000002.jpg",
        "000003.jpg",
    ]
    assert result["video"]["frames"] == 3
    assert decoded_frames(streaming_agent.work_dir / "captures" / result["video"]["path"]) == 3
    assert result["lock"]["locked"] is False and "not applicable" in result["lock"]["reason"]


@pytest.mark.parametrize("ending", ["SIGKILL", "stop"])
def test_a_series_goes_on_after_the_agent_ends_without_overwriting(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path, ending: str
) -> None:
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        operator.publish(ACTION, json.dumps({"id": "tl", "action": "timelapse", "interval": 1,
                                             "count": 5, "fps": 5}))  # fmt: skip
        operator.wait_for(
            lambda m: m.topic == "camera/status" and m.json()["event"] == "job.progress"
            and m.json()["data"]["progress"].get("taken") == 2, timeout=10,
        )  # fmt: skip
        folder = next((tmp_path / "agent" / "captures").glob("timelapse-*"))
        before = {name: (folder / name).read_bytes() for name in frames(folder)}
        if ending == "SIGKILL":
            agent.kill()
        else:  # a clean stop sets the series aside: no end is published for it
            agent.stop()
            operator.wait_for(  # everything published before the agent went offline is read
                lambda m: m.topic == "camera/availability" and m.payload == b"offline"
            )
            assert not [m for m in operator.history if m.topic == "camera/status"
                        and m.json().get("id") == "tl" and m.json()["event"] in
                        ("job.succeeded", "job.failed", "job.cancelled")]  # fmt: skip
        time.sleep(2.5)  # ticks pass while the agent is down: they are missed, not bunched
        start_agent(agent, operator)
        done = terminal(operator, "tl", timeout=60)
    finally:
        agent.stop()
    assert done["event"] == "job.succeeded", done
    result = done["data"]["result"]
    assert frames(folder) == [f"{n:06d}.jpg" for n in range(1, 6)]
    for name, data in before.items():
        assert (folder / name).read_bytes() == data  # none overwritten
    assert result["missed"] >= 2
    gap = result["gaps"][0]  # (a tick may also miss its frame while the stream comes back)
    assert gap["after_frame"] == len(before) and gap["cause"] == "the agent was not running"
    assert decoded_frames(tmp_path / "agent" / "captures" / result["video"]["path"]) == 5


@pytest.mark.parametrize(
    ("command", "named"),
    [
        ("timelapse 0 5", "interval"),
        ("timelapse 1 -3", "count"),
        ("timelapse 1", "count or an end time"),
        ('{"action": "timelapse", "interval": 1, "until": "2020-01-01T00:00:00Z"}', "until"),
        ('{"action": "timelapse", "interval": 1, "count": 3, "fps": 0}', "fps"),
        ('{"action": "timelapse", "interval": 0.2, "count": 3}', "jobs.timelapse_min_interval_s"),
        ('{"action": "timelapse", "interval": 1, "until": "tomorrow"}', "until"),
    ],
)
def test_bad_timelapse_input_is_refused_naming_the_field(
    agent: AgentProcess, operator: Probe, command: str, named: str
) -> None:
    operator.publish(ACTION, command)
    answer = operator.wait_event(event="action.rejected")
    assert answer["error"]["code"] == "invalid_argument", answer
    assert named in answer["error"]["detail"], answer


def test_retention_spares_the_frames_of_a_running_series(tmp_path: Path) -> None:
    folder = tmp_path / "timelapse-20261202T000000.000Z"
    folder.mkdir()
    for n in range(1, 4):
        (folder / f"{n:06d}.jpg").write_bytes(b"x" * 1000)
    (tmp_path / "picture-1.jpg").write_bytes(b"x" * 1000)
    in_use = {folder.name + "/"}
    store = Retention(
        tmp_path, StorageLimits(max_bytes=1, min_free_bytes=0), lambda: in_use,
        lambda *args: None, lambda: None,
    )  # fmt: skip
    asyncio.run(store.start())
    assert frames(folder) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert not (tmp_path / "picture-1.jpg").exists()
    in_use.clear()  # the series ended: now its frames may go, and the folder with them
    asyncio.run(store.check())
    assert not folder.exists()


def test_a_series_rides_out_a_pusher_crash_and_a_broker_restart(
    streaming_agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    # A persistent session: what the agent publishes while the broker restarts reaches it.
    watcher = Probe(broker, "cli", session_expiry_s=120)
    try:
        watcher.subscribe("camera/status")
        operator.publish(ACTION, json.dumps({"id": "tl", "action": "timelapse", "interval": 1,
                                             "count": 6, "fps": 6}))  # fmt: skip

        def taken(n: int) -> None:
            watcher.wait_for(
                lambda m: m.json()["event"] == "job.progress"
                and m.json()["data"]["progress"].get("taken", 0) >= n, timeout=15,
            )  # fmt: skip

        taken(2)
        agent_pid = streaming_agent.process.pid  # type: ignore[union-attr]
        pusher = [pid for pid in children_of(agent_pid)
                  if b"ffmpeg" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
        assert pusher
        for pid in pusher:
            os.kill(pid, signal.SIGKILL)
        taken(4)
        broker.restart()  # the end of the series is published once the agent is back
        done = terminal(watcher, "tl", timeout=60)
    finally:
        watcher.close()
    assert done["event"] == "job.succeeded", done
    result = done["data"]["result"]
    folder = streaming_agent.work_dir / "captures" / result["folder"]
    assert frames(folder) == [f"{n:06d}.jpg" for n in range(1, 7)]  # numbered without holes
    assert decoded_frames(folder.with_name(folder.name + ".mp4")) == 6
    for gap in result["gaps"]:  # ticks lost to the pusher's restart say so
        assert gap["ticks"] >= 1 and gap["cause"]


def test_a_video_missing_a_frame_fails_the_job_and_keeps_the_frames(
    streaming_agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(ACTION, json.dumps({"id": "tl", "action": "timelapse", "interval": 1,
                                         "count": 3}))  # fmt: skip
    operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json()["event"] == "job.progress"
        and m.json()["data"]["progress"].get("taken") == 2, timeout=10,
    )  # fmt: skip
    folder = next((streaming_agent.work_dir / "captures").glob("timelapse-*"))
    (folder / "000002.jpg").unlink()  # lost behind the agent's back
    done = terminal(operator, "tl")
    assert done["event"] == "job.failed", done
    assert done["error"]["code"] == "io_error"
    assert "1 of the 3 frames" in done["error"]["detail"]
    assert f"kept in {folder.name}/" in done["error"]["detail"]
    assert frames(folder) == ["000001.jpg", "000003.jpg"]
    assert not folder.with_name(folder.name + ".mp4").exists()
    assert not list(folder.parent.glob(".*partial*"))

"""Motion detection in the running agent, on the test pattern's `still` scene and its moving box,
with a real broker, MediaMTX and ffmpeg; frames judged by the wall clock burned into them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack import Broker, MediaServer

from tests.conftest import start_agent
from tests.support import AgentProcess, Frame, Probe, RtspReader, settle, wait_until
from tests.test_jobs import assert_clean_timestamps, gray_frames, probe, stamp_of

SETTINGS = "camera/control/settings"
ACTION = "camera/control/action"
WIDTH, HEIGHT, FPS = 640, 360, 15
OFF_DELAY_S = 4.0


def seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def motion_agent(broker: Broker, media: MediaServer, work: Path, **env: str) -> AgentProcess:
    """An agent on the `still` test pattern (saved as its control value, as a user's would be)."""
    (work / "state").mkdir(parents=True)
    (work / "state" / "controls.json").write_text(json.dumps({"pattern": "still"}))
    return AgentProcess(broker, work, media=media, env={
        "CAMERA_AGENT_CAMERA__WIDTH": str(WIDTH), "CAMERA_AGENT_CAMERA__HEIGHT": str(HEIGHT),
        "CAMERA_AGENT_CAMERA__FPS": str(FPS), "CAMERA_AGENT_MOTION__OFF_DELAY_S": str(OFF_DELAY_S),
        **env,
    })  # fmt: skip


@contextmanager
def streaming(agent: AgentProcess, operator: Probe) -> Iterator[AgentProcess]:
    """The agent started, its stream online; stopped at the end."""
    start_agent(agent, operator)
    try:
        operator.wait_event(event="stream.online", timeout=20)
        yield agent
    finally:
        agent.stop()


def box_in(frame: Frame) -> bool:
    """The white box crosses the middle row: a run of near-white pixels SMPTE bars lack there
    (their 75 % white is grey 191, plus noise; the box is 235 in a JPEG, 255 from the stream)."""
    row = frame.middle_row
    run = best = 0
    for value in row:
        run = run + 1 if value > 220 else 0
        best = max(best, run)
    return best >= HEIGHT // 6 - 4


def wait_calibrated(operator: Probe) -> None:
    """Until the detector has learnt the scene (BASE/state says so)."""
    operator.wait_for(
        lambda m: m.topic == "camera/state" and m.json()["stream"]["state"] == "online"
        and m.json()["motion"]["calibrating"] is False, timeout=15, what="calibrated",
    )  # fmt: skip


def retained_motion(broker: Broker) -> bytes:
    """What a newcomer reads on BASE/motion (its own client id: the broker uses the identity)."""
    newcomer = Probe(broker, "viewer")
    try:
        newcomer.subscribe("camera/motion")
        return newcomer.wait_for(lambda m: m.topic == "camera/motion").payload
    finally:
        newcomer.close()


def set_control(operator: Probe, request_id: str, **values: object) -> None:
    operator.publish(SETTINGS, json.dumps({"id": request_id, "set": values}))
    answer = operator.wait_event(id=request_id, event="settings.applied", timeout=20)
    assert answer["ok"] is True, answer


def test_a_still_scene_stays_quiet_and_the_moving_box_turns_motion_on_then_off(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    agent = start_agent(motion_agent(broker, media, tmp_path / "agent"), operator)
    player = RtspReader(media.viewer_url(), WIDTH, HEIGHT)
    try:
        operator.wait_for(lambda m: m.topic == "camera/motion" and m.payload == b"OFF")
        player.wait_for(lambda frame: True, timeout=20)
        quiet = settle(operator, 60)  # noise and the clock for a minute
        events = [m.json()["event"] for m in quiet if m.topic == "camera/status"]
        assert not [e for e in events if e.startswith("motion.")], events
        assert not any(box_in(f) for f in player.snapshot())  # the scene had no box

        set_control(operator, "box-on", moving_box=True)
        started = operator.wait_event(event="motion.started", timeout=10)
        first_box = player.wait_for(box_in, timeout=10)
        assert operator.wait_for(lambda m: m.topic == "camera/motion").payload == b"ON"
        # The event carries the capture time of the first moving frame it saw: at or after the
        # first frame with the box, and within an analysis interval (0.2 s) and ffmpeg's
        # processing of it (its write time less the rest of its group would be 0.17 s later).
        at = seconds(started["data"]["time"])
        assert -0.1 <= at - first_box.stamp_ms / 1000 < 0.5, (at, first_box.stamp_ms)
        box = started["data"]["box"]
        assert 0.3 < box["y"] + box["h"] / 2 < 0.7  # the box moves across the middle
        assert started["data"]["zone"] is None and started["data"]["area"] > 0.003
        assert "clip" not in started["data"] and "snapshot" not in started["data"]
        state = operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["motion"]["state"] == "ON"
        ).json()
        assert state["motion"]["enabled"] is True

        set_control(operator, "box-off", moving_box=False)
        ended = operator.wait_event(event="motion.ended", timeout=OFF_DELAY_S + 5)
        off = operator.wait_for(lambda m: m.topic == "camera/motion")
        assert off.payload == b"OFF"
        last_box = max(f.stamp_ms for f in player.snapshot() if box_in(f)) / 1000
        # OFF comes off_delay_s after the last moving frame (one analysis interval late at most).
        assert abs(off.arrived - (last_box + OFF_DELAY_S)) < 1.0, (off.arrived, last_box)
        assert ended["data"]["started"] == started["data"]["time"]
        assert ended["data"]["duration_s"] > 0
        assert ended["data"]["peak_area"] >= started["data"]["area"]
    finally:
        player.close()
        agent.stop()


def test_motion_events_made_while_the_broker_is_away_arrive_after_with_their_times(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    agent = start_agent(
        motion_agent(broker, media, tmp_path / "agent", CAMERA_AGENT_MOTION__OFF_DELAY_S="2"),
        operator,
    )
    # A persistent session: what the agent sends once the broker is back reaches it.
    watcher = Probe(broker, "cli", session_expiry_s=120)
    try:
        watcher.subscribe("camera/status")
        operator.wait_event(event="stream.online", timeout=20)
        set_control(operator, "box-on", moving_box=True)
        started = watcher.wait_event(event="motion.started", timeout=10)
        set_control(operator, "box-off", moving_box=False)
        box_off_at = time.time()
        broker.stop()
        agent.wait_for_log("motion ended", timeout=15)  # while the broker is away
        broker.start()
        back_at = time.time()
        ended = watcher.wait_event(event="motion.ended", timeout=60)
        # Made while the broker was away, about the frames before the box stopped.
        assert seconds(ended["ts"]) < back_at
        assert seconds(started["data"]["time"]) <= seconds(ended["data"]["time"]) < box_off_at + 0.5
        assert ended["data"]["started"] == started["data"]["time"]
        # And the retained state a newcomer reads is the truth: nothing moves.
        assert retained_motion(broker) == b"OFF"
    finally:
        watcher.close()
        agent.stop()


def test_an_agent_killed_during_an_event_does_not_leave_motion_on(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    agent = start_agent(motion_agent(broker, media, work), operator)
    operator.wait_event(event="stream.online", timeout=20)
    set_control(operator, "box-on", moving_box=True)
    operator.wait_event(event="motion.started", timeout=10)
    operator.wait_for(lambda m: m.topic == "camera/motion" and m.payload == b"ON", what="ON")
    wait_until(lambda: json.loads((work / "state" / "controls.json").read_text()).get("moving_box"),
               what="the box saved")  # fmt: skip
    agent.kill()
    # The broker still holds the dead run's ON. The scene is still when the camera comes back.
    saved = json.loads((work / "state" / "controls.json").read_text())
    (work / "state" / "controls.json").write_text(json.dumps({**saved, "moving_box": False}))
    operator.history.clear()
    start_agent(agent, operator)
    try:
        assert operator.wait_for(lambda m: m.topic == "camera/motion").payload == b"OFF"
        assert retained_motion(broker) == b"OFF"
        operator.wait_event(event="stream.online", timeout=20)
        quiet = settle(operator, 5)
        assert not [m for m in quiet if m.topic == "camera/motion" and m.payload == b"ON"]
    finally:
        agent.stop()


def test_motion_snapshot_takes_a_picture_of_what_moved(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    with streaming(
        motion_agent(broker, media, work, CAMERA_AGENT_MOTION__SNAPSHOT="true"), operator
    ):
        set_control(operator, "box-on", moving_box=True)
        started = operator.wait_event(event="motion.started", timeout=10)
        job = started["data"]["snapshot"]["job"]
        done = operator.wait_event(job=job, event="job.succeeded", timeout=20)
        assert done["data"]["kind"] == "picture" and done["data"]["requested_by"] == "motion"
        path = work / "captures" / done["data"]["result"]["path"]
        grey = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
            capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        assert len(grey) == WIDTH * HEIGHT
        middle = grey[WIDTH * (HEIGHT // 2) : WIDTH * (HEIGHT // 2 + 1)]
        assert box_in(Frame(0.0, 0, 0.0, middle))  # the picture shows what moved
        info = operator.wait_for(lambda m: m.topic == "camera/picture/info").json()
        assert info["file"] == done["data"]["result"]["path"]


def clip_agent(broker: Broker, media: MediaServer, work: Path) -> AgentProcess:
    return motion_agent(broker, media, work, CAMERA_AGENT_MOTION__RECORD="true",
                        CAMERA_AGENT_MOTION__PREROLL_S="2", CAMERA_AGENT_MOTION__POSTROLL_S="3",
                        CAMERA_AGENT_MOTION__OFF_DELAY_S="1")  # fmt: skip


def test_a_motion_clip_holds_the_preroll_both_events_and_the_postroll(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    with streaming(clip_agent(broker, media, work), operator):
        # MediaMTX must have recorded the preroll (2 s, and the keyframe before) before the box
        # moves: the detector's calibration (2 s) and a little more.
        wait_calibrated(operator)
        time.sleep(1.0)
        set_control(operator, "on-1", moving_box=True)
        first = operator.wait_event(event="motion.started", timeout=10)
        set_control(operator, "off-1", moving_box=False)
        ended_1 = operator.wait_event(event="motion.ended", timeout=10)
        # Moving again within the clip's postroll: a second event, the same clip.
        set_control(operator, "on-2", moving_box=True)
        operator.wait_event(event="motion.started", timeout=10)
        set_control(operator, "off-2", moving_box=False)
        ended_2 = operator.wait_event(event="motion.ended", timeout=10)
        job = ended_1["data"]["clip"]["job"]
        assert ended_2["data"]["clip"]["job"] == job
        done = operator.wait_event(job=job, event="job.succeeded", timeout=30)
        assert done["data"]["requested_by"] == "motion"
        result = done["data"]["result"]
        assert result["complete"] is True and result["gaps"] == [], result
        path = work / "captures" / result["path"]
        media_info = probe(str(path))
        assert media_info["streams"][0]["codec_name"] == "h264"
        assert_clean_timestamps(path)
        frames = gray_frames(path, WIDTH, HEIGHT)
        first_at = seconds(first["data"]["time"])
        last_at = seconds(ended_2["data"]["time"])
        opening = stamp_of(frames[0], WIDTH, first_at * 1000) / 1000
        closing = stamp_of(frames[-1], WIDTH, last_at * 1000) / 1000
        # From the keyframe at or before preroll_s ahead of the first moving frame (a keyframe
        # a second), to postroll_s after the last.
        assert first_at - 2 - 1.1 <= opening <= first_at - 2 + 0.2, (opening, first_at)
        assert closing >= last_at + 3 - 0.5, (closing, last_at)


def test_a_stream_restart_during_an_event_leaves_a_reported_gap_in_its_clip(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    with streaming(clip_agent(broker, media, work), operator):
        set_control(operator, "on", moving_box=True)
        operator.wait_event(event="motion.started", timeout=10)
        operator.publish(ACTION, json.dumps({"id": "rs", "action": "stream", "op": "restart"}))
        operator.wait_event(id="rs", event="stream.restarted", timeout=20)
        set_control(operator, "off", moving_box=False)
        ended = operator.wait_event(event="motion.ended", timeout=10)
        job = ended["data"]["clip"]["job"]
        done = operator.wait_for(
            lambda m: m.topic == "camera/status" and m.json().get("job") == job
            and m.json()["event"] in ("job.succeeded", "job.failed"), timeout=30,
        ).json()  # fmt: skip
        assert done["event"] == "job.succeeded", done
        result = done["data"]["result"]
        # Kept, and honest about what it lacks.
        assert result["complete"] is False and result["gaps"], result
        assert "stream restart" in [gap["cause"] for gap in result["gaps"]], result["gaps"]
        assert (work / "captures" / result["path"]).stat().st_size > 0


def test_the_lights_switched_on_and_motion_in_the_mask_are_no_events(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    # The box's band across the middle of the picture is masked.
    band = [[0.0, 0.3], [1.0, 0.3], [1.0, 0.7], [0.0, 0.7]]
    with streaming(
        motion_agent(broker, media, tmp_path / "agent",
                     CAMERA_AGENT_MOTION__MASK=json.dumps([band])),
        operator,
    ):  # fmt: skip
        wait_calibrated(operator)
        set_control(operator, "lights", brightness=0.6)  # lights on: the whole picture jumps
        set_control(operator, "box-on", moving_box=True)  # moving only inside the mask
        quiet = settle(operator, 8)
        events = [m.json() for m in quiet if m.topic == "camera/status"]
        assert not [e for e in events if e["event"].startswith("motion.")], events
        state = [m for m in quiet if m.topic == "camera/state"][-1].json()
        assert state["motion"]["state"] == "OFF" and state["controls"]["brightness"] == 0.6


def test_an_agent_killed_during_a_clip_recovers_the_clip(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    with streaming(clip_agent(broker, media, work), operator) as agent:
        set_control(operator, "on", moving_box=True)
        clip = operator.wait_event(event="motion.started", timeout=10)["data"]["clip"]["job"]
        operator.wait_for(
            lambda m: m.topic == "camera/status" and m.json().get("job") == clip
            and m.json()["event"] == "job.progress", timeout=10,
        )  # fmt: skip
        agent.kill()
        start_agent(agent, operator)
        done = operator.wait_event(job=clip, event="job.succeeded", timeout=60)
        result = done["data"]["result"]
        assert result["recovered"] is True and result["complete"] is False
        assert probe(str(work / "captures" / result["path"]))["streams"][0]["codec_name"] == "h264"


def test_the_motion_action_sets_zones_and_mask_live_and_keeps_them(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    with streaming(motion_agent(broker, media, work), operator) as agent:
        # Bad input is answered, never applied.
        for request_id, body in (
            ("none", {}),
            ("outside", {"mask": [[[0, 0], [1.5, 0], [1, 1]]]}),
            ("short", {"zones": [{"name": "door", "polygon": [[0, 0], [1, 1]]}]}),
            ("twice", {"zones": [{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]},
                                 {"name": "a", "polygon": [[0, 0], [1, 0], [0, 1]]}]}),
        ):  # fmt: skip
            operator.publish(ACTION, json.dumps({"id": request_id, "action": "motion", **body}))
            refused = operator.wait_event(id=request_id, event="action.rejected")
            assert refused["error"]["code"] == "invalid_argument", refused
        # The box crosses the middle: a zone over the top half never sees it...
        top = {"name": "sky", "polygon": [[0, 0.15], [1, 0.15], [1, 0.35], [0, 0.35]]}
        operator.publish(ACTION, json.dumps({"id": "z1", "action": "motion", "zones": [top]}))
        answer = operator.wait_event(id="z1", event="motion.configured")
        assert answer["data"]["zones"] == [top] and answer["data"]["mask"] == []
        wait_calibrated(operator)
        set_control(operator, "on", moving_box=True)
        quiet = settle(operator, 5)
        assert not [m for m in quiet if m.topic == "camera/status"
                    and m.json()["event"] == "motion.started"]  # fmt: skip
        # ...a zone over the middle does, and the event names it.
        middle = {"name": "path", "polygon": [[0, 0.35], [1, 0.35], [1, 0.65], [0, 0.65]]}
        operator.publish(ACTION, json.dumps({"id": "z2", "action": "motion",
                                             "zones": [top, middle]}))  # fmt: skip
        operator.wait_event(id="z2", event="motion.configured")
        started = operator.wait_event(event="motion.started", timeout=10)
        assert started["data"]["zone"] == "path"
    # Kept across a restart.
    saved = json.loads((work / "state" / "motion-regions.json").read_text())
    assert [zone["name"] for zone in saved["zones"]] == ["sky", "path"]
    start_agent(agent, operator)
    try:
        state = operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["motion"]["zones"]
        ).json()
        assert [zone["name"] for zone in state["motion"]["zones"]] == ["sky", "path"]
    finally:
        agent.stop()

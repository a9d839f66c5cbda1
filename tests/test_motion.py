"""Motion detection in the running agent, on the test pattern's `still` scene and its moving box,
with a real broker, MediaMTX and ffmpeg; frames judged by the wall clock burned into them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from devstack import Broker, MediaServer

from tests.conftest import start_agent
from tests.support import AgentProcess, Frame, Probe, RtspReader, settle

SETTINGS = "camera/control/settings"
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


def box_in(frame: Frame) -> bool:
    """The white box crosses the middle row: a run of near-white pixels SMPTE bars lack there."""
    row = frame.middle_row
    run = best = 0
    for value in row:
        run = run + 1 if value > 235 else 0
        best = max(best, run)
    return best >= HEIGHT // 6 - 4


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
        # first frame with the box, and within a second of it.
        at = seconds(started["data"]["time"])
        assert -0.1 <= at - first_box.stamp_ms / 1000 < 1.0, (at, first_box.stamp_ms)
        box = started["data"]["box"]
        assert 0.3 < box["y"] + box["h"] / 2 < 0.7  # the box moves across the middle
        assert started["data"]["zone"] is None and started["data"]["area"] > 0.003
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

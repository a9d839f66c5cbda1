"""`mqtt.status_format = "text"`: the original front end's contract. Its Flutter app shows
`BASE/status` as it comes, so there the agent puts the plain message strings, and the JSON
events go to `BASE/events`."""

from __future__ import annotations

from pathlib import Path

from devstack import Broker

from tests.conftest import start_agent
from tests.support import AgentProcess, Probe


def test_status_carries_the_plain_messages_and_events_the_json(
    broker: Broker, operator: Probe, tmp_path: Path
) -> None:
    env = {"CAMERA_AGENT_MQTT__STATUS_FORMAT": "text"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", env=env), operator)
    viewer = Probe(broker, "viewer")  # the app's side: it may read both
    try:
        viewer.subscribe("camera/status")
        viewer.subscribe("camera/events")
        operator.publish("camera/control/settings", "brightness 0.3")
        text = viewer.wait_for(lambda m: m.topic == "camera/status", what="the plain answer")
        assert text.payload == b"SUCCESS: brightness set to 0.3"
        body = viewer.wait_for(lambda m: m.topic == "camera/events", what="the JSON event").json()
        assert body["event"] == "settings.applied" and body["message"] == text.payload.decode()

        operator.publish("camera/control/settings", "brightness 5")
        refused = viewer.wait_for(lambda m: m.topic == "camera/status", what="the refusal")
        assert refused.payload == b"ERROR: brightness 5 is out of range [-1, 1]"
        error = viewer.wait_for(lambda m: m.topic == "camera/events").json()["error"]
        assert error["code"] == "out_of_range"
        # Nothing on BASE/status is JSON any more.
        assert not [m for m in viewer.history if m.topic == "camera/status"
                    and m.payload.startswith(b"{")]  # fmt: skip
    finally:
        viewer.close()
        agent.stop()

"""The agent's MQTT contract, driven through a real Mosquitto over mutual TLS."""

from __future__ import annotations

import json
from typing import Any

import pytest
from devstack import Broker

from tests.support import AgentProcess, Probe, Received

SETTINGS = "camera/control/settings"
ACTION = "camera/control/action"


def retained(probe: Probe, topic: str) -> Received:
    """What a client that subscribes now receives as the retained message of ``topic``."""
    return probe.wait_for(lambda m: m.topic == topic and m.retain, what=f"retained {topic}")


def latest_state(broker: Broker) -> dict[str, Any]:
    fresh = Probe(broker, "viewer")
    try:
        fresh.subscribe("camera/state")
        result: dict[str, Any] = retained(fresh, "camera/state").json()
        return result
    finally:
        fresh.close()


def test_text_setting_is_applied_and_answered(agent: AgentProcess, operator: Probe) -> None:
    operator.publish(SETTINGS, "brightness 0.3")
    answer = operator.wait_event(event="settings.applied")
    assert answer["ok"] is True
    assert answer["message"] == "SUCCESS: brightness set to 0.3"
    assert answer["camera"] == "cam"
    assert answer["data"]["applied"] == {"brightness": 0.3}
    operator.wait_for(
        lambda m: m.topic == "camera/state" and m.json()["controls"]["brightness"] == 0.3,
        what="state with the new brightness",
    )


def test_json_set_is_all_or_nothing_and_lists_every_problem(
    agent: AgentProcess, operator: Probe, broker: Broker
) -> None:
    operator.publish(
        SETTINGS,
        json.dumps(
            {
                "id": "r1",
                "set": {
                    "brightness": 0.5,
                    "contrast": 7,
                    "bogus": 1,
                    "encoder": "x",
                    "exposure_time_us": 5000,
                    "saturation": "lots",
                },
            }
        ),
    )
    answer = operator.wait_event(id="r1")
    assert answer["ok"] is False
    assert answer["event"] == "settings.rejected"
    assert answer["error"]["code"] == "invalid_settings"
    problems = {p["control"]: p["code"] for p in answer["error"]["problems"]}
    assert problems == {
        "contrast": "out_of_range",
        "bogus": "unknown_control",
        "encoder": "read_only",
        "exposure_time_us": "inactive",
        "saturation": "invalid_value",
    }
    inactive = next(p for p in answer["error"]["problems"] if p["code"] == "inactive")
    assert "turn auto_exposure off first" in inactive["detail"]
    # The valid part (brightness) was not applied either.
    assert latest_state(broker)["controls"]["brightness"] == 0.0


def test_dependent_controls_are_judged_after_the_whole_change(
    agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(
        SETTINGS,
        json.dumps({"id": "r2", "set": {"auto_exposure": False, "exposure_time_us": 8000}}),
    )
    answer = operator.wait_event(id="r2")
    assert answer["ok"] is True, answer
    assert answer["data"]["applied"] == {"auto_exposure": False, "exposure_time_us": 8000}


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        (SETTINGS, "brightness 5", "out_of_range"),
        (SETTINGS, "sharpness_of_mind 1", "unknown_control"),
        (SETTINGS, "encoder libx265", "read_only"),
        (SETTINGS, "exposure_time_us 100", "inactive"),
        (SETTINGS, "width 641", "invalid_value"),
        (SETTINGS, "brightness", "bad_request"),
        (SETTINGS, '{"set": {"brightness": [1]}}', "invalid_value"),
        (SETTINGS, '{"set": 3}', "bad_request"),
        (SETTINGS, "[1, 2]", "bad_request"),
        (SETTINGS, "{not json", "bad_request"),
        (SETTINGS, b"\xff\xfe brightness", "bad_encoding"),
        (SETTINGS, b"x" * 70000, "payload_too_large"),
        (ACTION, "dance", "unknown_action"),
        (ACTION, "record -3", "invalid_argument"),
        (ACTION, "trim clip.mp4 5 2", "invalid_argument"),
        (ACTION, "stream sideways", "invalid_argument"),
        (ACTION, '{"action": "record", "duration": "soon"}', "invalid_argument"),
        (ACTION, '{"action": "picture", "flash": true}', "bad_request"),
        (ACTION, "record 10", "not_available"),
        (ACTION, "stop", "not_found"),
        (ACTION, "stop picture-x", "not_found"),
        (ACTION, "trim clip.mp4 00:00:01.5 4", "not_found"),
        (ACTION, "trim ../../etc/passwd 0 1", "invalid_path"),
    ],
)
def test_every_bad_command_gets_an_error_code(
    agent: AgentProcess, operator: Probe, topic: str, payload: str | bytes, code: str
) -> None:
    operator.publish(topic, payload)
    answer = operator.wait_event(ok=False)
    assert answer["error"]["code"] == code, answer
    assert answer["message"].startswith("ERROR: ")
    assert answer["event"] == ("settings.rejected" if topic == SETTINGS else "action.rejected")
    assert agent.alive()


def test_answer_goes_to_response_topic_with_correlation_data(
    agent: AgentProcess, operator: Probe
) -> None:
    operator.publish(
        SETTINGS, "contrast 1.5", response_topic="camera/response/op1", correlation_data=b"\x01c"
    )
    reply = operator.wait_for(lambda m: m.topic == "camera/response/op1", what="reply")
    assert reply.correlation_data == b"\x01c"
    assert reply.json()["event"] == "settings.applied"
    assert operator.wait_event(event="settings.applied")["data"]["applied"] == {"contrast": 1.5}


def test_response_topic_outside_base_is_refused(agent: AgentProcess, operator: Probe) -> None:
    operator.publish(SETTINGS, "contrast 1.5", response_topic="elsewhere/inbox")
    answer = operator.wait_event(ok=False)
    assert answer["error"]["code"] == "invalid_response_topic"
    assert "camera/response/" in answer["error"]["detail"]


def test_command_redelivered_with_same_id_runs_once(
    agent: AgentProcess, operator: Probe, broker: Broker
) -> None:
    operator.publish(SETTINGS, json.dumps({"id": "d1", "set": {"hue": 10}}))
    first = operator.wait_event(id="d1")
    operator.publish(SETTINGS, json.dumps({"id": "d2", "set": {"hue": 20}}))
    operator.wait_event(id="d2", ok=True)
    operator.publish(SETTINGS, json.dumps({"id": "d1", "set": {"hue": 10}}))
    again = operator.wait_event(id="d1")
    assert again["duplicate"] is True
    assert again["message"] == first["message"]
    # Had d1 run again, hue would be back at 10.
    assert latest_state(broker)["controls"]["hue"] == 20


def test_retained_availability_state_and_controls(agent: AgentProcess, broker: Broker) -> None:
    late = Probe(broker, "viewer")
    try:
        late.subscribe("camera/#")
        assert retained(late, "camera/availability").payload == b"online"
        state = retained(late, "camera/state").json()
        assert state["backend"]["backend"] == "testsrc"
        assert state["controls"]["contrast"] == 1.0
        assert {"version", "stream", "jobs", "identity"} <= state.keys()
        controls = {c["name"]: c for c in retained(late, "camera/controls").json()["controls"]}
        assert controls["brightness"]["type"] == "float"
        assert (controls["brightness"]["min"], controls["brightness"]["max"]) == (-1.0, 1.0)
        assert controls["width"]["restarts_stream"] is True
        assert controls["brightness"]["restarts_stream"] is False
        assert controls["exposure_time_us"]["inactive"] == "turn auto_exposure off first"
        assert controls["pattern"]["menu"][0]["label"] == "testsrc2"
    finally:
        late.close()


def test_last_will_on_sigkill_and_offline_on_clean_stop(
    agent: AgentProcess, operator: Probe
) -> None:
    agent.kill()
    operator.wait_for(
        lambda m: m.topic == "camera/availability" and m.payload == b"offline", what="will"
    )
    agent.start()
    operator.wait_for(lambda m: m.topic == "camera/availability" and m.payload == b"online")
    assert agent.stop() == 0
    operator.wait_for(
        lambda m: m.topic == "camera/availability" and m.payload == b"offline", what="offline"
    )

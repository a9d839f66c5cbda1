"""Many cameras on one broker: 20 real agents (test pattern, streaming off), each with its own
identity and topic base from camera-pki, driven by one fleet-wide operator. Each answers only its
own commands; an agent cannot read or write another's topics; a viewer scoped to one camera sees
only that one. Slow: twenty agents start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import Broker

from pki.authority import CertificateAuthority, Role
from tests.support import AgentProcess, Probe, answers, camera_agent_env, is_online, settle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CAMERAS = [f"cam{n:02d}" for n in range(1, 21)]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Broker, dict[str, AgentProcess]]]:
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    for camera in CAMERAS:
        ca.issue(camera, Role.AGENT, camera=camera)
    ca.issue("viewer-cam01", Role.VIEWER, camera="cam01")
    ca.issue("intruder", Role.AGENT, camera="cam99")
    broker = Broker(pki, tmp_path / "broker")
    broker.start()
    agents: dict[str, AgentProcess] = {}
    try:
        for camera in CAMERAS:
            env = camera_agent_env(pki, camera)
            agents[camera] = AgentProcess(broker, tmp_path / camera, env=env)
            agents[camera].start()
        yield broker, agents
    finally:
        for agent in agents.values():
            agent.stop()
        broker.stop()


def test_twenty_cameras_on_one_broker_keep_to_their_own_topics(
    fleet: tuple[Broker, dict[str, AgentProcess]],
) -> None:
    broker, agents = fleet
    operator = Probe(broker, "operator")  # fleet-wide: every recorded camera
    viewer = Probe(broker, "viewer-cam01")
    intruder = Probe(broker, "intruder")
    try:
        operator.subscribe("camera/#")
        viewer.subscribe("camera/#")
        for camera in CAMERAS:
            operator.wait_for(is_online(camera), timeout=60, what=f"{camera} online")

        # Every camera answers its own command, on its own topic, and only there.
        for n, camera in enumerate(CAMERAS, 1):
            operator.publish(
                f"camera/{camera}/control/settings",
                json.dumps({"id": f"set-{camera}", "set": {"brightness": round(n / 40, 3)}}),
            )
        answered = {}
        for camera in CAMERAS:
            answer = operator.wait_for(answers(f"set-{camera}"), what=f"{camera}'s answer")
            answered[camera] = answer
        for n, camera in enumerate(CAMERAS, 1):
            assert answered[camera].topic == f"camera/{camera}/status"
            body = answered[camera].json()
            assert body["camera"] == camera and body["data"]["applied"] == {
                "brightness": round(n / 40, 3)
            }
        # ... and no second answer anywhere.
        later = settle(operator, 1.0)
        assert not [m for m in later if m.topic.endswith("/status")
                    and str(m.json().get("id")).startswith("set-")]  # fmt: skip
        operator.history.clear()

        # An agent cannot command, impersonate or read another camera.
        intruder.subscribe("camera/cam02/#")
        intruder.publish("camera/cam02/control/settings", '{"id": "hijack", "set": {"hue": 0.5}}')
        intruder.publish("camera/cam02/status", '{"sentinel": true}')
        operator.publish("camera/cam02/control/action", '{"id": "probe", "action": "jobs"}')
        operator.wait_event(id="probe")  # cam02 answered the operator: the intruder's went first
        seen = settle(operator, 1.0)
        assert not [m for m in seen if b"hijack" in m.payload or b"sentinel" in m.payload]
        assert settle(intruder, 1.0) == []  # it read nothing of cam02
        assert agents["cam02"].alive()

        # A viewer scoped to cam01 sees cam01 and nothing of the nineteen others.
        operator.publish("camera/cam01/control/settings", "contrast 1.1")
        operator.publish("camera/cam03/control/settings", "contrast 1.1")
        cam01 = viewer.wait_for(lambda m: m.topic == "camera/cam01/status", what="cam01's answer")
        topics = {cam01.topic, *(m.topic for m in settle(viewer, 1.0))}
        assert topics and all(t.startswith("camera/cam01/") for t in topics), sorted(topics)
    finally:
        for probe in (operator, viewer, intruder):
            probe.close()

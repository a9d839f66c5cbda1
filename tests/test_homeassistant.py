"""Home Assistant MQTT discovery: the configs for each camera stack checked with Home Assistant's
own schemas and template engine (the pinned release, in a venv of its own), and the discovery in
the real agent and broker: retained configs, the birth message, discovery off, and the ACL."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker

from agent.camera.agent_controls import WithAgentControls
from agent.camera.base import CameraBackend, ControlType
from agent.camera.testsrc import TestPatternCamera
from agent.homeassistant import Discovery
from agent.mqtt.topics import Topics
from agent.protocol import parse_settings
from agent.status import describe_controls
from tests.conftest import start_agent
from tests.fakes import InMemoryBus
from tests.support import AgentProcess, Probe, wait_until
from tests.test_picamera2 import open_camera
from tests.test_v4l2 import started_camera

HA_VENV = Path(
    os.environ.get("CAMERA_AGENT_HA_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "camera-agent" / "home-assistant"
)  # fmt: skip
VALIDATE = Path(__file__).parent / "home_assistant" / "validate.py"


def discovery(tmp_path: Path, bus: InMemoryBus | None = None) -> Discovery:
    return Discovery(
        "homeassistant", "agent", "cam", Topics("camera"), bus or InMemoryBus(), 10.0,
        tmp_path / "discovery.json", configuration_url="https://localhost:8443/captures/",
    )  # fmt: skip


def validate_with_home_assistant(request: dict[str, Any]) -> dict[str, Any]:
    python = HA_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"no Home Assistant venv at {HA_VENV}: run scripts/bootstrap --all")
    done = subprocess.run(
        [str(python), str(VALIDATE)], input=json.dumps(request), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sample_command(descriptor: Any) -> object:
    if descriptor.type is ControlType.MENU:
        return descriptor.options[-1].label
    return descriptor.maximum


async def check_backend(backend: CameraBackend, tmp_path: Path) -> dict[str, Any]:
    """The configs of ``backend``, validated and rendered by Home Assistant; returns them."""
    configs = discovery(tmp_path).configs(backend.descriptors(), backend.info())
    values = backend.values()
    state = {
        "controls": values,
        "stream": {"state": "online"},
        "jobs": [{"id": "j1", "kind": "picture", "state": "succeeded",
                  "result": {"path": "p.jpg"}, "error": None}],
        "storage": {"free_bytes": 512 << 20},
    }  # fmt: skip
    by_name = {d.name: d for d in backend.descriptors()}
    commands = {
        topic: sample_command(by_name[topic.split("/")[3]])
        for topic, config in configs.items()
        if "command_template" in config
    }
    checked = validate_with_home_assistant({
        "configs": configs, "state": state, "controls": {"controls": describe_controls(backend)},
        "commands": commands,
    })  # fmt: skip
    assert checked["problems"] == []
    rendered = checked["rendered"]
    controls = {t.split("/")[3]: (t.split("/")[1], r) for t, r in rendered.items()
                if t.split("/")[3] in by_name
                and t.split("/")[1] in ("switch", "select", "number")}  # fmt: skip
    for name, (component, out) in controls.items():
        descriptor = by_name[name]
        # The state shows the camera's value, as Home Assistant would display it.
        if component == "switch":
            assert out["value"] == ("ON" if values[name] else "OFF"), name
        elif component == "select":
            labels = {str(o.value): o.label for o in descriptor.options}
            assert out["value"] == labels[str(values[name])], name
        else:
            assert float(out["value"]) == float(values[name]), name  # type: ignore[arg-type]
        # Unavailable exactly while the camera says the control is inactive.
        inactive = descriptor.inactive_reason(values) is not None
        assert out["availability"] == ["offline" if inactive else "online"], name
        # A command Home Assistant sends is one the agent takes, with an id.
        if "command" in out:
            command = parse_settings(out["command"])
            assert command.id and command.id.startswith("ha-")
            assert command.values == {
                name: commands[f"homeassistant/{component}/agent/{name}/config"]
            }
    assert rendered["homeassistant/sensor/agent/stream_state/config"]["value"] == "online"
    assert rendered["homeassistant/binary_sensor/agent/stream_online/config"]["value"] == "ON"
    motion = configs["homeassistant/binary_sensor/agent/motion/config"]
    assert (motion["state_topic"], motion["device_class"]) == ("camera/motion", "motion")
    assert rendered["homeassistant/sensor/agent/last_job/config"]["value"] == "picture succeeded"
    assert float(rendered["homeassistant/sensor/agent/disk_free/config"]["value"]) == 512
    return configs


async def switch_motion(enabled: bool) -> None:
    return None


async def test_test_pattern_discovery_is_valid_for_home_assistant(tmp_path: Path) -> None:
    # As the agent runs it: with its own controls (the motion switch) beside the camera's.
    camera = WithAgentControls(TestPatternCamera(1280, 720, 30), True, switch_motion)
    configs = await check_backend(camera, tmp_path)
    assert configs["homeassistant/switch/agent/motion/config"]["payload_off"] == (
        '{"set": {"motion": false}}'
    )
    components = {t.split("/")[1] for t in configs}
    assert components == {"number", "select", "switch", "button", "image", "sensor",
                          "binary_sensor"}  # fmt: skip
    brightness = configs["homeassistant/number/agent/brightness/config"]
    assert (brightness["min"], brightness["max"]) == (-1.0, 1.0)
    width = next(c for t, c in configs.items() if t.endswith("/width/config"))
    assert width["entity_category"] == "config" and "restarts stream" in width["name"]
    assert configs["homeassistant/image/agent/picture/config"]["image_topic"] == "camera/picture"
    press = json.loads(configs["homeassistant/button/agent/record/config"]["payload_press"])
    assert press == {"action": "record", "duration": 10.0}


async def test_a_c920s_discovery_has_its_menus_and_an_inactive_control(tmp_path: Path) -> None:
    camera, _ = await started_camera()
    configs = await check_backend(camera, tmp_path)
    auto_exposure = configs["homeassistant/select/agent/auto_exposure/config"]
    assert auto_exposure["options"] == ["Manual Mode", "Aperture Priority Mode"]
    assert "homeassistant/number/agent/exposure_time_us/config" in configs  # inactive: offline


async def test_a_pi_cameras_discovery_leaves_out_pairs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    camera = await open_camera(monkeypatch)
    configs = await check_backend(camera, tmp_path)
    assert not [t for t in configs if "/colour_gains/" in t]  # two numbers: no HA entity
    assert "homeassistant/switch/agent/auto_exposure/config" in configs


async def test_configs_of_controls_gone_after_a_backend_change_are_removed(
    tmp_path: Path,
) -> None:
    bus = InMemoryBus()
    first = await started_camera()
    await discovery(tmp_path, bus).publish(first[0].descriptors(), first[0].info())
    before = {m.topic for m in bus.published}
    bus.published.clear()
    pattern = TestPatternCamera(1280, 720, 30)  # the camera was swapped for another stack
    await discovery(tmp_path, bus).publish(pattern.descriptors(), pattern.info())
    cleared = {m.topic for m in bus.published if m.payload == b""}
    now = {m.topic for m in bus.published if m.payload}
    assert cleared == before - now
    assert "homeassistant/select/agent/auto_exposure/config" in cleared
    assert all(m.retain for m in bus.published)


def configs_seen(probe: Probe, seconds: float = 1.0) -> list[Any]:
    """Discovery messages that arrive within ``seconds`` (after the agent's own round trip)."""
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            message = probe.messages.get(timeout=0.05)
            if message.topic.startswith("homeassistant/") and message.topic.endswith("/config"):
                seen.append(message)
    return seen


def test_the_agent_publishes_its_configs_and_again_on_home_assistants_birth(
    agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    watcher = Probe(broker, "cli")  # an operator: reads the discovery prefix
    late = Probe(broker, "homeassistant")  # another, who subscribes once they are out
    try:
        # Online comes first; the configs may still be on their way (then they arrive live,
        # not flagged retained), so the first watcher waits for brightness's, whichever way.
        watcher.subscribe("homeassistant/#")
        brightness = "homeassistant/number/agent/brightness/config"
        seen: set[str] = set()

        def brightness_seen() -> bool:
            seen.update(m.topic for m in configs_seen(watcher))
            return brightness in seen

        wait_until(brightness_seen, what="brightness's config")
        # A subscriber from now on gets them from the broker: they are retained.
        late.subscribe("homeassistant/#")
        retained = wait_until(lambda: [m for m in configs_seen(late) if m.retain],
                              what="retained configs")  # fmt: skip
        topics = {m.topic for m in retained}
        assert brightness in topics
        assert all(json.loads(m.payload)["device"]["identifiers"] == ["camera-agent-agent"]
                   for m in retained)  # fmt: skip
        # Home Assistant restarts and says so: every config comes again (after the first
        # round has all arrived, so that none of it passes for the second).
        wait_until(lambda: configs_seen(watcher) == [], what="the first round's end")
        watcher.publish("homeassistant/status", "online")
        again = wait_until(lambda: configs_seen(watcher, 2.0), what="configs again")
        assert {m.topic for m in again} >= topics
    finally:
        late.close()
        watcher.close()


def test_discovery_off_publishes_nothing(broker: Broker, operator: Probe, tmp_path: Path) -> None:
    watcher = Probe(broker, "cli")
    try:
        watcher.subscribe("homeassistant/#")
        env = {"CAMERA_AGENT_HOMEASSISTANT__DISCOVERY": "false"}
        agent = start_agent(AgentProcess(broker, tmp_path / "agent", env=env), operator)
        try:
            watcher.publish("homeassistant/status", "online")
            assert configs_seen(watcher, 2.0) == []
        finally:
            agent.stop()
    finally:
        watcher.close()


def test_the_acl_keeps_each_identity_to_its_own_discovery_node(
    broker: Broker, operator: Probe
) -> None:
    watcher = Probe(broker, "cli")
    cam_a = Probe(broker, "cam-a")
    try:
        watcher.subscribe("homeassistant/#")
        operator.publish("homeassistant/number/cam-a/planted/config", '{"name": "x"}')
        cam_a.publish("homeassistant/number/cam-b/planted/config", '{"name": "x"}')
        cam_a.publish("homeassistant/number/cam-a/own/config", '{"name": "x"}')
        seen = wait_until(lambda: configs_seen(watcher), what="cam-a's own config")
        assert [m.topic for m in seen] == ["homeassistant/number/cam-a/own/config"]
    finally:
        cam_a.close()
        watcher.close()

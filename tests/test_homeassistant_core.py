"""The camera in a real Home Assistant Core (the pinned 2024.1.6, run from its venv with its MQTT
integration on our broker over mutual TLS, as an operator), checked through Home Assistant's own
REST API: the device and its entities, a number that changes the camera, the picture button,
the image entity, and the entities going unavailable when the agent stops. Slow: Home Assistant
takes a few seconds to start."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker, free_port, terminate_group, wait_for_port

from tests.support import AgentProcess, Probe, wait_until
from tests.test_homeassistant import HA_VENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONFIGURATION = """\
homeassistant:
  name: camera-agent test
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
onboarding:
"""


def mqtt_entry(broker: Broker, identity: str) -> dict[str, Any]:
    """The MQTT integration's config entry, as its config flow stores it (certificates by
    content): what a user enters under "Advanced options"."""
    client = broker.pki_dir / "clients" / identity
    return {
        "entry_id": "camera_agent_mqtt", "version": 1, "minor_version": 1, "domain": "mqtt",
        "title": "camera-agent broker", "options": {}, "source": "user", "unique_id": None,
        "pref_disable_new_entities": False, "pref_disable_polling": False, "disabled_by": None,
        "data": {
            "broker": "127.0.0.1", "port": broker.port, "protocol": "5", "transport": "tcp",
            "discovery": True, "discovery_prefix": "homeassistant", "keepalive": 60,
            "certificate": (broker.pki_dir / "ca_chain.pem").read_text(),
            "client_cert": (client / "cert.pem").read_text(),
            "client_key": (client / "key.pem").read_text(), "tls_insecure": False,
        },
    }  # fmt: skip


class HomeAssistantCore:
    def __init__(self, broker: Broker, work: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = work / "config"
        (self.config / ".storage").mkdir(parents=True)
        (self.config / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        entries = {"version": 1, "minor_version": 1, "key": "core.config_entries",
                   "data": {"entries": [mqtt_entry(broker, "homeassistant")]}}  # fmt: skip
        (self.config / ".storage" / "core.config_entries").write_text(json.dumps(entries))
        (work / "tmp").mkdir()
        self.log = work / "home-assistant.log"
        self.process = subprocess.Popen(
            [str(HA_VENV / "bin" / "hass"), "-c", str(self.config), "--skip-pip",
             "--log-file", str(self.log)],
            # Its MQTT client writes the certificates to files in the temporary directory.
            env={**os.environ, "TMPDIR": str(work / "tmp")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.token = ""

    def start(self) -> None:
        wait_for_port("127.0.0.1", self.port, timeout=120)
        client_id = f"{self.base}/"
        user = {"client_id": client_id, "name": "Test", "username": "test",
                "password": "camera-agent-test", "language": "en"}  # fmt: skip
        # Onboarding answers 404 until its integration is set up.
        code = wait_until(lambda: self._post_json("/api/onboarding/users", user), timeout=120,
                          what="Home Assistant onboarding")["auth_code"]  # fmt: skip
        form = urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": code, "client_id": client_id}
        ).encode()
        with urllib.request.urlopen(f"{self.base}/auth/token", form, timeout=30) as answer:  # noqa: S310
            self.token = json.loads(answer.read())["access_token"]

    def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return self.call("POST", path, body)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = self.raw(method, path, body)
        return json.loads(raw) if raw else None

    def raw(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        request = urllib.request.Request(  # noqa: S310 -- our own Home Assistant on loopback
            f"{self.base}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            data: bytes = answer.read()
            return data

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
        return found

    def available(self, entity_id: str) -> dict[str, Any] | None:
        found = self.state(entity_id)
        return found if found is not None and found["state"] != "unavailable" else None

    def template(self, text: str) -> str:
        return self.raw("POST", "/api/template", {"template": text}).decode()

    def stop(self) -> None:
        terminate_group(self.process, timeout=30)


@pytest.fixture
def home_assistant(broker: Broker, tmp_path: Path) -> Iterator[HomeAssistantCore]:
    if not (HA_VENV / "bin" / "hass").exists():
        pytest.fail(f"no Home Assistant venv at {HA_VENV}: run scripts/bootstrap --all")
    core = HomeAssistantCore(broker, tmp_path / "home-assistant")
    try:
        core.start()
        yield core
    finally:
        core.stop()


def test_the_camera_appears_and_works_in_home_assistant(
    streaming_agent: AgentProcess, home_assistant: HomeAssistantCore, operator: Probe
) -> None:
    ha = home_assistant
    brightness = wait_until(lambda: ha.state("number.cam_brightness"), timeout=60,
                            what="the brightness entity")  # fmt: skip
    # The device and its entities, with the descriptors' ranges and options.
    assert ha.template("{{ device_attr('number.cam_brightness', 'name') }}") == "Camera cam"
    assert ha.template("{{ device_attr('number.cam_brightness', 'manufacturer') }}") == (
        "camera-agent"
    )
    attributes = brightness["attributes"]
    assert (attributes["min"], attributes["max"]) == (-1.0, 1.0)
    # Available once both the agent's availability and its controls (active) have arrived.
    brightness = wait_until(lambda: ha.available("number.cam_brightness"), what="available")
    assert float(brightness["state"]) == 0.0
    pattern = ha.state("select.cam_pattern")
    assert pattern is not None and pattern["state"] in pattern["attributes"]["options"]
    for entity in ("button.cam_picture", "image.cam_picture", "sensor.cam_stream_state",
                   "binary_sensor.cam_stream_online"):  # fmt: skip
        assert ha.state(entity) is not None, entity
    assert wait_until(lambda: (ha.state("binary_sensor.cam_stream_online") or {}).get("state")
                      == "on", what="stream online in Home Assistant")  # fmt: skip

    # Setting the number changes the camera.
    operator.subscribe("camera/state")
    ha.call("POST", "/api/services/number/set_value",
            {"entity_id": "number.cam_brightness", "value": 0.3})  # fmt: skip
    operator.wait_for(
        lambda m: m.topic == "camera/state" and m.json()["controls"]["brightness"] == 0.3,
        what="brightness 0.3 in the camera's state",
    )
    assert wait_until(lambda: (ha.state("number.cam_brightness") or {}).get("state") == "0.3",
                      what="Home Assistant shows 0.3")  # fmt: skip

    # Motion: the default pattern (testsrc2) moves all over, so the motion sensor turns on;
    # the motion switch turns detection off, which ends the event and turns the sensor off.
    assert wait_until(lambda: (ha.state("binary_sensor.cam_motion") or {}).get("state") == "on",
                      timeout=30, what="motion detected in Home Assistant")  # fmt: skip
    motion = ha.state("binary_sensor.cam_motion")
    assert motion is not None and motion["attributes"]["device_class"] == "motion"
    assert (ha.state("switch.cam_motion") or {}).get("state") == "on"
    ha.call("POST", "/api/services/switch/turn_off", {"entity_id": "switch.cam_motion"})
    ended = operator.wait_event(event="motion.ended", timeout=20)
    assert ended["data"]["duration_s"] > 0
    assert wait_until(lambda: (ha.state("binary_sensor.cam_motion") or {}).get("state") == "off",
                      what="no motion once detection is off")  # fmt: skip
    assert wait_until(lambda: (ha.state("switch.cam_motion") or {}).get("state") == "off",
                      what="the motion switch off")  # fmt: skip

    # The picture button takes a picture, and the image entity serves it.
    ha.call("POST", "/api/services/button/press", {"entity_id": "button.cam_picture"})
    taken = operator.wait_event(event="job.succeeded", timeout=20)
    assert taken["data"]["kind"] == "picture"
    picture = taken["data"]["result"]

    def the_picture() -> bytes | None:
        body = ha.raw("GET", "/api/image_proxy/image.cam_picture")
        return body if hashlib.sha256(body).hexdigest() == picture["sha256"] else None

    served = wait_until(the_picture, what="the picture from the image entity")
    assert served[:2] == b"\xff\xd8"

    # The agent stops: its entities go unavailable.
    streaming_agent.stop()
    assert wait_until(lambda: (ha.state("number.cam_brightness") or {}).get("state")
                      == "unavailable", what="unavailable after the agent stops")  # fmt: skip

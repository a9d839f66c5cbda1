"""The shipped broker config refuses everything but our certificates, and enforces the ACL."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from devstack import Broker
from paho.mqtt.enums import CallbackAPIVersion

from pki.authority import CertificateAuthority, Role
from tests.support import WAIT_S, AgentProcess, Probe, tls_context


def connects(
    broker: Broker,
    cert: Path | None,
    key: Path | None,
    max_version: ssl.TLSVersion | None = None,
) -> bool:
    """True only if the broker completes TLS and answers CONNECT with success."""
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        outcome.append(not rc.is_failure)
        done.set()

    def on_disconnect(*args: Any) -> None:
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set_context(tls_context(broker.pki_dir / "ca_chain.pem", cert, key, max_version))
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", broker.port, keepalive=10)
    except (ssl.SSLError, OSError):
        return False
    client.loop_start()
    try:
        done.wait(WAIT_S)
        return outcome == [True]
    finally:
        client.loop_stop()
        client.disconnect()


def client_files(pki: Path, name: str) -> tuple[Path, Path]:
    return pki / "clients" / name / "cert.pem", pki / "clients" / name / "key.pem"


def test_our_certificate_connects(broker: Broker) -> None:
    # The baseline that makes every refusal below meaningful.
    assert connects(broker, *client_files(broker.pki_dir, "operator"))


def test_no_client_certificate_is_refused(broker: Broker) -> None:
    assert not connects(broker, None, None)


def test_lookalike_ca_with_the_same_names_is_refused(broker: Broker, tmp_path: Path) -> None:
    impostor = CertificateAuthority(tmp_path / "impostor")
    assert impostor.init()
    assert not connects(broker, *client_files(impostor.paths.root, "operator"))


def test_expired_certificate_is_refused(broker: Broker) -> None:
    ca = CertificateAuthority(broker.pki_dir)
    ca.issue(
        "expired-op", Role.OPERATOR, days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(3)
    )
    assert not connects(broker, *client_files(broker.pki_dir, "expired-op"))


def test_revoked_certificate_is_refused_after_broker_restart(broker: Broker) -> None:
    ca = CertificateAuthority(broker.pki_dir)
    ca.issue("doomed", Role.OPERATOR)
    broker.reload()  # picks up the ACL entry of the new identity
    assert connects(broker, *client_files(broker.pki_dir, "doomed"))
    ca.revoke("doomed")
    # Mosquitto 2.0 loads the CRL when a listener starts; SIGHUP does not re-read it.
    broker.restart()
    assert not connects(broker, *client_files(broker.pki_dir, "doomed"))
    assert connects(broker, *client_files(broker.pki_dir, "operator"))


def test_tls_1_1_is_refused(broker: Broker) -> None:
    files = client_files(broker.pki_dir, "operator")
    assert not connects(broker, *files, max_version=ssl.TLSVersion.TLSv1_1)
    assert connects(broker, *files, max_version=ssl.TLSVersion.TLSv1_2)


def test_viewer_cannot_command_but_operator_can(
    agent: AgentProcess, operator: Probe, broker: Broker
) -> None:
    viewer = Probe(broker, "viewer")
    try:
        viewer.publish(
            "camera/control/settings", json.dumps({"id": "from-viewer", "set": {"hue": 5}})
        )
        viewer.publish(
            "camera/control/action", json.dumps({"id": "viewer-act", "action": "picture"})
        )
    finally:
        viewer.close()
    operator.publish(
        "camera/control/settings", json.dumps({"id": "from-operator", "set": {"hue": 7}})
    )
    assert operator.wait_event(id="from-operator")["ok"] is True
    answered = {m.json().get("id") for m in operator.history if m.topic == "camera/status"}
    assert not answered & {"from-viewer", "viewer-act"}


def test_agent_cannot_publish_another_cameras_status(broker: Broker, operator: Probe) -> None:
    cam_a = Probe(broker, "cam-a")
    try:
        cam_a.publish("camera/b/status", b'{"forged": true}')
        cam_a.publish("camera/b/picture", b"\xff\xd8 a forged picture")
        cam_a.publish("camera/b/control/settings", b"brightness 1")
        cam_a.publish("camera/a/status", b'{"sentinel": true}')  # its own: allowed
    finally:
        cam_a.close()
    operator.wait_for(lambda m: m.topic == "camera/a/status", what="cam-a's own status")
    assert not [m for m in operator.history if m.topic.startswith("camera/b/")]


@pytest.mark.parametrize(
    ("identity", "sentinel_from", "sentinel_topic"),
    [("viewer", "agent", "camera/status"), ("cam-a", "operator", "camera/a/control/settings")],
)
def test_others_cannot_read_commands(
    broker: Broker, operator: Probe, identity: str, sentinel_from: str, sentinel_topic: str
) -> None:
    snoop = Probe(broker, identity)
    # One connection per identity: the broker uses the CN as client id, so a second
    # `operator` connection would take over the fixture's session.
    sender = operator if sentinel_from == "operator" else Probe(broker, sentinel_from)
    try:
        snoop.subscribe("camera/control/#")
        snoop.subscribe(sentinel_topic)
        operator.publish("camera/control/settings", b"brightness 0.1")
        # Published after the command was acknowledged: arrives after it, were it delivered.
        sender.publish(sentinel_topic, b"sentinel")
        snoop.wait_for(lambda m: m.topic == sentinel_topic, what="sentinel it may read")
        assert not [m for m in snoop.history if m.topic == "camera/control/settings"]
    finally:
        snoop.close()
        if sender is not operator:
            sender.close()

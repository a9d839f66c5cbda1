"""Driving the agent the way people do: Mosquitto's own command-line clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack import Broker, MediaServer

from tests.support import AgentProcess, Probe


def tls_args(broker: Broker, identity: str) -> list[str]:
    pki = broker.pki_dir
    client = pki / "clients" / identity
    return [
        "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki / "ca_chain.pem"),
        "--cert", str(client / "cert.pem"), "--key", str(client / "key.pem"),
    ]  # fmt: skip


def test_mosquitto_pub_text_command(agent: AgentProcess, operator: Probe, broker: Broker) -> None:
    subprocess.run(
        ["mosquitto_pub", *tls_args(broker, "cli"), "-q", "1",
         "-t", "camera/control/settings", "-m", "saturation 1.7"],
        check=True, timeout=10,
    )  # fmt: skip
    answer = operator.wait_event(event="settings.applied")
    assert answer["message"] == "SUCCESS: saturation set to 1.7"


def test_mosquitto_rr_gets_the_answer_on_its_response_topic(
    agent: AgentProcess, broker: Broker, tmp_path: Path
) -> None:
    result = subprocess.run(
        ["mosquitto_rr", *tls_args(broker, "cli"), "-W", "10",
         "-t", "camera/control/settings", "-e", "camera/response/rr",
         "-m", json.dumps({"id": "rr1", "set": {"gamma": 1.4}})],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["id"] == "rr1"
    assert reply["ok"] is True
    assert reply["data"]["applied"] == {"gamma": 1.4}


def test_agent_started_before_its_broker_comes_online_when_it_starts(
    pki_dir: Path, tmp_path: Path
) -> None:
    broker = Broker(pki_dir, tmp_path / "broker")
    agent = AgentProcess(broker, tmp_path / "agent")
    agent.start()
    try:
        agent.wait_for_log("cannot connect to broker")  # nothing listens on its port yet
        broker.start()
        operator = Probe(broker, "operator")
        try:
            operator.subscribe("camera/availability")
            operator.wait_for(lambda m: m.payload == b"online", timeout=20, what="online")
        finally:
            operator.close()
    finally:
        agent.stop()
        broker.stop()


def agent_cli(
    command: str, config: Path, env: dict[str, str] | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`camera-agent COMMAND --config CONFIG [EXTRA...]`, as a user runs it."""
    argv = [sys.executable, "-m", "agent", command, "--config", str(config), *extra]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, env=env or None
    )


def test_doctor_reports_what_answers_and_what_does_not(
    broker: Broker, media: MediaServer, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent", media=media)
    result = agent_cli("doctor", agent.config_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout
    assert any(
        line.startswith("[ok] broker:") and "accepts agent over TLSv1.3" in line for line in lines
    )
    assert any(line.startswith("[ok] mediamtx:") and "no stream yet" in line for line in lines)
    assert any(line.startswith("[ok] encoder:") and "libx264" in line for line in lines)
    media.stop()
    result = agent_cli("doctor", agent.config_path, {**os.environ, "CAMERA_AGENT_MQTT__PORT": "1"})
    assert result.returncode == 1
    assert "[FAIL] broker: 127.0.0.1:1:" in result.stdout
    assert "[FAIL] mediamtx:" in result.stdout and "unreachable" in result.stdout


def test_selftest_tours_the_camera_through_real_mediamtx_and_fails_without_it(
    broker: Broker, media: MediaServer, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent", media=media)
    result = agent_cli("selftest", agent.config_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("open the camera", "stream", "first frame", "control brightness", "picture",
                 "restart-class change", "record 3 s", "stop"):  # fmt: skip
        assert any(line.startswith(f"[pass] {step}:") for line in lines), (step, result.stdout)
    record = next(line for line in lines if line.startswith("[pass] record 3 s:"))
    assert "h264 1280x720" in record  # ffprobe read the recording back from MediaMTX
    assert lines[-1].endswith(" passed, 0 failed")
    media.stop()
    result = agent_cli("selftest", agent.config_path)
    assert result.returncode == 1
    assert "[FAIL] first frame:" in result.stdout  # the pusher cannot reach MediaMTX
    assert "[pass] control brightness:" in result.stdout  # the camera part still runs
    assert result.stdout.splitlines()[-1].endswith(" failed") and " 0 failed" not in result.stdout


def test_doctor_dump_writes_the_fixture_layout_or_says_why_it_cannot(
    broker: Broker, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent")
    dump = tmp_path / "my-camera"
    result = agent_cli("doctor", agent.config_path, None, "--dump", str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "doctor --dump" in (dump / "SOURCE.md").read_text()
    # A directory that cannot be written (here: inside /proc; a full disk answers the same).
    result = agent_cli("doctor", agent.config_path, None, "--dump", "/proc/camera-dump")
    assert result.returncode == 1
    assert "cannot write the dump into /proc/camera-dump" in result.stderr
    assert "Traceback" not in result.stderr

"""The agent survives broker restarts, its own restarts, and a second agent with its certificate."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker, MediaServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.mqtt.client import quiet_closed_socket_races
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe, wait_until

SETTINGS = "camera/control/settings"
ACTION = "camera/control/action"


def online(probe: Probe) -> None:
    probe.wait_for(
        lambda m: m.topic == "camera/availability" and m.payload == b"online", what="online"
    )


def test_broker_restart_reconnects_resubscribes_and_runs_queued_command_once(
    broker: Broker, operator: Probe, tmp_path: Path
) -> None:
    # The agent waits 3 s before reconnecting, so the command below surely reaches the broker
    # while the agent is away, and waits in its persistent session.
    env = {"CAMERA_AGENT_MQTT__RECONNECT_MIN_S": "3", "CAMERA_AGENT_MQTT__RECONNECT_MAX_S": "3"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", env=env), operator)
    # paho would reconnect the fixture's probe, which would then fight the new one below for
    # the `operator` session (the broker uses the certificate CN as client id).
    operator.close()
    broker.stop()
    broker.start()  # same port, same persistence file
    operator = Probe(broker, "operator")
    try:
        operator.subscribe("camera/#")
        operator.publish(SETTINGS, json.dumps({"id": "while-away", "set": {"gamma": 2.0}}))
        assert "reconnected" not in agent.log_text()  # queued, not delivered to a live agent
        answer = operator.wait_event(id="while-away", timeout=30)
        assert answer["ok"] is True
        online(operator)  # republished after the reconnect
        operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["controls"]["gamma"] == 2.0,
            what="state with the queued change",
        )
        # Executed once: no second answer for the same command.
        operator.publish(SETTINGS, json.dumps({"id": "after", "set": {"gamma": 3.0}}))
        operator.wait_event(id="after")
        ids = [m.json()["id"] for m in operator.history if m.topic == "camera/status"]
        assert ids.count("while-away") == 0  # the one answer was consumed above
    finally:
        operator.close()
        agent.stop()
    assert "reconnected" in agent.log_text()


def test_a_job_that_ends_while_the_broker_is_down_reports_its_end_once_it_is_back(
    streaming_agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    operator.close()  # a persistent session instead, so nothing published meanwhile is missed
    watcher = Probe(broker, "operator", session_expiry_s=300)
    try:
        watcher.subscribe("camera/status")
        watcher.publish(ACTION, json.dumps({"id": "across", "action": "record", "duration": 2}))
        job = watcher.wait_event(id="across", event="job.queued")["job"]
        watcher.wait_event(job=job, event="job.running")
        broker.stop()
        # The recording ends while the broker is away: its file takes its final name.
        captures = streaming_agent.work_dir / "captures"
        wait_until(lambda: list(captures.glob("record-*.mp4")), timeout=30, what="the recording")
        broker.start()
        end = watcher.wait_event(job=job, event="job.succeeded", timeout=30)
        assert end["id"] == "across"
        # Once: it never reached a live connection, so the agent does not send it twice. (The
        # broker may redeliver job.running, in flight to this session when it stopped.)
        watcher.publish(ACTION, json.dumps({"id": "sentinel", "action": "jobs"}))
        watcher.wait_event(id="sentinel")
        again = [
            m.json() for m in watcher.history
            if m.topic == "camera/status" and m.json()["job"] == job
            and m.json()["event"] == "job.succeeded"
        ]  # fmt: skip
        assert not again, again
    finally:
        watcher.close()


def test_a_command_the_agent_was_killed_in_the_middle_of_is_answered_after_restart(
    broker: Broker, operator: Probe, tmp_path: Path
) -> None:
    # No MediaMTX: `stream start` waits for a stream that never comes (start_timeout_s + 5).
    env = {"CAMERA_AGENT_STREAM__START_TIMEOUT_S": "1"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", env=env), operator)
    try:
        operator.publish(ACTION, json.dumps({"id": "slow", "action": "stream", "op": "start"}))
        operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["stream"]["state"] != "stopped",
            what="the stream being started",
        )
        agent.kill()  # SIGKILL while the command runs: it was never answered
        assert not [m for m in operator.history if m.topic == "camera/status"
                    and m.json()["id"] == "slow"]  # fmt: skip
        agent.start()
        # Acknowledged only once answered, so the broker delivers it again to the new agent.
        answer = operator.wait_event(id="slow", timeout=30)
        assert answer["error"]["code"] == "stream_error", answer
    finally:
        agent.stop()


def test_command_sent_while_agent_is_down_is_delivered_at_restart(
    agent: AgentProcess, operator: Probe
) -> None:
    assert agent.stop() == 0
    operator.wait_for(lambda m: m.topic == "camera/availability" and m.payload == b"offline")
    operator.publish(SETTINGS, json.dumps({"id": "queued", "set": {"saturation": 2.5}}))
    agent.start()
    answer = operator.wait_event(id="queued", timeout=20)
    assert answer["ok"] is True
    assert answer["data"]["applied"] == {"saturation": 2.5}


def test_second_agent_with_same_certificate_logs_takeover(
    agent: AgentProcess, broker: Broker, tmp_path: Path
) -> None:
    twin = AgentProcess(broker, tmp_path / "twin")
    twin.start()
    try:
        agent.wait_for_log("session taken over", timeout=20)
        assert "each camera needs its own certificate" in agent.log_text()
        assert agent.alive()
    finally:
        twin.stop()


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "set": st.dictionaries(
                st.sampled_from(["brightness", "hue", "x", "width"]),
                st.integers() | st.text(max_size=5),
            )
        }
    ).map(lambda v: json.dumps(v).encode()),
)


def test_random_payloads_are_each_answered_and_the_agent_stays_up(
    agent: AgentProcess, operator: Probe
) -> None:
    sent: list[tuple[str, bytes]] = []

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(topic=st.sampled_from([SETTINGS, ACTION]), payload=payloads)
    def generate(topic: str, payload: bytes) -> None:
        sent.append((topic, payload))

    generate()
    answers: list[dict[str, Any]] = []
    # In bursts of 200, each answered before the next: the broker queues at most
    # max_queued_messages (1000) commands for the agent and drops what is beyond (a command is
    # acknowledged only once answered, so the queue drains at the agent's pace).
    for start in range(0, len(sent), 200):
        burst = sent[start : start + 200]
        for topic, payload in burst:
            operator.publish(topic, payload, wait=False)
        # Commands run concurrently, so answers come in any order (a payload with a repeated
        # id gets its answer again, flagged duplicate).
        answers += [
            operator.wait_for(
                lambda m: m.topic == "camera/status", timeout=30, what="an answer"
            ).json()
            for _ in burst
        ]
    operator.publish(ACTION, json.dumps({"id": "sentinel", "action": "dance"}))
    operator.wait_event(id="sentinel")
    assert not [m for m in operator.history if m.topic == "camera/status"]  # none more
    assert all({"ok", "event", "message"} <= a.keys() for a in answers)
    failures = [a for a in answers if not a["ok"]]
    assert all(a["error"]["code"] for a in failures)
    assert agent.alive()


def test_agent_stops_cleanly_while_the_broker_is_unreachable(pki_dir: Path, tmp_path: Path) -> None:
    broker = Broker(pki_dir, tmp_path / "broker")  # configured, never started
    agent = AgentProcess(broker, tmp_path / "agent")
    agent.start()
    agent.wait_for_log("cannot connect to broker")
    # 0, not -9: it stopped on SIGTERM by itself instead of being killed after the grace period.
    assert agent.stop() == 0


def test_reconnect_attempts_back_off_doubling_up_to_the_cap(pki_dir: Path, tmp_path: Path) -> None:
    # A port where something accepts and hangs up at once: each attempt is seen, and fails.
    attempts: list[float] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def hang_up_on_everyone() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            connection.close()

    threading.Thread(target=hang_up_on_everyone, daemon=True).start()
    broker = Broker(pki_dir, tmp_path / "broker", port=port)  # configured, never started
    env = {"CAMERA_AGENT_MQTT__RECONNECT_MIN_S": "0.2", "CAMERA_AGENT_MQTT__RECONNECT_MAX_S": "0.8"}
    agent = AgentProcess(broker, tmp_path / "agent", env=env)
    agent.start()
    try:
        wait_until(lambda: len(attempts) >= 6, timeout=30, what="six connection attempts")
    finally:
        agent.stop()
        server.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 0.2, 0.4, 0.8, then capped; the upper bounds leave room for the TLS handshake and a busy
    # machine.
    for gap, delay in zip(gaps, (0.2, 0.4, 0.8, 0.8, 0.8), strict=False):
        assert delay <= gap < delay + 0.5, (gaps, delay)
    assert agent.log_text().count("cannot connect to broker") == 1  # once per outage


def test_forty_slow_commands_do_not_hold_a_quick_one_at_the_broker(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> None:
    """40 `stream start`s wait for a MediaMTX that is down (each holds its command unacknowledged
    until it is answered, so that a crash redelivers it); a `settings` sent after them is still
    delivered and answered before any of them. Mosquitto's default window of 20 unacknowledged
    messages per client held it until the 21st slow one gave up."""
    env = {"CAMERA_AGENT_STREAM__START_TIMEOUT_S": "30"}
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        media.stop()
        operator.wait_event(event="stream.down", timeout=15)
        for n in range(40):
            command = {"id": f"slow-{n}", "action": "stream", "op": "start"}
            operator.publish("camera/control/action", json.dumps(command), wait=False)
        sent = time.monotonic()
        operator.publish(
            "camera/control/settings", json.dumps({"id": "quick", "set": {"brightness": 0.2}})
        )
        answer = operator.wait_event(id="quick", timeout=25)
        latency = time.monotonic() - sent
        assert answer["ok"] is True, answer
        slow_answers = [
            m for m in operator.history if m.topic == "camera/status"
            and str(m.json().get("id", "")).startswith("slow-")
        ]  # fmt: skip
        assert slow_answers == [], f"the quick answer came {latency:.2f} s after, behind them"
        print(f"settings answered {latency * 1000:.0f} ms after 40 slow commands")
    finally:
        agent.stop()


def test_a_watch_on_a_socket_closed_meanwhile_is_a_warning_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiomqtt's race at a broker restart (quiet_closed_socket_races): add_writer scheduled for
    a socket that closes before it runs. Anything else still reaches the loop's handler."""

    async def race() -> None:
        loop = asyncio.get_running_loop()
        quiet_closed_socket_races(loop)
        sock = socket.socket()
        fd = sock.fileno()
        loop.call_soon_threadsafe(loop.add_writer, fd, lambda: None)
        sock.close()  # the broker dropped the connection in between
        loop.call_soon(lambda: 1 / 0)  # a real fault, for the usual handler
        await asyncio.sleep(0.05)

    with caplog.at_level(logging.WARNING):
        asyncio.run(race())
    assert "watched a socket that had just closed" in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ZeroDivisionError" in str(errors[0].exc_info), caplog.text

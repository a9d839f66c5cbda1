"""Fixtures: one PKI per session (made by our camera-pki), a fresh real broker per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from devstack import Broker, ConsoleService, MediaServer, WebServer

from pki.authority import CertificateAuthority, Role
from tests import contract
from tests.pod_images import build_pod_images, sandbox_env
from tests.support import AgentProcess, Probe


@pytest.fixture(autouse=True)
def keeps_the_contract() -> Iterator[None]:
    """Every message a probe received on a channel of docs/asyncapi.yaml was valid for it."""
    contract.reset()
    yield
    violations = contract.take_violations()
    assert not violations, "messages that break docs/asyncapi.yaml:\n" + "\n".join(violations[:20])


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    assert ca.init()
    ca.issue("viewer", Role.VIEWER)
    ca.issue("cli", Role.OPERATOR)  # for the command-line clients, beside the `operator` probe
    ca.issue("cam-a", Role.AGENT, camera="a")
    ca.issue("cam-b", Role.AGENT, camera="b")
    ca.issue("viewer-b", Role.VIEWER, camera="b")  # a viewer of another camera only
    ca.issue("viewer-here", Role.VIEWER, base_topic="camera")  # of this camera only
    ca.issue("homeassistant", Role.OPERATOR)  # what Home Assistant connects as
    ca.issue("console", Role.CONSOLE)  # the browser console's service
    return directory


@pytest.fixture
def broker(pki_dir: Path, tmp_path: Path) -> Iterator[Broker]:
    server = Broker(pki_dir, tmp_path / "broker")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def operator(broker: Broker) -> Iterator[Probe]:
    probe = Probe(broker, "operator")
    probe.subscribe("camera/#")
    yield probe
    probe.close()
    # Every error the agent reports on purpose has a documented code: an internal_error is a
    # bug the test found, whatever the test itself asserted.
    internal = [
        m.payload.decode(errors="replace") for m in probe.history
        if m.topic.endswith("/status") and b'"internal_error"' in m.payload
    ]  # fmt: skip
    assert not internal, f"the agent answered internal_error: {internal}"


@pytest.fixture
def agent(broker: Broker, operator: Probe, tmp_path: Path) -> Iterator[AgentProcess]:
    """A running agent whose `online` the operator has seen (so its state is published)."""
    process = start_agent(AgentProcess(broker, tmp_path / "agent"), operator)
    yield process
    process.stop()


@pytest.fixture
def media(pki_dir: Path, tmp_path: Path) -> Iterator[MediaServer]:
    server = MediaServer(tmp_path / "mediamtx", pki_dir=pki_dir)
    server.start()
    yield server
    server.stop()


def start_agent(process: AgentProcess, operator: Probe) -> AgentProcess:
    process.start()
    try:
        operator.wait_for(
            lambda m: m.topic == "camera/availability" and m.payload == b"online",
            what="agent online",
        )
    except AssertionError:
        process.stop()
        raise AssertionError(f"agent did not come online; log:\n{process.log_text()}") from None
    return process


@pytest.fixture
def streaming_agent(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> Iterator[AgentProcess]:
    """An agent publishing the test pattern into MediaMTX; its stream is online."""
    # Fast restarts, so that tests of crash loops finish in seconds.
    env = {
        "CAMERA_AGENT_STREAM__RESTART_MIN_S": "0.05",
        "CAMERA_AGENT_STREAM__RESTART_MAX_S": "0.4",
    }
    process = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, env=env), operator)
    operator.wait_event(event="stream.online", timeout=15)
    yield process
    process.stop()


@pytest.fixture
def web(pki_dir: Path, tmp_path: Path) -> Iterator[WebServer]:
    """nginx serving the captures of the agent that the fixtures below start in tmp/agent."""
    server = WebServer(pki_dir, tmp_path / "agent" / "captures", tmp_path / "web")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served_agent(
    broker: Broker, media: MediaServer, web: WebServer, operator: Probe, tmp_path: Path
) -> Iterator[AgentProcess]:
    """A streaming agent whose storage.public_url is the nginx above."""
    agent = start_agent(AgentProcess(broker, tmp_path / "agent", media=media, web=web), operator)
    operator.wait_event(event="stream.online", timeout=15)
    yield agent
    agent.stop()


@dataclass
class Console:
    broker: Broker
    media: MediaServer
    web: WebServer
    service: ConsoleService
    agent: AgentProcess

    @property
    def origin(self) -> str:
        return self.web.url.rstrip("/")


@pytest.fixture
def console(
    broker: Broker, media: MediaServer, operator: Probe, tmp_path: Path
) -> Iterator[Console]:
    """The pod's five pieces natively: broker, MediaMTX, nginx, the console service and a
    streaming agent whose captures nginx serves."""
    web = WebServer(broker.pki_dir, tmp_path / "agent" / "captures", tmp_path / "web", media=media)
    web.start()
    service = ConsoleService(broker, web, tmp_path / "console")
    service.start()
    # A short keep-alive, so that a killed agent's will fires within seconds.
    agent = AgentProcess(
        broker, tmp_path / "agent", media=media, web=web,
        env={"CAMERA_AGENT_MQTT__KEEPALIVE_S": "5"},
    )  # fmt: skip
    start_agent(agent, operator)
    operator.wait_event(event="stream.online", timeout=15)
    yield Console(broker, media, web, service, agent)
    agent.stop()
    service.stop()
    web.stop()


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment every podman call of the tests runs in (tests/pod_images.py)."""
    return sandbox_env(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def images(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Our five images for this machine (amd64), under the names the pod files use."""
    build_pod_images(podman_env, tmp_path_factory.mktemp("images"), ["amd64"])

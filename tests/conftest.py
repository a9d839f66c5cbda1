"""Fixtures: one PKI per session (made by our camera-pki), a fresh real broker per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import Broker

from pki.authority import CertificateAuthority, Role
from tests.support import AgentProcess, Probe


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    assert ca.init()
    ca.issue("viewer", Role.VIEWER)
    ca.issue("cli", Role.OPERATOR)  # for the command-line clients, beside the `operator` probe
    ca.issue("cam-a", Role.AGENT, camera="a")
    ca.issue("cam-b", Role.AGENT, camera="b")
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


@pytest.fixture
def agent(broker: Broker, operator: Probe, tmp_path: Path) -> Iterator[AgentProcess]:
    """A running agent whose `online` the operator has seen (so its state is published)."""
    process = AgentProcess(broker, tmp_path / "agent")
    process.start()
    try:
        operator.wait_for(
            lambda m: m.topic == "camera/availability" and m.payload == b"online",
            what="agent online",
        )
    except AssertionError:
        process.stop()
        raise AssertionError(f"agent did not come online; log:\n{process.log_text()}") from None
    yield process
    process.stop()

"""A site bridged to a central broker: two real Mosquitto brokers with the shipped config, the
site's with the snippet `camera-pki bridge` wrote in its include_dir, two real agents at the site
and a fleet-wide operator at the centre. Commands and answers cross the bridge; a command sent
while the link is cut for 10 s runs once when it returns, and what the site reported meanwhile
arrives too; neither a site's agent nor another site's bridge can publish into, or read, a
site's cameras. Slow: the bridge's reconnect back-off is seconds."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from devstack import Broker, free_port

from pki.authority import CertificateAuthority, Role
from pki.cli import main as camera_pki
from tests.support import AgentProcess, Probe, answers, camera_agent_env, is_online, settle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SITE_CAMERAS = ["site-a-cam1", "site-a-cam2"]
CUT_S = 10.0
RECONNECT_S = 60.0  # restart_timeout 2 30: back-off with jitter, capped at 30 s


class CuttableLink:
    """A TCP relay between the site's bridge and the central broker that can be cut: the
    network between two places, which is what fails in the field (neither broker restarts)."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.upstream = upstream_port  # the broker behind it (a test may swap it)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.connections = 0
        self.resume()

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break the open ones, as a dead uplink does."""
        assert self._listener is not None
        # shutdown first: close alone leaves a thread blocked in accept() accepting.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._listener is not None:
            self.cut()


def bridged_site(pki: Path, tmp_path: Path, name: str, link: CuttableLink) -> Broker:
    """Site ``name``'s broker, started, with the snippet as `camera-pki bridge` writes it,
    pointed at ``link``, with local PKI paths."""
    site = Broker(pki, tmp_path / name)
    assert camera_pki(["bridge", str(pki), name, "--central", f"{link.host}:{link.port}",
                       "--certs-dir", str(pki)]) == 0  # fmt: skip
    site.conf_d.mkdir(parents=True, exist_ok=True)
    (site.conf_d / f"{name}.conf").write_bytes((pki / "bridges" / f"{name}.conf").read_bytes())
    site.start()
    return site


@dataclass
class Sites:
    central: Broker
    site: Broker
    link: CuttableLink
    agents: dict[str, AgentProcess]


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    ca.issue("site-a", Role.BRIDGE)
    ca.issue("site-b", Role.BRIDGE)
    for camera in [*SITE_CAMERAS, "site-a-cam3", "site-b-cam1"]:
        ca.issue(camera, Role.AGENT, camera=camera)
    central = Broker(pki, tmp_path / "central")
    central.start()
    link = CuttableLink(central.port)
    site = bridged_site(pki, tmp_path, "site-a", link)
    agents = {
        camera: AgentProcess(site, tmp_path / camera, env=camera_agent_env(pki, camera))
        for camera in SITE_CAMERAS
    }
    try:
        for agent in agents.values():
            agent.start()
        yield Sites(central, site, link, agents)
    finally:
        for agent in agents.values():
            agent.stop()
        site.stop()
        link.close()
        central.stop()


def test_commands_and_answers_cross_the_bridge_and_survive_a_cut(sites: Sites) -> None:
    operator = Probe(sites.central, "operator")  # at the centre: every camera of every site
    try:
        operator.subscribe("camera/#")
        for camera in SITE_CAMERAS:  # retained at the site, carried retained to the centre
            operator.wait_for(
                is_online(camera),
                timeout=RECONNECT_S,
                what=f"{camera} online at the centre",
            )

        # Home Assistant at the centre finds the site's cameras: their discovery configs cross.
        operator.subscribe("homeassistant/+/site-a-cam1/+/config")
        config = operator.wait_for(
            lambda m: m.topic.startswith("homeassistant/") and m.retain,
            timeout=RECONNECT_S,
            what="a discovery config of site-a-cam1 at the centre",
        )
        assert config.json()["device"]["identifiers"]

        # Commands go in, answers come out, each camera answering its own.
        for n, camera in enumerate(SITE_CAMERAS, 1):
            command = {"id": f"via-bridge-{n}", "set": {"brightness": n / 10}}
            operator.publish(f"camera/{camera}/control/settings", json.dumps(command))
        for n, camera in enumerate(SITE_CAMERAS, 1):
            answer = operator.wait_for(answers(f"via-bridge-{n}"), what=f"{camera}'s answer")
            assert answer.topic == f"camera/{camera}/status"
            assert answer.json()["data"]["applied"] == {"brightness": n / 10}

        # The uplink dies for 10 s. A command sent at the centre meanwhile waits there, in the
        # bridge's session; what the site reports meanwhile waits at the site.
        connections = sites.link.connections
        sites.link.cut()
        operator.publish(
            "camera/site-a-cam1/control/settings", '{"id": "while-cut", "set": {"contrast": 1.3}}'
        )
        local = Probe(sites.site, "operator")  # someone on site, on the site's broker
        try:
            local.subscribe("camera/site-a-cam2/status")
            local.publish(
                "camera/site-a-cam2/control/settings", '{"id": "on-site", "set": {"hue": 0.1}}'
            )
            local.wait_for(answers("on-site"), what="the on-site answer, at the site")
        finally:
            local.close()
        time.sleep(CUT_S)  # the outage itself is what is tested
        assert not [m for m in settle(operator, 0.1) if answers("while-cut")(m)]
        sites.link.resume()

        answer = operator.wait_for(answers("while-cut"), timeout=RECONNECT_S, what="queued answer")
        assert sites.link.connections > connections  # it came over a new connection
        body = answer.json()
        assert body["data"]["applied"] == {"contrast": 1.3} and not body.get("duplicate")
        on_site = operator.wait_for(answers("on-site"), what="the site's report from the outage")
        assert on_site.topic == "camera/site-a-cam2/status"
        # Once: no second execution, no repeated answer.
        again = [m for m in settle(operator, 3.0) if answers("while-cut")(m)]
        assert again == []
        assert all(agent.alive() for agent in sites.agents.values())
    finally:
        operator.close()


def test_a_site_cannot_reach_into_another_sites_cameras(sites: Sites) -> None:
    operator = Probe(sites.central, "operator")
    rogue_bridge = Probe(sites.central, "site-b")  # another site's bridge identity, at the centre
    site_agent = Probe(sites.site, "site-a-cam3")  # an agent of site a, at its own broker
    try:
        operator.subscribe("camera/#")
        operator.wait_for(
            is_online("site-a-cam1"),
            timeout=RECONNECT_S,
            what="site a online at the centre",
        )
        rogue_bridge.subscribe("camera/site-a-cam1/#")
        # Site b's bridge plants a report of, and a command for, a site a camera.
        rogue_bridge.publish("camera/site-a-cam1/status", '{"planted": "by-site-b"}')
        rogue_bridge.publish(
            "camera/site-a-cam1/control/settings", '{"id": "hijack-b", "set": {"hue": 0.5}}'
        )
        # Site a's own agent plants a report of site b's camera; the bridge must not carry it.
        site_agent.publish("camera/site-b-cam1/status", '{"planted": "by-site-a"}')
        site_agent.publish("camera/site-b-cam1/availability", "online")
        # A command of the operator's: its answer proves the earlier messages had their chance.
        operator.publish("camera/site-a-cam1/control/action", '{"id": "probe", "action": "jobs"}')
        operator.wait_for(answers("probe"), what="site a's answer")
        seen = settle(operator, 2.0)
        assert not [m for m in seen if b"planted" in m.payload or b"hijack" in m.payload]
        assert not [m for m in seen if m.topic.startswith("camera/site-b-")]
        # Site b's bridge read nothing of site a: not the answer, not the command.
        assert settle(rogue_bridge, 0.5) == []
    finally:
        for probe in (operator, rogue_bridge, site_agent):
            probe.close()


def test_a_command_queued_for_a_cut_site_survives_a_central_restart(sites: Sites) -> None:
    """The centre restarts while a site is cut off and a command waits for it: Mosquitto's
    persistence keeps the bridge's session and the command, which runs once when the site
    returns."""
    operator = Probe(sites.central, "operator", session_expiry_s=600)
    try:
        operator.subscribe("camera/#")
        operator.wait_for(
            is_online("site-a-cam2"),
            timeout=RECONNECT_S,
            what="site a online at the centre",
        )
        sites.link.cut()
        operator.publish(
            "camera/site-a-cam2/control/settings", '{"id": "held", "set": {"saturation": 1.4}}'
        )
        sites.central.restart()  # SIGTERM: Mosquitto writes its persistence file on the way out
        sites.link.resume()
        answer = operator.wait_for(answers("held"), timeout=RECONNECT_S, what="the held command")
        assert answer.json()["data"]["applied"] == {"saturation": 1.4}
        assert not [m for m in settle(operator, 3.0) if answers("held")(m)]
    finally:
        operator.close()


def test_a_sites_certificate_cannot_pose_as_the_centre(tmp_path: Path) -> None:
    """Per-server certificates: site b's bridge addresses the centre by a name (here the address
    127.0.0.2) that only the centre's own certificate carries. A broker presenting site a's
    certificate at that address is refused, and what site b reports never reaches it; the
    real centre at the same address is accepted, and the report arrives there."""
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    ca.issue_server("central", dns=["central.example.org"], ips=["127.0.0.2"])
    ca.issue_server("site-a", dns=["site-a.example.org"])
    ca.issue("site-b", Role.BRIDGE)
    ca.issue("site-b-cam1", Role.AGENT, camera="site-b-cam1")
    central = Broker(pki, tmp_path / "central", server_dir=ca.paths.server_dir("central"))
    impostor = Broker(pki, tmp_path / "impostor", server_dir=ca.paths.server_dir("site-a"))
    central.start()
    impostor.start()
    # The centre's address on the wire; behind it first the impostor, then the centre (TLS
    # runs end to end through this relay: it only carries bytes).
    address = CuttableLink(impostor.port, host="127.0.0.2")
    site = bridged_site(pki, tmp_path, "site-b", address)
    camera = Probe(site, "site-b-cam1")
    watchers = [Probe(broker, "operator") for broker in (impostor, central)]
    try:
        for watcher in watchers:
            watcher.subscribe("camera/#")
        camera.publish("camera/site-b-cam1/availability", "online")
        # The bridge tries the impostor and refuses it: the name check fails.
        deadline = time.monotonic() + 30
        while "certificate verify failed" not in site.log_text():
            assert time.monotonic() < deadline, (address.connections, site.log_text()[-2000:])
            time.sleep(0.1)
        assert address.connections >= 1
        assert [m for m in settle(watchers[0], 3.0) if "site-b-cam1" in m.topic] == []

        address.upstream = central.port
        arrived = watchers[1].wait_for(
            lambda m: m.topic == "camera/site-b-cam1/availability",
            timeout=RECONNECT_S,
            what="site b's report at the real centre",
        )
        assert arrived.payload == b"online"
    finally:
        camera.close()
        for watcher in watchers:
            watcher.close()
        site.stop()
        address.close()
        impostor.stop()
        central.stop()
    assert "as site-b" not in impostor.log_text()

"""The deployment files agree with each other and with what the services listen on; what
`scripts/pod-up` renders from them. (tests/test_pod.py runs them for real.)"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from devstack import REPO
from pod import (
    AGENT_TOML,
    COMPOSE_FILE,
    KUBE_FILE,
    KUBE_POD_DIR,
    NETWORK_COMPOSE_FILE,
    FleetPlace,
    HostPorts,
    PodUpload,
    camera_size,
    compose,
    image_tag,
    plain_rtsp_compose,
    prepare,
    render_kube,
)

from agent.config import load_config
from pki.authority import CertificateAuthority, Role
from pki.cli import main as camera_pki

QUADLET = REPO / "deploy/quadlet/camera-agent.kube"
PUBLISHED = {8883, 8322, 8888, 8889, 8189, 8443}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def mount_target(volume: str) -> str:
    """`${CAMERA_POD_DIR:-./var/pod}/agent:/etc/camera-agent:ro` -> `/etc/camera-agent`."""
    return re.sub(r"\$\{[^}]*\}", "", volume).split(":")[1]


def compose_container_ports(service: dict[str, Any]) -> set[int]:
    return {int(port.rsplit(":", 1)[1].split("/")[0]) for port in service.get("ports", [])}


def test_render_kube_moves_every_host_path_and_port() -> None:
    ports = HostPorts(bind="127.0.0.1", mqtt=1883, rtsps=1322, rtsp=1554, hls=1888,
                      webrtc=1889, webrtc_udp=1189, web=1443)  # fmt: skip
    rendered = yaml.safe_load(render_kube(Path("/data/cam"), ports))
    host_paths = [v["hostPath"]["path"] for v in rendered["spec"]["volumes"] if "hostPath" in v]
    assert host_paths and all(path.startswith("/data/cam/") for path in host_paths), host_paths
    published = {
        (port["containerPort"], port["hostPort"], port["hostIP"])
        for container in rendered["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert published == {
        (8883, 1883, "127.0.0.1"), (8322, 1322, "127.0.0.1"), (8888, 1888, "127.0.0.1"),
        (8889, 1889, "127.0.0.1"), (8189, 1189, "127.0.0.1"), (8443, 1443, "127.0.0.1"),
    }  # fmt: skip
    # Nothing else changed: the containers, images and mounts are the shipped ones.
    shipped = load(KUBE_FILE)
    for before, after in zip(
        shipped["spec"]["containers"], rendered["spec"]["containers"], strict=True
    ):
        assert before["image"] == after["image"]
        assert before["volumeMounts"] == after["volumeMounts"]


def test_the_shipped_kube_file_uses_the_default_ports_and_directory() -> None:
    defaults = HostPorts()
    for container in load(KUBE_FILE)["spec"]["containers"]:
        for port in container.get("ports", []):
            assert port["hostPort"] == defaults.host_port(port["containerPort"])
    host_paths = [
        v["hostPath"]["path"] for v in load(KUBE_FILE)["spec"]["volumes"] if "hostPath" in v
    ]
    assert host_paths and all(path.startswith(KUBE_POD_DIR + "/") for path in host_paths)


def test_pod_variants_run_the_same_images_mounts_and_ports() -> None:
    kube = {c["name"]: c for c in load(KUBE_FILE)["spec"]["containers"]}
    pod = load(COMPOSE_FILE)["services"]
    network = load(NETWORK_COMPOSE_FILE)["services"]
    assert set(kube) == set(pod) == set(network) == {
        "broker", "mediamtx", "agent", "web", "console"
    }  # fmt: skip
    for name, container in kube.items():
        # The compose files take the tag from CAMERA_IMAGE_TAG; pod-up renders it into kube.
        assert (
            pod[name]["image"]
            == network[name]["image"]
            == container["image"].replace(":latest", ":${CAMERA_IMAGE_TAG:-latest}")
        )
        in_container = {m["mountPath"] for m in container["volumeMounts"]}
        for variant in (pod, network):
            mounts = {mount_target(volume) for volume in variant[name].get("volumes", [])}
            assert mounts == in_container, (name, mounts, in_container)
    kube_ports = {p["containerPort"] for c in kube.values() for p in c.get("ports", [])}
    pod_ports = set().union(*(compose_container_ports(s) for s in pod.values()))
    network_ports = set().union(*(compose_container_ports(s) for s in network.values()))
    assert kube_ports == pod_ports == network_ports == PUBLISHED
    # In the pod the broker owns the namespace; on the network each publishes its own.
    assert all(
        pod[name]["network_mode"] == "service:broker"
        for name in ("mediamtx", "agent", "web", "console")
    )
    # nginx and the console service share the socket's volume, and no one else mounts it.
    for variant in (pod, network):
        sharing = {
            name for name, service in variant.items()
            if any(v.startswith("console-socket:") for v in service.get("volumes", []))
        }  # fmt: skip
        assert sharing == {"web", "console"}, sharing
    assert {
        name for name, c in kube.items()
        if any(m["name"] == "console-socket" for m in c["volumeMounts"])
    } == {"web", "console"}  # fmt: skip
    # nginx reads the captures the agent writes, and only reads them.
    for variant in (pod, network):
        agent_captures = next(v for v in variant["agent"]["volumes"] if "captures" in v)
        web_captures = next(v for v in variant["web"]["volumes"] if "captures" in v)
        assert web_captures.split(":")[0] == agent_captures.split(":")[0]
        assert web_captures.endswith(":ro")
    assert {"name": "captures", "mountPath": "/srv/captures", "readOnly": True} in kube["web"][
        "volumeMounts"
    ]
    assert compose_container_ports(network["broker"]) == {8883}


def test_the_services_listen_where_the_ports_are_published() -> None:
    mosquitto = (REPO / "broker/mosquitto.conf").read_text().splitlines()
    assert "listener 8883" in mosquitto
    mediamtx = yaml.safe_load((REPO / "mediamtx/mediamtx.yml").read_text())
    listening = {
        mediamtx["rtspsAddress"], mediamtx["hlsAddress"], mediamtx["webrtcAddress"],
        mediamtx["webrtcLocalUDPAddress"],
    }  # fmt: skip
    assert listening == {":8322", ":8888", ":8889", ":8189"}
    # Encrypted with the mounted server certificate; plain RTSP only beside it (the agent's
    # publish on the pod's loopback, and the opt-in below).
    assert mediamtx["rtspEncryption"] == "optional"
    assert mediamtx["hlsEncryption"] is True and mediamtx["webrtcEncryption"] is True
    for key in ("rtsp", "hls", "webrtc"):
        assert mediamtx[f"{key}ServerCert"] == "/certs/server/cert.pem"
        assert mediamtx[f"{key}ServerKey"] == "/certs/server/key.pem"
    nginx = (REPO / "web/nginx.conf").read_text()
    assert re.findall(r"^\s*listen (\S+)", nginx, re.MULTILINE) == ["8443"]


@pytest.mark.parametrize(
    ("hosts", "variant_file"),
    [({"broker": "127.0.0.1", "mediamtx": "127.0.0.1"}, COMPOSE_FILE),
     ({"broker": "broker", "mediamtx": "mediamtx"}, NETWORK_COMPOSE_FILE)],
)  # fmt: skip
def test_the_agent_config_pod_up_writes_is_valid_and_uses_the_mounts(
    hosts: dict[str, str], variant_file: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "agent.toml"
    public_url = HostPorts(bind="127.0.0.1", web=1443).captures_url
    settings_ = FleetPlace().agent_settings()
    config_file.write_text(
        AGENT_TOML.format(
            password="pw", public_url=public_url, camera_size="", **hosts, **settings_
        )
    )
    settings = load_config(config_file)
    mounts = {mount_target(v) for v in load(variant_file)["services"]["agent"]["volumes"]}
    for path in (settings.mqtt.ca, settings.mqtt.cert, settings.mqtt.key):
        assert any(str(path).startswith(mount + "/") for mount in mounts), path
    assert str(settings.storage.captures_dir) in mounts
    assert str(settings.storage.state_dir) in mounts
    assert settings.mqtt.host == hosts["broker"]
    assert settings.stream.url.startswith(f"rtsp://{hosts['mediamtx']}:8554/")
    assert settings.storage.public_url == "https://127.0.0.1:1443/captures/"


def test_host_ports_from_the_environment_are_checked() -> None:
    ports = HostPorts.from_environment({"CAMERA_MQTT_PORT": "18883", "CAMERA_POD_BIND": "::1"})
    assert (ports.mqtt, ports.rtsp, ports.bind) == (18883, 8554, "::1")
    assert ports.captures_url == "https://[::1]:8443/captures/"
    with pytest.raises(SystemExit, match="CAMERA_RTSP_PORT='70000' is not a port number"):
        HostPorts.from_environment({"CAMERA_RTSP_PORT": "70000"})
    with pytest.raises(SystemExit, match="CAMERA_PLAIN_RTSP='yes': say 1"):
        HostPorts.from_environment({"CAMERA_PLAIN_RTSP": "yes"})
    assert HostPorts.from_environment({"CAMERA_PLAIN_RTSP": "1"}).plain_rtsp
    assert not ports.plain_rtsp
    with pytest.raises(SystemExit, match="CAMERA_MQTT_PORT='x' is not a port number"):
        HostPorts.from_environment({"CAMERA_MQTT_PORT": "x"})


def test_the_quadlet_unit_plays_the_manifest_pod_up_renders() -> None:
    unit = configparser.ConfigParser(strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(QUADLET.read_text())
    assert unit["Kube"]["Yaml"] == f"{KUBE_POD_DIR}/kube.yaml"
    assert unit["Service"]["Restart"] == "always"
    assert "default.target" in unit["Install"]["WantedBy"]


def test_pod_up_makes_a_fleet_camera_and_bridges_its_site(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    ca.issue("farm-gate", Role.AGENT, camera="farm-gate")
    ca.issue("farm", Role.BRIDGE)
    place = FleetPlace(camera="farm-gate", site="farm")
    with pytest.raises(SystemExit, match="camera-pki bridge"):
        prepare(tmp_path, place=place)  # the snippet has not been written yet
    assert camera_pki(["bridge", str(pki), "farm", "--central", "central.example.org:8883"]) == 0
    prepare(tmp_path, place=place)
    settings = load_config(tmp_path / "agent" / "agent.toml")
    assert settings.mqtt.base_topic == "camera/farm-gate" and settings.camera.id == "farm-gate"
    assert settings.mqtt.cert == Path("/etc/camera-agent/pki/clients/farm-gate/cert.pem")
    assert (tmp_path / "agent/pki/clients/farm-gate/key.pem").stat().st_mode & 0o777 == 0o400
    snippet = (tmp_path / "broker-conf.d" / "farm.conf").read_text()
    assert snippet == (pki / "bridges" / "farm.conf").read_text()
    # The snippet's certificate paths are where the broker container sees its directory.
    for line in snippet.splitlines():
        if line.startswith(("bridge_certfile", "bridge_keyfile", "bridge_cafile")):
            path = line.split()[1].removeprefix("/mosquitto/certs/")
            assert (tmp_path / "broker" / path).is_file(), line
    # Without CAMERA_SITE the broker stops bridging; an unknown camera is a clear error.
    prepare(tmp_path, place=FleetPlace(camera="farm-gate"))
    assert list((tmp_path / "broker-conf.d").iterdir()) == []
    with pytest.raises(SystemExit, match="camera-pki issue"):
        prepare(tmp_path, place=FleetPlace(camera="farm-shed"))


def test_the_image_tag_and_camera_size_come_from_the_environment(tmp_path: Path) -> None:
    assert image_tag({}) == "latest"
    assert image_tag({"CAMERA_IMAGE_TAG": "latest-arm64"}) == "latest-arm64"
    with pytest.raises(SystemExit, match="is not an image tag"):
        image_tag({"CAMERA_IMAGE_TAG": "a b"})
    rendered = yaml.safe_load(render_kube(tmp_path, HostPorts(), "latest-arm64"))
    images = {c["image"] for c in rendered["spec"]["containers"]}
    assert images == {f"localhost/camera-{name}:latest-arm64"
                      for name in ("broker", "mediamtx", "agent", "web", "console")}  # fmt: skip
    assert camera_size({}) == ""
    size = camera_size({"CAMERA_WIDTH": "320", "CAMERA_HEIGHT": "240", "CAMERA_FPS": "5"})
    assert size == "width = 320\nheight = 240\nfps = 5\n"
    with pytest.raises(SystemExit, match="CAMERA_FPS='fast' is not a whole number"):
        camera_size({"CAMERA_FPS": "fast"})
    # The agent reads them as its [camera] settings.
    prepare(tmp_path / "pod", size=size)
    config = load_config(tmp_path / "pod/agent/agent.toml")
    assert (config.camera.width, config.camera.height, config.camera.fps) == (320, 240, 5)


def test_plain_rtsp_is_the_pods_own_unless_asked_for(tmp_path: Path) -> None:
    """By default MediaMTX's plain RTSP listens on the pod's loopback (the agent's publish) and
    no variant publishes it; CAMERA_PLAIN_RTSP=1 opens and publishes it."""
    prepare(tmp_path / "closed")
    closed = yaml.safe_load((tmp_path / "closed/mediamtx/mediamtx.yml").read_text())
    assert closed["rtspAddress"] == "127.0.0.1:8554"
    assert (tmp_path / "closed/mediamtx/certs/server/key.pem").stat().st_mode & 0o777 == 0o400
    assert plain_rtsp_compose(tmp_path / "closed", HostPorts(), network=False) is None
    kube = yaml.safe_load(render_kube(tmp_path, HostPorts()))
    assert 8554 not in {p["containerPort"] for c in kube["spec"]["containers"]
                        for p in c.get("ports", [])}  # fmt: skip

    opened = HostPorts(bind="127.0.0.1", rtsp=1554, plain_rtsp=True)
    prepare(tmp_path / "open", opened)
    assert (
        yaml.safe_load((tmp_path / "open/mediamtx/mediamtx.yml").read_text())["rtspAddress"]
        == ":8554"
    )
    for network, service in ((False, "broker"), (True, "mediamtx")):
        override = plain_rtsp_compose(tmp_path / "open", opened, network)
        assert override is not None
        assert load(override)["services"] == {service: {"ports": ["127.0.0.1:1554:8554"]}}
        command = compose(network, override)
        assert command[-2:] == ["-f", str(override)]
    kube = yaml.safe_load(render_kube(tmp_path, opened))
    mediamtx = next(c for c in kube["spec"]["containers"] if c["name"] == "mediamtx")
    assert {"containerPort": 8554, "protocol": "TCP", "hostPort": 1554,
            "hostIP": "127.0.0.1"} in mediamtx["ports"]  # fmt: skip


def test_camera_server_gives_the_pod_its_own_server_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    with pytest.raises(SystemExit, match=r"camera-pki issue .* farm-pod --role server"):
        prepare(tmp_path, place=FleetPlace(server="farm-pod"))
    ca.issue_server("farm-pod", dns=["farm.example.org"])
    prepare(tmp_path, place=FleetPlace(server="farm-pod"))
    own = (pki / "servers/farm-pod/cert.pem").read_bytes()
    for served in ("broker/server", "web/server", "mediamtx/certs/server"):
        assert (tmp_path / served / "cert.pem").read_bytes() == own, served
        key = tmp_path / served / "key.pem"
        assert key.read_bytes() == (pki / "servers/farm-pod/key.pem").read_bytes()
        assert key.stat().st_mode & 0o777 == 0o400
    # A site left on the shared server/ certificate is told so.
    ca.issue("farm", Role.BRIDGE)
    assert camera_pki(["bridge", str(pki), "farm", "--central", "hub.example.org:8883"]) == 0
    capsys.readouterr()
    prepare(tmp_path, place=FleetPlace(site="farm"))
    assert "presents the shared server/ certificate" in capsys.readouterr().err
    assert (tmp_path / "broker/server/cert.pem").read_bytes() == (
        pki / "server/cert.pem"
    ).read_bytes()


def test_camera_upload_gives_the_pods_agent_its_upload_settings_and_keys(tmp_path: Path) -> None:
    """CAMERA_UPLOAD_CONFIG and CAMERA_UPLOAD_CREDENTIALS: the agent's config gains the
    [upload] table, and the key pair file lands beside it, readable by the agent only."""
    settings = tmp_path / "upload.toml"
    settings.write_text(
        '[upload]\nendpoint = "https://s3.example.org"\nbucket = "farm-captures"\n'
        'kinds = ["pictures", "timelapse"]\nmax_kbit_s = 2000\nthen = "delete_after_days 7"\n'
        'ca_file = "store-ca.pem"\n'
    )
    (tmp_path / "store-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n(the store's CA)\n")
    keys = tmp_path / "keys"
    keys.write_text("AWS_ACCESS_KEY_ID=AKEXAMPLE\nAWS_SECRET_ACCESS_KEY=secret\n")
    upload = PodUpload.from_environment(
        {"CAMERA_UPLOAD_CONFIG": str(settings), "CAMERA_UPLOAD_CREDENTIALS": str(keys)}
    )
    assert upload is not None
    prepare(tmp_path / "pod", upload=upload)
    for name in ("agent.toml", "agent-network.toml"):
        config = load_config(tmp_path / "pod/agent" / name).upload
        assert config.enabled and config.bucket == "farm-captures"
        assert config.kinds == ["pictures", "timelapse"] and config.max_kbit_s == 2000
        assert config.delete_after_days == 7
        assert str(config.credentials_file) == "/etc/camera-agent/s3-credentials"
        assert str(config.ca_file) == "/etc/camera-agent/store-ca.pem"
    assert (tmp_path / "pod/agent/store-ca.pem").read_text().endswith("(the store's CA)\n")
    copied = tmp_path / "pod/agent/s3-credentials"
    assert copied.read_text() == keys.read_text()
    assert copied.stat().st_mode & 0o777 == 0o400
    # Without them the next pod-up leaves uploads off and the keys gone.
    prepare(tmp_path / "pod")
    assert not load_config(tmp_path / "pod/agent/agent.toml").upload.enabled
    assert not copied.exists()
    # Wrong settings are named before anything starts.
    settings.write_text('[upload]\nbucket = "Bad_Bucket"\n')
    with pytest.raises(SystemExit, match=r"upload\.bucket: String should match pattern"):
        prepare(tmp_path / "pod", upload=upload)
    with pytest.raises(SystemExit, match="go together"):
        PodUpload.from_environment({"CAMERA_UPLOAD_CONFIG": str(settings)})

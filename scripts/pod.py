"""`scripts/pod-up` and `scripts/pod-down`: camera-agent as a Podman pod in one command.

pod-up creates the PKI and the stream passwords if missing, gives each service a directory with
only what it needs (the broker the CA chain, CRL, its certificate, key and ACL; nginx the same
without the ACL; the agent the CA chain, its own certificate and key and its config; MediaMTX
its config with the password hashes), builds the images that are missing, starts the pod with
podman-compose (default) or `podman kube play` (`--kube`), or the services on a private network
instead of in a pod (`--network`), and waits until the agent reports healthy.

Keys are made readable by the uid the service runs as (through `podman unshare` when Podman is
rootless). Host address and ports come from the environment: CAMERA_POD_BIND (default
0.0.0.0), CAMERA_MQTT_PORT, CAMERA_RTSPS_PORT, CAMERA_HLS_PORT, CAMERA_WEBRTC_PORT,
CAMERA_WEBRTC_UDP_PORT, CAMERA_WEB_PORT; plain RTSP only with CAMERA_PLAIN_RTSP=1, on
CAMERA_RTSP_PORT. CAMERA_SERVER names the server certificate (`servers/NAME`). CAMERA_WIDTH,
CAMERA_HEIGHT and CAMERA_FPS set the camera's starting size and rate (a Pi Zero, an emulated
arm64 run); CAMERA_IMAGE_TAG the images' tag (default latest: the manifest lists
scripts/build-images makes, so any architecture). CAMERA_UPLOAD_CONFIG (a TOML file with an
[upload] table) and CAMERA_UPLOAD_CREDENTIALS (the camera's S3 key pair, `AWS_ACCESS_KEY_ID=`
and `AWS_SECRET_ACCESS_KEY=` lines) turn on uploads to an S3 store (README, "Uploads").

In a fleet (README, "Fleets"), the pod's PKI directory holds a copy of the fleet's PKI, and
CAMERA_ID=<camera> makes the agent that camera (its identity `clients/<camera>`, topic base
`camera/<camera>`); CAMERA_SITE=<site> bridges the pod's broker to the central one with the
snippet `camera-pki bridge` wrote (`pki/bridges/<site>.conf`) and the site's bridge certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from devstack import (
    REPO,
    StreamCredentials,
    prepare_pki,
    render_mediamtx_config,
    stream_authorization,
)
from pydantic import ValidationError

from agent.config import UploadSettings

BROKER_UID = 1883  # the official eclipse-mosquitto image's user
AGENT_UID = 1000  # the agent image's `camera` user
WEB_UID = 101  # the official nginx image's user
CONSOLE_UID = 1001  # the console image's `console` user
COMPOSE_FILE = REPO / "podman-compose.yml"
NETWORK_COMPOSE_FILE = REPO / "deploy/podman-compose.network.yml"
KUBE_FILE = REPO / "deploy/kube.yaml"
KUBE_POD_DIR = "/srv/camera-agent"  # the directory deploy/kube.yaml names
PROJECT = "camera-agent"  # compose project and kube pod name
# Debian bookworm ships podman-compose 1.0.3, which cannot share a network namespace
# (`network_mode: service:`); 1.0.6 is the first that can. This one is run through uv instead.
PINNED_PODMAN_COMPOSE = "podman-compose==1.5.0"
HEALTHY_WITHIN_S = 90.0

# image -> (build context, Containerfile), as podman-compose.yml builds them
IMAGES = {
    "localhost/camera-broker:latest": (REPO / "broker", REPO / "broker/Containerfile"),
    "localhost/camera-mediamtx:latest": (REPO / "mediamtx", REPO / "mediamtx/Containerfile"),
    "localhost/camera-agent:latest": (REPO, REPO / "Containerfile"),
    "localhost/camera-web:latest": (REPO, REPO / "web/Containerfile"),
    "localhost/camera-console:latest": (REPO, REPO / "console/Containerfile"),
}

CONSOLE_TOML = """\
[mqtt]
host = "{broker}"
port = 8883
ca = "/etc/camera-console/pki/ca_chain.pem"
cert = "/etc/camera-console/pki/clients/console/cert.pem"
key = "/etc/camera-console/pki/clients/console/key.pem"

[console]
socket = "/run/camera-console/console.sock"
"""

# In the pod the services share localhost; on a network they have names.
AGENT_TOML = """\
[mqtt]
host = "{broker}"
port = 8883
ca = "/etc/camera-agent/pki/ca_chain.pem"
cert = "/etc/camera-agent/pki/clients/{identity}/cert.pem"
key = "/etc/camera-agent/pki/clients/{identity}/key.pem"
base_topic = "{base_topic}"

[camera]
id = "{camera}"
{camera_size}
[stream]
url = "rtsp://{mediamtx}:8554/cam"
api_url = "http://{mediamtx}:9997"
playback_url = "http://{mediamtx}:9996"
username = "agent"
password = "{password}"

[storage]
captures_dir = "/var/lib/camera-agent/captures"
state_dir = "/var/lib/camera-agent/state"
public_url = "{public_url}"
"""


@dataclass(frozen=True)
class HostPorts:
    """Where the pod's services are published on the host."""

    bind: str = "0.0.0.0"  # noqa: S104 - a camera is watched from other machines
    mqtt: int = 8883
    rtsps: int = 8322
    rtsp: int = 8554  # plain RTSP, published only with `plain_rtsp`
    hls: int = 8888
    webrtc: int = 8889
    webrtc_udp: int = 8189
    web: int = 8443
    # CAMERA_PLAIN_RTSP=1: plain RTSP for LAN players that cannot do RTSPS (off: the pod's
    # loopback only, where the agent publishes).
    plain_rtsp: bool = False

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> HostPorts:
        defaults = cls()

        def port(name: str, default: int) -> int:
            value = environ.get(name, str(default))
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise SystemExit(f"pod-up: {name}={value!r} is not a port number (1-65535)")
            return int(value)

        return cls(
            bind=environ.get("CAMERA_POD_BIND", defaults.bind),
            mqtt=port("CAMERA_MQTT_PORT", defaults.mqtt),
            rtsps=port("CAMERA_RTSPS_PORT", defaults.rtsps),
            rtsp=port("CAMERA_RTSP_PORT", defaults.rtsp),
            hls=port("CAMERA_HLS_PORT", defaults.hls),
            webrtc=port("CAMERA_WEBRTC_PORT", defaults.webrtc),
            webrtc_udp=port("CAMERA_WEBRTC_UDP_PORT", defaults.webrtc_udp),
            web=port("CAMERA_WEB_PORT", defaults.web),
            plain_rtsp=plain_rtsp_from(environ),
        )

    def host_port(self, container_port: int) -> int:
        """The host port for one of the pod's container ports."""
        return {
            8883: self.mqtt, 8322: self.rtsps, 8554: self.rtsp, 8888: self.hls,
            8889: self.webrtc, 8189: self.webrtc_udp, 8443: self.web,
        }[container_port]  # fmt: skip

    @property
    def host(self) -> str:
        """The name clients reach the published ports by: the bind address, or this machine's
        name (which `camera-pki init` puts in the server certificate) when bound to all."""
        if self.bind in {"0.0.0.0", "::", ""}:  # noqa: S104
            return socket.gethostname().lower()
        return f"[{self.bind}]" if ":" in self.bind else self.bind

    @property
    def captures_url(self) -> str:
        return f"https://{self.host}:{self.web}/captures/"


def plain_rtsp_from(environ: dict[str, str]) -> bool:
    value = environ.get("CAMERA_PLAIN_RTSP", "")
    if value not in {"", "0", "1"}:
        raise SystemExit(f"pod-up: CAMERA_PLAIN_RTSP={value!r}: say 1 (publish plain RTSP) or 0")
    return value == "1"


def _chown(path: Path, uid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    else:  # rootless: uids inside the containers map onto the user's subordinate range
        subprocess.run(["podman", "unshare", "chown", f"{uid}:{uid}", str(path)], check=True)


def _copy(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


@dataclass(frozen=True)
class FleetPlace:
    """Which camera of a fleet this pod's agent is, which site's bridge its broker runs and
    which server certificate its servers present (CAMERA_ID, CAMERA_SITE, CAMERA_SERVER);
    none: the single camera `cam` of `camera-pki init`, with its `server/`."""

    camera: str | None = None
    site: str | None = None
    server: str | None = None  # `camera-pki issue NAME --role server`: servers/NAME

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> FleetPlace:
        return cls(
            environ.get("CAMERA_ID") or None,
            environ.get("CAMERA_SITE") or None,
            environ.get("CAMERA_SERVER") or None,
        )

    def server_dir(self, pki: Path) -> Path:
        """The certificate and key the pod's broker, nginx and MediaMTX present."""
        if self.server is None:
            if self.site is not None:
                print(
                    f"pod-up: warning: site {self.site} presents the shared server/"
                    " certificate; give it its own (`camera-pki issue DIR NAME --role server"
                    " --dns HOST`, then CAMERA_SERVER=NAME)",
                    file=sys.stderr,
                )
            return pki / "server"
        directory = pki / "servers" / self.server
        if not (directory / "cert.pem").is_file():
            raise SystemExit(
                f"pod-up: CAMERA_SERVER={self.server}: no {directory}; issue it with"
                f" `camera-pki issue {pki} {self.server} --role server --dns HOST`"
            )
        return directory

    def agent_settings(self) -> dict[str, str]:
        if self.camera is None:
            return {"identity": "agent", "base_topic": "camera", "camera": "cam"}
        return {
            "identity": self.camera,
            "base_topic": f"camera/{self.camera}",
            "camera": self.camera,
        }


def _prepare_bridge(pki: Path, broker: Path, conf_d: Path, site: str | None) -> None:
    """The site's bridge snippet in the broker's include_dir and its certificate beside the
    broker's; without a site the include_dir is emptied, so a pod stops bridging."""
    conf_d.mkdir(parents=True, exist_ok=True)
    for stale in conf_d.glob("*.conf"):
        stale.unlink()
    if site is None:
        return
    snippet = pki / "bridges" / f"{site}.conf"
    if not snippet.is_file():
        raise SystemExit(
            f"pod-up: CAMERA_SITE={site}: no {snippet}; make it with `camera-pki issue {pki}"
            f" {site} --role bridge` and `camera-pki bridge {pki} {site} --central HOST:PORT`"
        )
    _copy(pki / f"clients/{site}/cert.pem", broker / f"clients/{site}/cert.pem")
    _copy(pki / f"clients/{site}/key.pem", broker / f"clients/{site}/key.pem", 0o400)
    _chown(broker / f"clients/{site}/key.pem", BROKER_UID)
    _copy(snippet, conf_d / f"{site}.conf")


def _prepare_console(pki: Path, console: Path) -> None:
    """The console service's certificate and configs."""
    _copy(pki / "ca_chain.pem", console / "pki/ca_chain.pem")
    _copy(pki / "clients/console/cert.pem", console / "pki/clients/console/cert.pem")
    _copy(pki / "clients/console/key.pem", console / "pki/clients/console/key.pem", 0o400)
    _chown(console / "pki/clients/console/key.pem", CONSOLE_UID)
    for name, broker in (("console.toml", "127.0.0.1"), ("console-network.toml", "broker")):
        (console / name).write_text(CONSOLE_TOML.format(broker=broker))


def camera_size(environ: dict[str, str]) -> str:
    """`[camera]` lines from CAMERA_WIDTH, CAMERA_HEIGHT and CAMERA_FPS: a Pi Zero, or an arm64
    image under emulation, wants less than the default 1280x720 at 30 fps. The agent checks
    the ranges (and names a bad one) as for any setting."""
    lines = []
    for variable, key in (
        ("CAMERA_WIDTH", "width"),
        ("CAMERA_HEIGHT", "height"),
        ("CAMERA_FPS", "fps"),
    ):
        value = environ.get(variable, "")
        if not value:
            continue
        if not value.isdigit():
            raise SystemExit(f"pod-up: {variable}={value!r} is not a whole number")
        lines.append(f"{key} = {int(value)}\n")
    return "".join(lines)


CONTAINER_S3_CREDENTIALS = "/etc/camera-agent/s3-credentials"
CONTAINER_STORE_CA = "/etc/camera-agent/store-ca.pem"


@dataclass(frozen=True)
class PodUpload:
    """Uploads for the pod's agent: the [upload] table of CAMERA_UPLOAD_CONFIG and the key pair
    file CAMERA_UPLOAD_CREDENTIALS, which goes into the agent's directory readable by it only."""

    config: Path
    credentials: Path

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> PodUpload | None:
        config = environ.get("CAMERA_UPLOAD_CONFIG") or ""
        credentials = environ.get("CAMERA_UPLOAD_CREDENTIALS") or ""
        if not config and not credentials:
            return None
        if not config or not credentials:
            raise SystemExit(
                "pod-up: CAMERA_UPLOAD_CONFIG (the [upload] settings) and"
                " CAMERA_UPLOAD_CREDENTIALS (the store's key pair file) go together"
            )
        return cls(Path(config), Path(credentials))

    def table(self) -> dict[str, Any]:
        try:
            table = tomllib.loads(self.config.read_text()).get("upload")
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SystemExit(f"pod-up: CAMERA_UPLOAD_CONFIG={self.config}: {err}") from None
        if not isinstance(table, dict):
            raise SystemExit(f"pod-up: {self.config} has no [upload] table")
        return table

    def ca_file(self) -> Path | None:
        """A store's private CA (`ca_file`, a path on this host), copied beside the config."""
        named = self.table().get("ca_file")
        if named is None:
            return None
        path = (self.config.parent / str(named)).resolve()
        if not path.is_file():
            raise SystemExit(f"pod-up: {self.config}: ca_file {path}: no such file")
        return path

    def section(self) -> str:
        """The agent's [upload] lines, checked as the agent will check them."""
        table = {**self.table(), "enabled": True, "credentials_file": CONTAINER_S3_CREDENTIALS}
        if self.ca_file() is not None:
            table["ca_file"] = CONTAINER_STORE_CA
        try:
            UploadSettings(**table)
        except ValidationError as err:
            problems = "; ".join(
                f"upload.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise SystemExit(f"pod-up: {self.config}: {problems}") from None
        if not self.credentials.is_file():
            raise SystemExit(f"pod-up: CAMERA_UPLOAD_CREDENTIALS={self.credentials}: no such file")
        # JSON's strings, numbers, booleans and lists are TOML's too.
        return "\n[upload]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def _prepare_upload(agent: Path, upload: PodUpload | None) -> None:
    """The key pair beside the agent's config, readable by it only; gone when uploads are."""
    ca = upload.ca_file() if upload is not None else None
    if ca is None:
        (agent / "store-ca.pem").unlink(missing_ok=True)
    else:
        _copy(ca, agent / "store-ca.pem")
    if upload is None:
        (agent / "s3-credentials").unlink(missing_ok=True)
        return
    _copy(upload.credentials, agent / "s3-credentials", 0o400)
    _chown(agent / "s3-credentials", AGENT_UID)


def image_tag(environ: dict[str, str]) -> str:
    """CAMERA_IMAGE_TAG picks the images' tag (default latest, what scripts/build-images makes)."""
    tag = environ.get("CAMERA_IMAGE_TAG") or "latest"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise SystemExit(f"pod-up: CAMERA_IMAGE_TAG={tag!r} is not an image tag")
    return tag


def prepare(
    pod_dir: Path,
    ports: HostPorts | None = None,
    place: FleetPlace | None = None,
    size: str = "",
    upload: PodUpload | None = None,
) -> StreamCredentials:
    """Each service's directory under pod_dir, from the PKI and passwords (made if missing)."""
    place = place or FleetPlace()
    upload_section = upload.section() if upload is not None else ""
    pki = pod_dir / "pki"
    # The same identities as scripts/run's, the console's among them: before the broker's copy
    # of the ACL below, which must name it.
    prepare_pki(pki)
    credentials = StreamCredentials.load_or_create(pod_dir / "stream-credentials.json")

    server = place.server_dir(pki)
    broker = pod_dir / "broker"
    for name in ("ca_chain.pem", "crl.pem", "server/acl"):
        _copy(pki / name, broker / name)
    _copy(server / "cert.pem", broker / "server/cert.pem")
    _copy(server / "key.pem", broker / "server/key.pem", 0o400)
    _chown(broker / "server/key.pem", BROKER_UID)
    _prepare_bridge(pki, broker, pod_dir / "broker-conf.d", place.site)

    web = pod_dir / "web"
    for name in ("ca_chain.pem", "crl.pem"):
        _copy(pki / name, web / name)
    _copy(server / "cert.pem", web / "server/cert.pem")
    _copy(server / "key.pem", web / "server/key.pem", 0o400)
    _chown(web / "server/key.pem", WEB_UID)
    # The viewer's stream password, which nginx adds to the console's video requests.
    stream = pod_dir / "web-stream" / "authorization.conf"
    stream.parent.mkdir(parents=True, exist_ok=True)
    stream.write_text(stream_authorization(credentials))
    stream.chmod(0o400)
    _chown(stream, WEB_UID)
    _prepare_console(pki, pod_dir / "console")

    agent = pod_dir / "agent"
    settings = place.agent_settings()
    identity = settings["identity"]
    if not (pki / f"clients/{identity}/cert.pem").is_file():
        raise SystemExit(
            f"pod-up: CAMERA_ID={identity}: no certificate {pki}/clients/{identity}; issue it with"
            f" `camera-pki issue {pki} {identity} --role agent --camera {identity}`"
        )
    _copy(pki / "ca_chain.pem", agent / "pki/ca_chain.pem")
    _copy(pki / f"clients/{identity}/cert.pem", agent / f"pki/clients/{identity}/cert.pem")
    _copy(pki / f"clients/{identity}/key.pem", agent / f"pki/clients/{identity}/key.pem", 0o400)
    _chown(agent / f"pki/clients/{identity}/key.pem", AGENT_UID)
    _prepare_upload(agent, upload)
    for name, hosts in (
        ("agent.toml", {"broker": "127.0.0.1", "mediamtx": "127.0.0.1"}),
        ("agent-network.toml", {"broker": "broker", "mediamtx": "mediamtx"}),
    ):
        (agent / name).write_text(
            AGENT_TOML.format(
                password=credentials.agent,
                public_url=(ports or HostPorts()).captures_url,
                camera_size=size,
                **hosts,
                **settings,
            )
            + upload_section
        )
        (agent / name).chmod(0o400)
        _chown(agent / name, AGENT_UID)

    mediamtx = pod_dir / "mediamtx"
    mediamtx.mkdir(parents=True, exist_ok=True)
    # MediaMTX runs as root in its image: the key needs no other owner.
    _copy(server / "cert.pem", mediamtx / "certs/server/cert.pem")
    _copy(server / "key.pem", mediamtx / "certs/server/key.pem", 0o400)
    # Plain RTSP on the pod's loopback unless asked for (the network variant's compose file
    # opens it to the agent's container, and publishes it only when asked too).
    plain = (ports or HostPorts()).plain_rtsp
    addresses = {} if plain else {"rtspAddress": "127.0.0.1:8554"}
    (mediamtx / "mediamtx.yml").write_text(render_mediamtx_config(credentials, addresses))

    captures = pod_dir / "captures"
    captures.mkdir(parents=True, exist_ok=True)
    _chown(captures, AGENT_UID)
    return credentials


def render_kube(pod_dir: Path, ports: HostPorts, tag: str = "latest") -> str:
    """deploy/kube.yaml with its host directory replaced by pod_dir, its host ports by `ports`
    and its images' tag by `tag`; everything else as shipped."""
    documents = list(yaml.safe_load_all(KUBE_FILE.read_text()))
    for document in documents:
        spec: dict[str, Any] = document["spec"]
        for container in spec["containers"]:
            container["image"] = container["image"].rsplit(":", 1)[0] + ":" + tag
            if container["name"] == "mediamtx" and ports.plain_rtsp:
                container["ports"].append({"containerPort": 8554, "protocol": "TCP"})
            for port in container.get("ports", []):
                port["hostPort"] = ports.host_port(port["containerPort"])
                port["hostIP"] = ports.bind
        for volume in spec["volumes"]:
            host_path = volume.get("hostPath")
            if host_path and host_path["path"].startswith(KUBE_POD_DIR + "/"):
                relative = host_path["path"].removeprefix(KUBE_POD_DIR + "/")
                host_path["path"] = str(pod_dir / relative)
    return yaml.safe_dump_all(documents, sort_keys=False)


def podman_compose() -> list[str]:
    """A podman-compose that can share a network namespace: the installed one if it is 1.0.6 or
    newer, else the pinned one through uv."""
    installed = shutil.which("podman-compose")
    if installed:
        result = subprocess.run(
            [installed, "--version"], capture_output=True, text=True, check=False
        )
        found = re.search(r"podman-compose version:?\s*(\d+)\.(\d+)\.(\d+)", result.stdout)
        if found and tuple(int(part) for part in found.groups()) >= (1, 0, 6):
            return [installed]
    return ["uv", "tool", "run", "--from", PINNED_PODMAN_COMPOSE, "podman-compose"]


def build_missing_images(tag: str) -> None:
    for latest, (context, containerfile) in IMAGES.items():
        image = latest.rsplit(":", 1)[0] + ":" + tag
        exists = subprocess.run(["podman", "image", "exists", image], check=False)
        if exists.returncode != 0:
            print(f"building {image}")
            subprocess.run(
                ["podman", "build", "-t", image, "-f", str(containerfile), str(context)],
                check=True,
            )


def agent_container(kube: bool) -> str | None:
    """The running agent container's name, or None."""
    selector = (
        ["--filter", f"pod={PROJECT}", "--filter", f"name={PROJECT}-agent"]
        if kube
        else ["--filter", f"label=com.docker.compose.project={PROJECT}",
              "--filter", "label=com.docker.compose.service=agent"]
    )  # fmt: skip
    listing = subprocess.run(
        ["podman", "ps", *selector, "--format", "{{.Names}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    names = listing.stdout.split()
    return names[0] if names else None


def wait_until_healthy(kube: bool) -> str | None:
    """None once the agent reports healthy, else why not."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    why = "the agent container is not running"
    while time.monotonic() < deadline:
        agent = agent_container(kube)
        if agent:
            health = subprocess.run(
                ["podman", "exec", agent, "camera-agent", "health"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if health.returncode == 0:
                return None
            why = (health.stdout + health.stderr).strip() or f"health exited {health.returncode}"
        time.sleep(1)
    return why


def compose(network: bool, plain_rtsp: Path | None = None) -> list[str]:
    compose_file = NETWORK_COMPOSE_FILE if network else COMPOSE_FILE
    files = [compose_file] + ([plain_rtsp] if plain_rtsp else [])
    return [*podman_compose(), "-p", PROJECT, *(a for f in files for a in ("-f", str(f)))]


def plain_rtsp_compose(pod_dir: Path, ports: HostPorts, network: bool) -> Path | None:
    """The second compose file that publishes plain RTSP (CAMERA_PLAIN_RTSP=1), on the service
    that owns the ports; None when not asked for."""
    if not ports.plain_rtsp:
        return None
    service = "mediamtx" if network else "broker"
    bind = f"[{ports.bind}]" if ":" in ports.bind else ports.bind
    path = pod_dir / "plain-rtsp.yml"
    path.write_text(
        "# Written by scripts/pod-up for CAMERA_PLAIN_RTSP=1: plain RTSP, unencrypted.\n"
        + yaml.safe_dump({"services": {service: {"ports": [f"{bind}:{ports.rtsp}:8554"]}}})
    )
    return path


def up(pod_dir: Path, kube: bool, network: bool, extra: list[str]) -> int:
    ports = HostPorts.from_environment(dict(os.environ))
    environ = dict(os.environ)
    tag = image_tag(environ)
    credentials = prepare(
        pod_dir, ports, FleetPlace.from_environment(environ), camera_size(environ),
        PodUpload.from_environment(environ),
    )  # fmt: skip
    build_missing_images(tag)
    if kube:
        manifest = pod_dir / "kube.yaml"
        manifest.write_text(render_kube(pod_dir, ports, tag))
        command = ["podman", "kube", "play", "--replace", *extra, str(manifest)]
    else:
        override = plain_rtsp_compose(pod_dir, ports, network)
        command = [*compose(network, override), "up", "-d", *extra]
    env = {**os.environ, "CAMERA_POD_DIR": str(pod_dir)}
    result = subprocess.run(command, cwd=REPO, env=env, check=False)
    if result.returncode != 0:
        return result.returncode
    # podman-compose reports success even when a container failed to start: ask the agent.
    why = wait_until_healthy(kube)
    if why:
        print(f"pod-up: the agent is not healthy: {why}", file=sys.stderr)
        return 1
    password = credentials.viewer
    client = pod_dir / "pki/clients/viewer"
    bundle = pod_dir / "pki/clients/operator/bundle.p12"
    plain = (
        f"; plain: rtsp://viewer:{password}@{ports.host}:{ports.rtsp}/cam" if ports.plain_rtsp
        else ""
    )  # fmt: skip
    print(
        f"pod up; MQTT on port {ports.mqtt}\n"
        f"watch: ffplay rtsps://viewer:{password}@{ports.host}:{ports.rtsps}/cam{plain}\n"
        f"browser: https://{ports.host}:{ports.hls}/cam/ (HLS),"
        f" https://{ports.host}:{ports.webrtc}/cam/ (WebRTC); user viewer, password {password}"
        f" (trust {pod_dir}/pki/ca_chain.pem)\n"
        f"files: curl --cacert {pod_dir}/pki/ca_chain.pem --cert {client}/cert.pem"
        f" --key {client}/key.pem {ports.captures_url}\n"
        f"console: https://{ports.host}:{ports.web}/ (import {bundle} into the browser;"
        f" password in {bundle.with_name('bundle.p12.password')})"
    )
    return 0


def down(pod_dir: Path, kube: bool, network: bool) -> int:
    if kube:
        manifest = pod_dir / "kube.yaml"
        if not manifest.exists():
            print(f"pod-down: no {manifest}; was the pod started with --kube?", file=sys.stderr)
            return 1
        command = ["podman", "kube", "down", str(manifest)]
    else:
        command = [*compose(network), "down"]
    env = {**os.environ, "CAMERA_POD_DIR": str(pod_dir)}
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"up", "down"}:
        print(
            "usage: scripts/pod.py up|down [options] (run scripts/pod-up or pod-down)",
            file=sys.stderr,
        )
        return 2
    action = argv[0]
    parser = argparse.ArgumentParser(
        prog=f"scripts/pod-{action}", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--pod-dir", type=Path, default=Path(os.environ.get("CAMERA_POD_DIR", REPO / "var/pod")),
        help="where the PKI, passwords and each service's files live (default: $CAMERA_POD_DIR "
        "or ./var/pod)",
    )  # fmt: skip
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument(
        "--kube", action="store_true", help="podman kube play deploy/kube.yaml, not podman-compose"
    )
    variant.add_argument(
        "--network", action="store_true", help="a private network, not a pod (podman-compose)"
    )
    if action == "up":
        parser.add_argument(
            "extra", nargs="*", help="more arguments for podman-compose up / kube play"
        )
    args = parser.parse_args(argv[1:])
    pod_dir = args.pod_dir.resolve()
    if action == "up":
        return up(pod_dir, args.kube, args.network, args.extra)
    return down(pod_dir, args.kube, args.network)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`scripts/pod-up`: PKI, passwords and per-service files, then the pod (podman-compose up).

Each service gets a directory with only what it needs: the broker the CA chain, CRL, its
certificate, key and ACL; the agent the CA chain and its own certificate and key; MediaMTX its
config with the password hashes. Keys are made readable by the uid that service runs as
(through `podman unshare` when Podman is rootless).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from devstack import REPO, StreamCredentials, render_mediamtx_config

from pki.authority import CertificateAuthority, Role

BROKER_UID = 1883  # the official eclipse-mosquitto image's user
AGENT_UID = 1000  # the agent image's `camera` user

AGENT_TOML = """\
[mqtt]
host = "127.0.0.1"
port = 8883
ca = "/etc/camera-agent/pki/ca_chain.pem"
cert = "/etc/camera-agent/pki/clients/agent/cert.pem"
key = "/etc/camera-agent/pki/clients/agent/key.pem"

[stream]
url = "rtsp://127.0.0.1:8554/cam"
username = "agent"
password = "{password}"

[storage]
captures_dir = "/var/lib/camera-agent/captures"
state_dir = "/var/lib/camera-agent/state"
"""


def _chown(path: Path, uid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    else:  # rootless: uids inside the containers map onto the user's subordinate range
        subprocess.run(["podman", "unshare", "chown", f"{uid}:{uid}", str(path)], check=True)


def _copy(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def prepare(pod_dir: Path) -> StreamCredentials:
    pki = pod_dir / "pki"
    ca = CertificateAuthority(pki)
    if ca.init():
        ca.issue("viewer", Role.VIEWER)
        print(f"generated a PKI in {pki}")
    credentials = StreamCredentials.load_or_create(pod_dir / "stream-credentials.json")

    broker = pod_dir / "broker"
    for name in ("ca_chain.pem", "crl.pem", "server/cert.pem", "server/acl"):
        _copy(pki / name, broker / name)
    _copy(pki / "server/key.pem", broker / "server/key.pem", 0o400)
    _chown(broker / "server/key.pem", BROKER_UID)

    agent = pod_dir / "agent"
    _copy(pki / "ca_chain.pem", agent / "pki/ca_chain.pem")
    _copy(pki / "clients/agent/cert.pem", agent / "pki/clients/agent/cert.pem")
    _copy(pki / "clients/agent/key.pem", agent / "pki/clients/agent/key.pem", 0o400)
    _chown(agent / "pki/clients/agent/key.pem", AGENT_UID)
    (agent / "agent.toml").write_text(AGENT_TOML.format(password=credentials.agent))
    (agent / "agent.toml").chmod(0o400)
    _chown(agent / "agent.toml", AGENT_UID)

    mediamtx = pod_dir / "mediamtx"
    mediamtx.mkdir(parents=True, exist_ok=True)
    (mediamtx / "mediamtx.yml").write_text(render_mediamtx_config(credentials))

    captures = pod_dir / "captures"
    captures.mkdir(parents=True, exist_ok=True)
    _chown(captures, AGENT_UID)
    return credentials


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/pod-up", description=__doc__)
    parser.add_argument(
        "--pod-dir", type=Path, default=Path(os.environ.get("CAMERA_POD_DIR", REPO / "var/pod"))
    )
    parser.add_argument("compose_args", nargs="*", help="extra `podman-compose up` arguments")
    args = parser.parse_args(argv)
    pod_dir = args.pod_dir.resolve()
    credentials = prepare(pod_dir)
    env = {**os.environ, "CAMERA_POD_DIR": str(pod_dir)}
    result = subprocess.run(
        ["podman-compose", "-f", str(REPO / "podman-compose.yml"), "up", "-d", *args.compose_args],
        cwd=REPO, env=env, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return result.returncode
    # podman-compose reports success even when a container failed to start: look for ourselves.
    listing = subprocess.run(
        ["podman", "ps", "--filter", "label=com.docker.compose.project=main",
         "--format", '{{index .Labels "com.docker.compose.service"}}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    missing = {"broker", "mediamtx", "agent"} - set(listing.stdout.split())
    if missing:
        names = ", ".join(sorted(missing))
        print(f"pod-up: not running: {names} (see podman-compose's output)", file=sys.stderr)
        return 1
    port = os.environ.get("CAMERA_RTSP_PORT", "8554")
    viewer = f"rtsp://viewer:{credentials.viewer}@HOST:{port}/cam"
    print(f"pod up; watch: ffplay -rtsp_transport tcp {viewer}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

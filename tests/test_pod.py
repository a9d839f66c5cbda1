"""The Podman deployment for real: our three images built, then started by `scripts/pod-up` as
a pod with podman-compose and with `podman kube play`, and as services on a private network,
and each driven from the host like a user would.

Two quirks of the machine the tests run on are configured here and only here: Podman needs runc
and explicit ulimits (a containers.conf named by CONTAINERS_CONF), and no image registry is
reachable, so the images are built on local base images (a debootstrapped Debian, and MediaMTX's
official image remade from our own build of the same version) passed as build arguments.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import REPO, Broker, StreamCredentials, free_port, mediamtx_binary
from playwright.sync_api import expect
from pod import PROJECT

from tests.browser import FRAME_BRIGHTNESS, chromium, poll
from tests.support import Probe, RtspReader
from tests.test_jobs import assert_clean_timestamps, probe, run_job
from tests.test_web import curl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DEBIAN_BASE = "localhost/camera-test-debian:bookworm"
MEDIAMTX_BASE = "localhost/camera-test-mediamtx-base:latest"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

SANDBOX_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


def podman(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/bootstrap --all")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(SANDBOX_CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def build_debian_base(env: dict[str, str], work: Path) -> None:
    exists = subprocess.run(["podman", "image", "exists", DEBIAN_BASE], env=env, check=False)
    if exists.returncode == 0:
        return
    rootfs = work / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    archive = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
    podman(env, "import", str(archive), DEBIAN_BASE)


def build_mediamtx_base(env: dict[str, str], work: Path) -> None:
    """The official image's layout (the binary at /mediamtx, its entrypoint) from our build of
    the pinned version; always rebuilt, so it follows the pin."""
    archive = work / "mediamtx.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(mediamtx_binary(), arcname="mediamtx")
    podman(env, "import", "--change", 'ENTRYPOINT ["/mediamtx"]', str(archive), MEDIAMTX_BASE)


@pytest.fixture(scope="module")
def images(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Our five images under the names podman-compose.yml and deploy/kube.yaml use."""
    work = tmp_path_factory.mktemp("images")
    build_debian_base(podman_env, work)
    build_mediamtx_base(podman_env, work)
    # Builds reach apt and PyPI through the host's network; PyPI through a TLS-intercepting
    # proxy whose CA only the host's bundle has.
    common = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={DEBIAN_BASE}"]
    pip_trust = ["--volume", f"{HOST_CA_BUNDLE}:/ca.crt:ro", "--build-arg", "PIP_CERT=/ca.crt"]
    podman(podman_env, *common, "-t", "localhost/camera-broker:latest", str(REPO / "broker"))
    podman(podman_env, "build", "--build-arg", f"MEDIAMTX_IMAGE={MEDIAMTX_BASE}",
           "-t", "localhost/camera-mediamtx:latest", str(REPO / "mediamtx"))  # fmt: skip
    podman(podman_env, *common, *pip_trust, "-t", "localhost/camera-agent:latest", str(REPO))
    podman(podman_env, *common, *pip_trust, "-f", str(REPO / "console/Containerfile"),
           "-t", "localhost/camera-console:latest", str(REPO))  # fmt: skip
    npm_trust = ["--volume", f"{HOST_CA_BUNDLE}:/ca.crt:ro", "--build-arg", "NPM_CERT=/ca.crt"]
    podman(podman_env, *common, *npm_trust, "--build-arg", f"NODE_IMAGE={DEBIAN_BASE}",
           "-f", str(REPO / "web/Containerfile"), "-t", "localhost/camera-web:latest",
           str(REPO))  # fmt: skip


class Pod:
    """The pod as scripts/pod-up starts it, on free host ports bound to 127.0.0.1."""

    def __init__(self, env: dict[str, str], pod_dir: Path, variant: str) -> None:
        self.pod_dir = pod_dir
        self.kube = variant == "kube"
        self.mqtt_port = free_port()
        self.rtsp_port = free_port()
        self.web_port = free_port()
        self.env = {
            **env,
            "CAMERA_POD_BIND": "127.0.0.1",
            "CAMERA_MQTT_PORT": str(self.mqtt_port),
            "CAMERA_RTSP_PORT": str(self.rtsp_port),
            "CAMERA_HLS_PORT": str(free_port()),
            "CAMERA_WEBRTC_PORT": str(free_port()),
            "CAMERA_WEBRTC_UDP_PORT": str(free_port()),
            "CAMERA_WEB_PORT": str(self.web_port),
        }
        self.variant = [] if variant == "compose" else [f"--{variant}"]

    def script(self, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / "scripts" / name), *self.variant, "--pod-dir", str(self.pod_dir)],
            env=self.env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def containers(self, *, running_only: bool = False) -> dict[str, str]:
        """Service name -> container name of this pod's containers."""
        selector = f"pod={PROJECT}" if self.kube else f"label=com.docker.compose.project={PROJECT}"
        listing = podman(
            self.env, "ps", *([] if running_only else ["-a"]),
            "--filter", selector, "--format", "{{.Names}}",
        )  # fmt: skip
        names = [name for name in listing.split() if not name.endswith("-infra")]
        return {service_of(name): name for name in names}

    def volumes(self) -> list[str]:
        return [
            name for name in podman(self.env, "volume", "ls", "--format", "{{.Name}}").split()
            if name.startswith(PROJECT)
        ]  # fmt: skip


def service_of(container_name: str) -> str:
    """`camera-agent-agent` (kube) or `camera-agent_agent_1` (compose) -> `agent`."""
    name = container_name.removeprefix(PROJECT).strip("-_")
    return name.split("_")[0]


@pytest.fixture(params=["compose", "kube", "network"])
def pod(
    request: pytest.FixtureRequest, images: None, podman_env: dict[str, str], tmp_path: Path
) -> Iterator[Pod]:
    pod = Pod(podman_env, tmp_path / "pod", variant=request.param)
    assert not pod.containers(), "a camera-agent pod is running: stop it (scripts/pod-down)"
    for volume in pod.volumes():  # a previous run's recordings and journal do not belong here
        podman(pod.env, "volume", "rm", "--force", volume)
    up = pod.script("pod-up")
    try:
        assert up.returncode == 0, f"pod-up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        yield pod
    finally:
        down = pod.script("pod-down")
        assert down.returncode == 0, down.stderr[-3000:]
        # `down` leaves nothing behind but the volumes, which this test removes itself.
        assert pod.containers() == {}
        exists = subprocess.run(["podman", "pod", "exists", PROJECT], env=pod.env, check=False)
        assert exists.returncode != 0
        for volume in pod.volumes():
            podman(pod.env, "volume", "rm", "--force", volume)


def test_pod_takes_a_picture_and_a_recording_and_streams(pod: Pod) -> None:
    containers = pod.containers(running_only=True)
    assert set(containers) == {"broker", "mediamtx", "agent", "web", "console"}, containers

    # From the host, as an operator: only the mapped MQTT port and the pod's own PKI.
    broker = Broker(pki_dir=pod.pod_dir / "pki", work_dir=pod.pod_dir, port=pod.mqtt_port)
    operator = Probe(broker, "operator")
    try:
        operator.subscribe("camera/#")
        picture = run_job(operator, {"id": "pod-picture", "action": "picture"}, timeout=30)
        assert picture["ok"] is True, picture.get("error")
        record = run_job(operator, {"id": "pod-record", "action": "record", "duration": 2},
                         timeout=60)  # fmt: skip
        assert record["ok"] is True, record.get("error")
    finally:
        operator.close()

    # The files are in the captures volume on the host, and readable.
    captures = pod.pod_dir / "captures"
    still = probe(str(captures / picture["data"]["result"]["path"]))
    assert still["streams"][0]["codec_name"] == "mjpeg"
    assert (still["streams"][0]["width"], still["streams"][0]["height"]) == (1280, 720)
    clip = probe(str(captures / record["data"]["result"]["path"]))
    assert clip["streams"][0]["codec_name"] == "h264"
    assert abs(float(clip["format"]["duration"]) - 2.0) < 0.5, clip["format"]["duration"]
    assert_clean_timestamps(captures / record["data"]["result"]["path"])

    # Both files over HTTPS on the mapped web port, with the viewer's certificate.
    for result in (picture["data"]["result"], record["data"]["result"]):
        assert result["url"] == f"https://127.0.0.1:{pod.web_port}/captures/{result['path']}"
        fetched = curl(result["url"], pod.pod_dir / "pki", "viewer")
        assert fetched.status == 200, fetched
        assert hashlib.sha256(fetched.body).hexdigest() == result["sha256"]
    assert curl(picture["data"]["result"]["url"], pod.pod_dir / "pki", "agent").status == 403

    # A player opens the stream on the mapped RTSP port with the viewer's password.
    viewer = StreamCredentials.load_or_create(pod.pod_dir / "stream-credentials.json").viewer
    player = RtspReader(f"rtsp://viewer:{viewer}@127.0.0.1:{pod.rtsp_port}/cam", 1280, 720)
    try:
        player.wait_for(lambda frame: True, timeout=20)
    finally:
        player.close()

    # The console on the mapped web port, opened with the bundle pod-up pointed to: the camera's
    # card, then its live video (WebRTC, or LL-HLS where the mapped ICE port cannot be reached).
    origin = f"https://127.0.0.1:{pod.web_port}"
    bundle = pod.pod_dir / "pki/clients/operator/bundle.p12"
    with chromium() as browser:
        page = browser.new_context(
            ignore_https_errors=True,
            client_certificates=[{
                "origin": origin, "pfxPath": str(bundle),
                "passphrase": bundle.with_name("bundle.p12.password").read_text().strip(),
            }],
        ).new_page()  # fmt: skip
        page.goto(origin + "/")
        expect(page.locator('[data-camera="camera"] .badge')).to_have_text("online")
        page.goto(origin + "/#/camera/camera")
        poll(page, FRAME_BRIGHTNESS, lambda v: v is not None, 30, "live video in the pod")

    # The agent's processes run as the image's non-root user, in the video group.
    top = podman(pod.env, "top", containers["agent"], "user", "group").splitlines()[1:]
    users = [line.split() for line in top if line.strip()]
    assert users and all(user == ["camera", "video"] for user in users), top

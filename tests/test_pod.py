"""The Podman deployment for real: our three images built, then started by `scripts/pod-up` as
a pod with podman-compose and with `podman kube play`, and as services on a private network,
and each driven from the host like a user would.

The images are built by scripts/build-images on local base images (tests/pod_images.py says
why and how), with the `podman_env` and `images` fixtures of conftest.py.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from devstack import REPO, Broker, StreamCredentials, free_port
from playwright.sync_api import expect
from pod import PROJECT

from agent.stream.ffmpeg_args import TestPatternParams, pattern_filtergraph, x264_live_args
from agent.stream.motion_frames import grey_output_args
from agent.stream.still import still_output_args
from tests.browser import FRAME_BRIGHTNESS, chromium, poll
from tests.pod_images import podman
from tests.support import Probe, RtspReader
from tests.test_encrypted_video import assert_played_a_frame, gstreamer_frame
from tests.test_jobs import ask, assert_clean_timestamps, probe, run_job
from tests.test_timelapse import decoded_frames
from tests.test_tls_policy import (
    MEDIAMTX_TLS12,
    MEDIAMTX_TLS13,
    Listener,
    assert_holds_to_the_policy,
)
from tests.test_web import curl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


class Pod:
    """The pod as scripts/pod-up starts it, on free host ports bound to 127.0.0.1."""

    def __init__(self, env: dict[str, str], pod_dir: Path, variant: str) -> None:
        self.pod_dir = pod_dir
        self.kube = variant == "kube"
        self.variant_name = variant
        self.mqtt_port = free_port()
        self.rtsps_port = free_port()
        self.rtsp_port = free_port()  # plain RTSP: published only with CAMERA_PLAIN_RTSP=1
        self.hls_port = free_port()
        self.webrtc_port = free_port()
        self.web_port = free_port()
        self.env = {
            **env,
            "CAMERA_POD_BIND": "127.0.0.1",
            "CAMERA_MQTT_PORT": str(self.mqtt_port),
            "CAMERA_RTSPS_PORT": str(self.rtsps_port),
            "CAMERA_RTSP_PORT": str(self.rtsp_port),
            "CAMERA_HLS_PORT": str(self.hls_port),
            "CAMERA_WEBRTC_PORT": str(self.webrtc_port),
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


@contextmanager
def running(pod: Pod) -> Iterator[Pod]:
    """`scripts/pod-up`, then `scripts/pod-down` and the checks that it left nothing behind."""
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


@pytest.fixture(params=["compose", "kube", "network"])
def pod(
    request: pytest.FixtureRequest, images: None, podman_env: dict[str, str], tmp_path: Path
) -> Iterator[Pod]:
    with running(Pod(podman_env, tmp_path / "pod", variant=request.param)) as pod:
        yield pod


def picture_and_record(
    pod: Pod, seconds: int, timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """From the host, as an operator (only the mapped MQTT port and the pod's own PKI): the
    agent lists its files, then a picture and a recording; their terminal events."""
    broker = Broker(pki_dir=pod.pod_dir / "pki", work_dir=pod.pod_dir, port=pod.mqtt_port)
    operator = Probe(broker, "operator")
    try:
        operator.subscribe("camera/#")
        listed = ask(operator, {"id": "pod-files", "action": "files"})
        assert listed["ok"] is True, listed
        picture = run_job(operator, {"id": "pod-picture", "action": "picture"}, timeout=timeout)
        assert picture["ok"] is True, picture.get("error")
        record = run_job(operator, {"id": "pod-record", "action": "record", "duration": seconds},
                         timeout=2 * timeout)  # fmt: skip
        assert record["ok"] is True, record.get("error")
    finally:
        operator.close()
    return picture, record


def test_pod_takes_a_picture_and_a_recording_and_streams(pod: Pod) -> None:
    containers = pod.containers(running_only=True)
    assert set(containers) == {"broker", "mediamtx", "agent", "web", "console"}, containers

    picture, record = picture_and_record(pod, seconds=2, timeout=30)

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

    # A player opens the stream on the mapped RTSPS port with the viewer's password, and one
    # that checks the certificate does so against the pod's CA; plain RTSP is not published.
    viewer = StreamCredentials.load_or_create(pod.pod_dir / "stream-credentials.json").viewer
    rtsps = f"rtsps://viewer:{viewer}@127.0.0.1:{pod.rtsps_port}/cam"
    player = RtspReader(rtsps, 1280, 720)
    try:
        player.wait_for(lambda frame: True, timeout=20)
    finally:
        player.close()
    frame = pod.pod_dir / "frame.jpg"
    checked = gstreamer_frame(rtsps, pod.pod_dir / "pki/ca_chain.pem", frame)
    assert_played_a_frame(checked, frame)
    assert_plain_rtsp_refused(pod, containers)
    if pod.variant_name == "compose":  # the same image and config behind every variant
        assert_listeners_hold_to_the_policy(pod)

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


def assert_plain_rtsp_refused(pod: Pod, containers: dict[str, str]) -> None:
    """Plain RTSP is not published, and in a pod MediaMTX does not answer it on the pod's own
    address either (only on its loopback, where the agent publishes)."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", pod.rtsp_port), timeout=5).close()
    if pod.variant_name == "network":  # each service has an address of its own there
        return
    owner = containers["broker"]  # podman-compose's pod: the broker owns the namespace
    if pod.kube:  # podman kube play: the pod's infra container does
        owner = podman(pod.env, "pod", "inspect", PROJECT, "--format", "{{.InfraContainerID}}")
    address = podman(
        pod.env, "inspect", owner.strip(), "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    ).split()  # fmt: skip
    assert address, "the pod has no address on its network"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address[0], 8554), timeout=5).close()
    # The same address does answer RTSPS: the refusal above is MediaMTX's choice.
    socket.create_connection((address[0], 8322), timeout=5).close()


def assert_listeners_hold_to_the_policy(pod: Pod) -> None:
    """The TLS matrix against the pod's published listeners (tests/test_tls_policy.py)."""
    client = (pod.pod_dir / "pki/ca_chain.pem", *viewer_key_pair(pod))
    for port in (pod.mqtt_port, pod.web_port):
        assert_holds_to_the_policy(Listener(port, *client))
    for port in (pod.rtsps_port, pod.hls_port, pod.webrtc_port):
        assert_holds_to_the_policy(Listener(port, *client), MEDIAMTX_TLS12, MEDIAMTX_TLS13)


def viewer_key_pair(pod: Pod) -> tuple[Path, Path]:
    viewer = pod.pod_dir / "pki/clients/viewer"
    return viewer / "cert.pem", viewer / "key.pem"


AGENT_IMAGE = "localhost/camera-agent:latest"


def in_agent_image(env: dict[str, str], work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A program of the agent image, run with `work` at /work (as the image's user)."""
    return subprocess.run(
        ["podman", "run", "--rm", "--volume", f"{work}:/work", "--entrypoint", argv[0],
         AGENT_IMAGE, *argv[1:]],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_image_ffmpeg_reads_webcams_mjpeg_and_v4l2(
    images: None, podman_env: dict[str, str], tmp_path: Path
) -> None:
    """What the pod's test pattern does not touch: the V4L2 input and a webcam's MJPEG, through
    the same encode and still-frame outputs the V4L2 pusher uses (agent/stream/ffmpeg_args.py)."""
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the image's `camera` user writes here
    # A webcam's MJPEG, 640x480 at 10 fps, made by the host's ffmpeg.
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=10",
         "-frames:v", "20", "-c:v", "mjpeg", "-f", "mjpeg", str(work / "webcam.mjpeg")],
        check=True, timeout=60,
    )  # fmt: skip
    devices = in_agent_image(podman_env, work, "ffmpeg", "-hide_banner", "-devices")
    listed = {line.split()[1] for line in devices.stdout.splitlines() if line.startswith(" D ")}
    assert {"video4linux2,v4l2", "lavfi"} <= listed, devices.stdout
    # The V4L2 input is there: with no camera it is the device that is missing, not the format.
    v4l2 = in_agent_image(
        podman_env, work, "ffmpeg", "-hide_banner", "-f", "v4l2", "-input_format", "mjpeg",
        "-i", "/dev/video9", "-f", "null", "-",
    )  # fmt: skip
    assert "Cannot open video device /dev/video9" in v4l2.stderr, v4l2.stderr
    gop = 10
    encode = in_agent_image(
        podman_env, work, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "mjpeg", "-framerate", "10", "-i", "/work/webcam.mjpeg",
        "-map", "0:v", *x264_live_args(gop, 1000), "-f", "mp4", "/work/webcam.mp4",
        "-map", "0:v", *still_output_args("/work/still.yuv"),
        "-map", "0:v", "-vf", "framestep=2,scale=320:240", *grey_output_args("/work/motion.gray"),
    )  # fmt: skip
    assert encode.returncode == 0, encode.stderr
    assert (work / "motion.gray").stat().st_size == 320 * 240  # motion detection's grey frame
    clip = probe(str(work / "webcam.mp4"))["streams"][0]
    assert (clip["codec_name"], clip["width"], clip["height"]) == ("h264", 640, 480), clip
    assert decoded_frames(work / "webcam.mp4") == 20
    assert (work / "still.yuv").stat().st_size == 640 * 480 * 3 // 2  # one raw yuv420p frame

    # The test pattern's `still` scene (sensor noise) with its moving box, and the grey output.
    still = TestPatternParams(320, 240, 10, 500, 1.0, "still", False, False, 0.0, 1.0, 1.0, 1.0,
                              0.0, moving_box=True)  # fmt: skip
    pattern = in_agent_image(
        podman_env, work, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"{still.source}=size=320x240:rate=10",
        "-filter_complex", pattern_filtergraph(still, "ipc:///work/filters.zmq", (160, 120)),
        # rawvideo into the null muxer: the image has no wrapped_avframe, `-f null`'s default.
        "-map", "[encoded]", "-frames:v", "10", "-c:v", "rawvideo", "-f", "null", "-",
        "-map", "[still]", "-frames:v", "10", "-c:v", "rawvideo", "-f", "null", "-",
        "-map", "[motion]", "-frames:v", "5", *grey_output_args("/work/pattern.gray"),
    )  # fmt: skip
    assert pattern.returncode == 0, pattern.stderr
    assert (work / "pattern.gray").stat().st_size == 160 * 120


@pytest.mark.parametrize("pod", ["compose"], indirect=True)
def test_the_pod_makes_a_timelapse_and_trims_it(pod: Pod) -> None:
    """The jobs whose ffmpeg work the first test does not reach: the timelapse assembly (MJPEG
    decode, scale, libx264, MP4 with faststart) and an exact trim of its video (H.264 decode and
    re-encode, MPEG-TS with the Annex B filter, the concat protocol)."""
    broker = Broker(pki_dir=pod.pod_dir / "pki", work_dir=pod.pod_dir, port=pod.mqtt_port)
    operator = Probe(broker, "operator")
    try:
        operator.subscribe("camera/#")
        series = run_job(operator, {"id": "pod-tl", "action": "timelapse", "interval": 1,
                                    "count": 8, "fps": 4}, timeout=60)  # fmt: skip
        assert series["ok"] is True, series.get("error")
        video = series["data"]["result"]["video"]["path"]
        trim = run_job(operator, {"id": "pod-trim", "action": "trim", "mode": "exact",
                                  "file": video, "start": 0.5, "end": 1.5}, timeout=60)  # fmt: skip
        assert trim["ok"] is True, trim.get("error")
    finally:
        operator.close()
    captures = pod.pod_dir / "captures"
    assert probe(str(captures / video))["streams"][0]["codec_name"] == "h264"
    assert decoded_frames(captures / video) == 8
    trimmed = captures / trim["data"]["result"]["path"]
    assert probe(str(trimmed))["streams"][0]["codec_name"] == "h264"
    assert decoded_frames(trimmed) == 4  # 0.5 s to 1.5 s at 4 fps
    assert_clean_timestamps(trimmed)

"""The pod on arm64, the Raspberry Pi's architecture, under QEMU user emulation: the images
scripts/build-images makes for linux/arm64, started by scripts/pod-up unchanged, with the test
pattern at a size and rate emulation keeps up with, and driven from the host like a user would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import StreamCredentials

from tests.pod_images import IMAGE_NAMES, build_pod_images, emulation_problem, podman
from tests.support import RtspReader
from tests.test_jobs import assert_clean_timestamps, probe
from tests.test_pod import Pod, picture_and_record, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# What QEMU keeps up with on a CI machine: an emulated libx264 at 320x240 runs several times
# real time at 5 fps.
SIZE = (320, 240)
FPS = 5


@pytest.fixture(scope="module")
def arm64_images(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    problem = emulation_problem()
    if problem:
        pytest.fail(problem)
    # Both architectures, so the manifest lists pod-up uses hold both (amd64 comes from the
    # layer cache the amd64 pod tests left).
    build_pod_images(podman_env, tmp_path_factory.mktemp("images"), ["amd64", "arm64"])


@pytest.fixture
def arm64_pod(arm64_images: None, podman_env: dict[str, str], tmp_path: Path) -> Iterator[Pod]:
    pod = Pod(podman_env, tmp_path / "pod", variant="compose")
    pod.env.update({
        # Each architecture's own image (the manifest list would pick this machine's, amd64).
        "CAMERA_IMAGE_TAG": "latest-arm64",
        "CAMERA_WIDTH": str(SIZE[0]), "CAMERA_HEIGHT": str(SIZE[1]), "CAMERA_FPS": str(FPS),
    })  # fmt: skip
    with running(pod) as started:
        yield started


def test_the_manifest_lists_hold_both_architectures(
    arm64_images: None, podman_env: dict[str, str]
) -> None:
    for image in IMAGE_NAMES:
        listed = podman(podman_env, "manifest", "inspect", image)
        assert '"architecture": "amd64"' in listed and '"architecture": "arm64"' in listed, image
        arch = podman(podman_env, "image", "inspect", "--format", "{{.Architecture}}",
                      image.replace(":latest", ":latest-arm64")).strip()  # fmt: skip
        assert arch == "arm64", (image, arch)


def test_the_arm64_pod_answers_streams_takes_pictures_and_records(arm64_pod: Pod) -> None:
    pod = arm64_pod
    containers = pod.containers(running_only=True)
    assert set(containers) == {"broker", "mediamtx", "agent", "web", "console"}, containers
    machine = podman(pod.env, "exec", containers["agent"], "uname", "-m").strip()
    assert machine == "aarch64"

    picture, record = picture_and_record(pod, seconds=3, timeout=60)

    captures = pod.pod_dir / "captures"
    still = probe(str(captures / picture["data"]["result"]["path"]))["streams"][0]
    assert (still["codec_name"], still["width"], still["height"]) == ("mjpeg", *SIZE)
    clip = probe(str(captures / record["data"]["result"]["path"]))
    assert (clip["streams"][0]["codec_name"], clip["streams"][0]["width"]) == ("h264", SIZE[0])
    assert abs(float(clip["format"]["duration"]) - 3.0) < 0.7, clip["format"]["duration"]
    assert_clean_timestamps(captures / record["data"]["result"]["path"])

    viewer = StreamCredentials.load_or_create(pod.pod_dir / "stream-credentials.json").viewer
    player = RtspReader(f"rtsps://viewer:{viewer}@127.0.0.1:{pod.rtsps_port}/cam", *SIZE)
    try:
        player.wait_for(lambda frame: True, timeout=30)
    finally:
        player.close()

    # The field kit's tour, as an installer runs it: the agent stopped, the same image and
    # config in the pod and the broker's network, as the pod's services are (Podman refuses that
    # network to a container outside the pod). The test pattern named, since the tour fails a
    # camera it had to fall back to (no camera here).
    podman(pod.env, "stop", containers["agent"])
    pod_name = podman(pod.env, "ps", "--pod", "--filter", f"name=^{containers['broker']}$",
                      "--format", "{{.PodName}}").strip()  # fmt: skip
    assert pod_name == "pod_camera-agent", pod_name
    tour = subprocess.run(
        ["podman", "run", "--rm", "--pod", pod_name,
         "--network", f"container:{containers['broker']}",
         "--volume", f"{pod.pod_dir / 'agent'}:/etc/camera-agent:ro",
         "--env", "CAMERA_AGENT_CAMERA__BACKEND=testsrc",
         "localhost/camera-agent:latest-arm64", "selftest", "--config",
         "/etc/camera-agent/agent.toml"],
        env=pod.env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert tour.returncode == 0, tour.stdout + tour.stderr
    assert tour.stdout.splitlines()[-1].endswith(" passed, 0 failed"), tour.stdout
    assert any(line.startswith("[pass] record 3 s:") for line in tour.stdout.splitlines())

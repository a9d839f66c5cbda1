"""The pod's images as the slow tests build them: with scripts/build-images, per architecture,
on local base images, because no image registry is reachable from the machine the tests run on.

The bases: a Debian bookworm rootfs made by debootstrap (for arm64 too: QEMU user emulation runs
its second stage) and MediaMTX's official image layout remade from our own build of the pinned
version (cross-compiled for arm64). debootstrap, apt and pip use their default mirrors and
indexes; none is named here. Podman needs runc and explicit ulimits on this machine (a
containers.conf named by CONTAINERS_CONF), configured here and only here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from devstack import REPO
from images import ARCHES, MACHINE_ARCH, build_all
from pod import IMAGES

IMAGE_NAMES = tuple(IMAGES)  # the manifest lists, `localhost/camera-*:latest`

DEBIAN_BASE = "localhost/camera-test-debian:bookworm-{arch}"
MEDIAMTX_BASE = "localhost/camera-test-mediamtx-base:{arch}"
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


def sandbox_env(work: Path) -> dict[str, str]:
    if shutil.which("podman") is None:
        raise AssertionError("podman is not installed: run scripts/bootstrap --all")
    conf = work / "containers.conf"
    conf.write_text(SANDBOX_CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def emulation_problem() -> str | None:
    """Why arm64 programs cannot run here, or None (scripts/bootstrap --all registers QEMU)."""
    if os.uname().machine == "aarch64":
        return None
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists():
        return "no binfmt_misc handler for arm64: run scripts/bootstrap --all (qemu-user-static)"
    lines = handler.read_text().splitlines()
    if "enabled" not in lines:
        return f"the arm64 binfmt_misc handler is disabled: {lines}"
    # F: the interpreter is opened at registration, so it works inside containers too.
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"the arm64 binfmt_misc handler lacks the F flag (flags: {flags.strip()})"
    return None


def image_exists(env: dict[str, str], image: str) -> bool:
    return (
        subprocess.run(["podman", "image", "exists", image], env=env, check=False).returncode == 0
    )


def build_debian_base(env: dict[str, str], work: Path, arch: str) -> None:
    """Kept between runs: a bookworm rootfs changes only with Debian's point releases."""
    image = DEBIAN_BASE.format(arch=arch)
    if image_exists(env, image):
        return
    rootfs = work / f"rootfs-{arch}"
    subprocess.run(
        ["debootstrap", f"--arch={arch}", "--variant=minbase", "bookworm", str(rootfs)],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    archive = work / f"rootfs-{arch}.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
    podman(env, "import", "--arch", arch, str(archive), image)


def build_mediamtx_base(env: dict[str, str], work: Path, arch: str) -> None:
    """The official image's layout (the binary at /mediamtx, its entrypoint) from our build of
    the pinned version; always remade, so it follows the pin."""
    native = MACHINE_ARCH.get(os.uname().machine) == arch  # the build the other tests use
    built = subprocess.run(
        [str(REPO / "scripts/build-mediamtx"), *([] if native else ["--arch", arch])],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    archive = work / f"mediamtx-{arch}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(built.stdout.strip(), arcname="mediamtx")
    podman(env, "import", "--arch", arch, "--change", 'ENTRYPOINT ["/mediamtx"]', str(archive),
           MEDIAMTX_BASE.format(arch=arch))  # fmt: skip


@dataclass
class BuildTimes:
    """Seconds per (image, arch) of the last build: what bench/images.py reports."""

    seconds: dict[tuple[str, str], float] = field(default_factory=dict)


def build_pod_images(env: dict[str, str], work: Path, arches: list[str]) -> BuildTimes:
    """Every image for each architecture, then manifest lists `localhost/camera-*:latest`
    holding them (the tag pod-up uses); `:latest-<arch>` names one architecture's image."""
    assert set(arches) <= set(ARCHES), arches
    for arch in arches:
        build_debian_base(env, work, arch)
        build_mediamtx_base(env, work, arch)
    native = DEBIAN_BASE.format(arch="amd64")
    # Builds reach apt, PyPI and npm through the host's network; PyPI and npm through a
    # TLS-intercepting proxy whose CA only the host's bundle has.
    build_args = [
        f"BASE_IMAGE={DEBIAN_BASE}",
        # The agent's ffmpeg stage runs on the build machine's own architecture.
        f"BUILD_BASE_IMAGE={native}",
        f"MEDIAMTX_IMAGE={MEDIAMTX_BASE}",
        # The web image's npm stage runs on the build machine's own architecture.
        f"NODE_IMAGE={native}",
        "PIP_CERT=/ca.crt",
        "NPM_CERT=/ca.crt",
    ]
    built = build_all(arches, "latest", None, build_args, [f"{HOST_CA_BUNDLE}:/ca.crt:ro"], env=env)
    return BuildTimes({(item.image, item.arch): item.seconds for item in built})

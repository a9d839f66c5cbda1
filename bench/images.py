"""The images: their sizes, build times, and the agent on arm64 under emulation beside native.

- Size of each image per architecture, and what it adds to its Debian base; the agent image
  against the baseline built in the same run from an earlier revision's Containerfile (Debian's
  own ffmpeg package), on both architectures.
- Build time of each image from scratch (`--no-cache`) per architecture, as scripts/build-images
  builds them (arm64 on amd64: ffmpeg cross-compiled, apt and pip under QEMU).
- The agent container running the test pattern at 320x240, 5 fps, against a local broker and
  MediaMTX: its idle RSS and the CPU of the agent and its ffmpeg, native (amd64) beside
  emulated (arm64). QEMU user emulation is slow throughout, and its RSS includes QEMU's own
  memory and translation cache; the ratio shows whether any path is worse than the rest (a
  pure-Python loop would stand out).

    scripts/bench images [--rebuild] [--baseline REV] [--seconds 30]

Without --rebuild it measures the images as they are (build times then show as -); the
baseline image is built when missing.

Uses the local base images the tests build (tests/pod_images.py): run the slow tests once first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devstack import REPO, Broker, MediaServer, agent_config_toml
from images import ARCHES, arch_image, build_all
from pod import IMAGES

from bench.control_plane import process_usage
from pki.authority import CertificateAuthority
from tests.pod_images import DEBIAN_BASE, HOST_CA_BUNDLE, MEDIAMTX_BASE, sandbox_env

BASELINE_REV = "631feb1"  # the last revision whose agent image used Debian's ffmpeg package
AGENT = "localhost/camera-agent:latest"
SIZE = (320, 240)
FPS = 5
BUILD_ARGS = [
    f"BASE_IMAGE={DEBIAN_BASE}",
    f"BUILD_BASE_IMAGE={DEBIAN_BASE.format(arch='amd64')}",
    f"MEDIAMTX_IMAGE={MEDIAMTX_BASE}",
    f"NODE_IMAGE={DEBIAN_BASE.format(arch='amd64')}",
    "PIP_CERT=/ca.crt",
    "NPM_CERT=/ca.crt",
]
VOLUMES = [f"{HOST_CA_BUNDLE}:/ca.crt:ro"]


def podman(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def size_mb(env: dict[str, str], image: str) -> float:
    return int(podman(env, "image", "inspect", "--format", "{{.Size}}", image).strip()) / 1e6


def build_baseline(env: dict[str, str], rev: str, arch: str) -> str:
    """The agent image from `rev`'s Containerfile (the same sources otherwise), kept."""
    tag = f"localhost/camera-agent:baseline-{arch}"
    if subprocess.run(["podman", "image", "exists", tag], env=env, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        containerfile = Path(tmp) / "Containerfile"
        containerfile.write_text(
            subprocess.run(
                ["git", "show", f"{rev}:Containerfile"],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        subprocess.run(
            ["podman", "build", "--platform", f"linux/{arch}", "--network", "host",
             "--build-arg", f"BASE_IMAGE={DEBIAN_BASE.format(arch=arch)}",
             "--build-arg", "PIP_CERT=/ca.crt", "--volume", VOLUMES[0],
             "-t", tag, "-f", str(containerfile), str(REPO)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
    return tag


@dataclass(frozen=True)
class Running:
    cpu_percent: float  # agent + its ffmpeg, % of one core
    rss_mib: float  # the agent's process


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def agent_running(env: dict[str, str], image: str, root: Path, seconds: float) -> Running:
    """The agent container with the test pattern, streaming to the local MediaMTX."""
    ca = CertificateAuthority(root / "pki")
    ca.init()
    broker, media = Broker(root / "pki", root / "broker"), MediaServer(root / "mediamtx")
    broker.start()
    media.start()
    # The same paths inside as outside; the image's user reads the (throwaway) keys and
    # writes the agent's directories.
    root.chmod(0o755)
    for path in (root / "pki").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    state = root / "agent"
    for directory in (state, state / "captures", state / "state"):
        directory.mkdir(mode=0o777, exist_ok=True)
        directory.chmod(0o777)
    config = root / "agent.toml"
    config.write_text(agent_config_toml(root / "pki", broker.port, state, media=media))
    size = [f"CAMERA_AGENT_CAMERA__{key}={value}"
            for key, value in (("WIDTH", SIZE[0]), ("HEIGHT", SIZE[1]), ("FPS", FPS))]  # fmt: skip
    container = podman(
        env, "run", "-d", "--rm", "--network", "host",
        *(option for pair in (("--env", item) for item in size) for option in pair),
        "--volume", f"{root}:{root}", image, "run", "--config", str(config),
    ).strip()  # fmt: skip
    try:
        pid = int(podman(env, "inspect", "--format", "{{.State.Pid}}", container).strip())
        deadline = time.monotonic() + 300
        while not children(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not children(pid):
            raise RuntimeError(f"{image}: the agent started no ffmpeg in 300 s")
        time.sleep(15)  # past start-up: imports, the first connection, the encoder's warm-up
        pids = [pid, *children(pid)]
        before = sum(process_usage(p)[0] for p in pids)
        started = time.monotonic()
        time.sleep(seconds)  # the streaming window is what is measured
        elapsed = time.monotonic() - started
        cpu = 100 * (sum(process_usage(p)[0] for p in pids) - before) / elapsed
        return Running(cpu, process_usage(pid)[1] / 2**20)
    finally:
        subprocess.run(["podman", "stop", "-t", "5", container], env=env, capture_output=True,
                       check=False)  # fmt: skip
        media.stop()
        broker.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench images", description=__doc__)
    parser.add_argument("--baseline", default=BASELINE_REV, help="revision (default %(default)s)")
    parser.add_argument(
        "--rebuild", action="store_true", help="build every image from scratch, timed (long)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="streaming window")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="camera-bench-images-") as tmp:
        env = sandbox_env(Path(tmp))
        os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
        times: dict[tuple[str, str], float] = {}
        if args.rebuild:
            built = build_all(list(ARCHES), "latest", None, BUILD_ARGS, VOLUMES, env=env,
                              no_cache=True)  # fmt: skip
            times = {(item.image, item.arch): item.seconds for item in built}
        baseline = {arch: build_baseline(env, args.baseline, arch) for arch in ARCHES}

        print(f"{'image':<24} {'arch':<6} {'size MB':>8} {'over base':>10} {'build s':>8}")
        for image in IMAGES:
            for arch in ARCHES:
                size = size_mb(env, arch_image(image, "latest", arch))
                base = size_mb(env, DEBIAN_BASE.format(arch=arch))
                over = f"{size - base:.0f}" if "mediamtx" not in image else "-"
                seconds = times.get((image, arch))
                print(f"{image.split('/')[1].split(':')[0]:<24} {arch:<6} {size:>8.0f} {over:>10}"
                      f" {'-' if seconds is None else round(seconds)!s:>8}")  # fmt: skip
        print()
        print(f"{'agent image over its base':<28} {'baseline MB':>12} {'now MB':>8} {'ratio':>6}")
        for arch in ARCHES:
            base = size_mb(env, DEBIAN_BASE.format(arch=arch))
            before = size_mb(env, baseline[arch]) - base
            now = size_mb(env, arch_image(AGENT, "latest", arch)) - base
            print(f"{arch:<28} {before:>12.0f} {now:>8.0f} {now / before:>6.2f}")
        print()
        runs = {}
        for arch in ARCHES:
            root = Path(tmp) / f"run-{arch}"
            root.mkdir()
            runs[arch] = agent_running(env, arch_image(AGENT, "latest", arch), root, args.seconds)
        native, emulated = runs["amd64"], runs["arm64"]
        print(f"agent container, test pattern {SIZE[0]}x{SIZE[1]} at {FPS} fps, "
              f"{args.seconds:g} s")  # fmt: skip
        print(f"{'':<34} {'amd64':>8} {'arm64 (QEMU)':>13} {'ratio':>6}")
        print(
            f"{'CPU, agent + ffmpeg (% of a core)':<34} {native.cpu_percent:>8.1f}"
            f" {emulated.cpu_percent:>13.1f} {emulated.cpu_percent / native.cpu_percent:>6.1f}"
        )
        print(f"{'agent RSS (MiB)':<34} {native.rss_mib:>8.1f} {emulated.rss_mib:>13.1f}"
              f" {emulated.rss_mib / native.rss_mib:>6.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

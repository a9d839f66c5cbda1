"""Builds the pod's five images for several architectures and joins each into a manifest list.

For every image of `pod.IMAGES` and every architecture asked for, `podman build --platform
linux/<arch>` makes `<image>-<arch>` (e.g. `localhost/camera-agent:latest-arm64`); then the
manifest list `<image>` (`localhost/camera-agent:latest`) holds them all, so `scripts/pod-up`,
`podman run` and a registry push use one name on any host. Arm64 on an amd64 machine (or the
reverse) runs under QEMU user emulation (binfmt_misc; `scripts/bootstrap --all` sets it up).

    scripts/build-images                         # linux/amd64 and linux/arm64, tag latest
    scripts/build-images --arch arm64 --tag dev  # one architecture
    podman manifest push --all localhost/camera-agent:latest docker://registry.example/camera-agent:latest

`--build-arg NAME=VALUE` goes to every build; `{arch}` in it becomes the architecture being
built (the tests pass local base images that way: `BASE_IMAGE=localhost/debian:bookworm-{arch}`).

`--build-arg PICAMERA2=true` (the Raspberry Pi variant) takes Raspberry Pi OS's repository and
its key from this host's apt configuration when run on the Pi (`RASPBERRYPI_SOURCES`, key files
below), unless `RASPBERRYPI_REPOSITORY` and `RASPBERRYPI_KEY_URL` are given.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pod import IMAGES

ARCHES = ("amd64", "arm64")
MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}
# Where Raspberry Pi OS keeps its own repository's entry and key (raspberrypi-archive-keyring
# installs the key; older images have it under /usr/share/keyrings).
RASPBERRYPI_SOURCES = Path("/etc/apt/sources.list.d/raspi.list")
RASPBERRYPI_KEYS = (
    Path("/etc/apt/trusted.gpg.d/raspberrypi-archive-stable.gpg"),
    Path("/usr/share/keyrings/raspberrypi-archive-keyring.gpg"),
)
# The host's key as the build sees it (a build volume; curl reads file:// URLs).
BUILD_KEY_PATH = "/run/raspberrypi-archive.gpg"


class PiRepositoryError(Exception):
    """The Pi variant was asked for where Raspberry Pi OS's repository is not configured."""


def raspberrypi_repository(
    sources: Path = RASPBERRYPI_SOURCES, keys: tuple[Path, ...] = RASPBERRYPI_KEYS
) -> tuple[str, Path]:
    """The repository URL of the first `deb` entry in `sources` and the key that signs it (its
    `signed-by` option, else the first of `keys` that exists)."""
    try:
        lines = sources.read_text().splitlines()
    except OSError as err:
        raise PiRepositoryError(
            f"cannot read {sources} ({err.strerror}): build the Pi variant on Raspberry Pi OS, or"
            " pass --build-arg RASPBERRYPI_REPOSITORY=URL --build-arg RASPBERRYPI_KEY_URL=URL"
        ) from None
    for line in lines:
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        options: dict[str, str] = {}
        rest = words[1:]
        if rest and rest[0].startswith("["):
            closing = next(i for i, word in enumerate(rest) if word.endswith("]"))
            for option in " ".join(rest[: closing + 1]).strip("[]").split():
                name, _, value = option.partition("=")
                options[name] = value
            rest = rest[closing + 1 :]
        if not rest:
            continue
        signed_by = options.get("signed-by")
        candidates = (Path(signed_by),) if signed_by else keys
        key = next((path for path in candidates if path.is_file()), None)
        if key is None:
            names = ", ".join(map(str, candidates))
            raise PiRepositoryError(f"no key for {rest[0]} (looked for {names})")
        return rest[0], key
    raise PiRepositoryError(f"{sources} has no deb entry")


def with_pi_repository(
    build_args: list[str], volumes: list[str], sources: Path = RASPBERRYPI_SOURCES
) -> tuple[list[str], list[str]]:
    """The build arguments and volumes with the host's Raspberry Pi repository and key added,
    when the Pi variant is asked for without them."""
    given = {arg.split("=", 1)[0] for arg in build_args}
    if "PICAMERA2=true" not in build_args or "RASPBERRYPI_REPOSITORY" in given:
        return build_args, volumes
    repository, key = raspberrypi_repository(sources)
    return (
        [*build_args, f"RASPBERRYPI_REPOSITORY={repository}",
         f"RASPBERRYPI_KEY_URL=file://{BUILD_KEY_PATH}"],
        [*volumes, f"{key}:{BUILD_KEY_PATH}:ro"],
    )  # fmt: skip


def build_platform() -> str:
    """This machine's platform: where the compiling stages run (Podman 4.3 does not say)."""
    machine = platform.machine()
    if machine not in MACHINE_ARCH:
        raise SystemExit(f"build-images: cannot build on a {machine} machine (amd64, arm64)")
    return f"linux/{MACHINE_ARCH[machine]}"


@dataclass(frozen=True)
class Built:
    image: str
    arch: str
    seconds: float


def image_name(image: str, tag: str) -> str:
    """`localhost/camera-agent:latest` with its tag replaced."""
    return image.rsplit(":", 1)[0] + ":" + tag


def arch_image(image: str, tag: str, arch: str) -> str:
    return image_name(image, f"{tag}-{arch}")


def build_command(
    image: str,
    tag: str,
    arch: str,
    build_args: list[str],
    volumes: list[str],
    no_cache: bool = False,
) -> list[str]:
    context, containerfile = IMAGES[image]
    command = ["podman", "build", "--platform", f"linux/{arch}", "--network", "host",
               "--build-arg", f"BUILDPLATFORM={build_platform()}"]  # fmt: skip
    if no_cache:
        command.append("--no-cache")
    for volume in volumes:
        command += ["--volume", volume]
    for build_arg in build_args:
        command += ["--build-arg", build_arg.replace("{arch}", arch)]
    return [*command, "-t", arch_image(image, tag, arch), "-f", str(containerfile), str(context)]


def make_manifest(image: str, tag: str, arches: list[str], env: dict[str, str] | None) -> None:
    """The manifest list under the image's own name, made anew from this run's builds."""
    name = image_name(image, tag)

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, check=False
        )

    if podman("manifest", "exists", name).returncode == 0:
        podman("manifest", "rm", name)
    elif podman("image", "exists", name).returncode == 0:
        # An image built before manifest lists (plain `podman build -t`) holds the name.
        podman("rmi", "--force", name)
    for args in (("manifest", "create", name),
                 *(("manifest", "add", name, f"containers-storage:{arch_image(image, tag, arch)}")
                   for arch in arches)):  # fmt: skip
        result = podman(*args)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, ["podman", *args], stderr=result.stderr
            )


def build_all(
    arches: list[str],
    tag: str,
    only: list[str] | None,
    build_args: list[str],
    volumes: list[str],
    env: dict[str, str] | None = None,
    no_cache: bool = False,
) -> list[Built]:
    built = []
    for image in IMAGES:
        if only and not any(f"/camera-{name}:" in image for name in only):
            continue
        for arch in arches:
            print(f"build-images: {arch_image(image, tag, arch)}", file=sys.stderr, flush=True)
            started = time.monotonic()
            subprocess.run(
                build_command(image, tag, arch, build_args, volumes, no_cache),
                env=env,
                check=True,
            )
            built.append(Built(image, arch, time.monotonic() - started))
        make_manifest(image, tag, arches, env)
    return built


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/build-images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--arch", default=",".join(ARCHES), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--tag", default="latest", help="image tag (default: %(default)s)")
    parser.add_argument(
        "--only", default="", help="comma-separated images: broker,mediamtx,agent,web,console"
    )
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--volume", action="append", default=[], help="a build-time volume (a proxy's CA bundle)"
    )
    args = parser.parse_args(argv)
    arches = [arch for arch in args.arch.split(",") if arch]
    unknown = sorted(set(arches) - set(ARCHES))
    if unknown:
        parser.error(f"unknown architecture {', '.join(unknown)}; known: {', '.join(ARCHES)}")
    only = [name for name in args.only.split(",") if name] or None
    names = {image.split("/camera-")[1].split(":")[0] for image in IMAGES}
    if only and set(only) - names:
        unknown_images = ", ".join(sorted(set(only) - names))
        parser.error(f"unknown image {unknown_images}; known: {', '.join(sorted(names))}")
    try:
        build_args, volumes = with_pi_repository(args.build_arg, args.volume)
    except PiRepositoryError as err:
        parser.error(f"PICAMERA2=true: {err}")
    try:
        built = build_all(arches, args.tag, only, build_args, volumes)
    except subprocess.CalledProcessError as err:
        print(
            f"build-images: {' '.join(map(str, err.cmd))} failed {err.stderr or ''}",
            file=sys.stderr,
        )
        return 1
    print(f"{'image':<40} {'arch':<6} {'build s':>8}")
    for item in built:
        print(
            f"{arch_image(item.image, args.tag, item.arch):<40} {item.arch:<6} {item.seconds:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

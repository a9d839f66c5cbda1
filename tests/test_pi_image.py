"""The Raspberry Pi variant of the agent image (`PICAMERA2=true`) built for real, against a local
apt repository standing in for Raspberry Pi OS's: the repository's key fetched and dearmored,
the sources entry, the install of python3-picamera2, and its import from the agent's venv
(`--system-site-packages`) are the Containerfile's own steps, exercised end to end.

The package in the repository is built here from tests/fake_picamera2.py (the picamera2 and
libcamera fake the other tests use, with the pi5-imx708 fixture as its camera), and the
repository is signed with a key made for the test, as Raspberry Pi's is with theirs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from devstack import REPO
from images import with_pi_repository

from tests.pod_images import DEBIAN_BASE, HOST_CA_BUNDLE, podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TESTS = Path(__file__).resolve().parent
PACKAGE_VERSION = "0.3.99+camera-agent-test1"
ARCH = "amd64"  # the steps are the same on arm64; the arm64 pod test covers that architecture
PI_IMAGE = f"localhost/camera-agent:pi-test-{ARCH}"

# The fake as an installed package: picamera2's and libcamera's module layout, each module
# re-exporting the fake's classes (picamera2/encoders.py etc. in raspberrypi/picamera2).
MODULES = {
    "picamera2/__init__.py": '"""Stand-in for python3-picamera2 (tests/test_pi_image.py)."""\n'
    "from picamera2._fake import DEVICES, Picamera2, Picamera2Fixture\n\n"
    'Picamera2.fixture = Picamera2Fixture.load(DEVICES / "pi5-imx708")\n'
    '__all__ = ["Picamera2"]\n',
    "picamera2/encoders.py": "from picamera2._fake import LibavH264Encoder\n"
    "from picamera2._fake import LibavH264Encoder as H264Encoder\n\n"
    '__all__ = ["H264Encoder", "LibavH264Encoder"]\n',
    "picamera2/outputs.py": "from picamera2._fake import FfmpegOutput\n\n"
    '__all__ = ["FfmpegOutput"]\n',
    "picamera2/platform.py": "from picamera2._fake import Platform\n\n\n"
    "def get_platform() -> Platform:\n    return Platform.PISP\n",
    "libcamera/__init__.py": 'from picamera2._fake import Transform\n\n__all__ = ["Transform"]\n',
}


def build_package(work: Path) -> Path:
    root = work / "package"
    site = root / "usr/lib/python3/dist-packages"
    for name, text in MODULES.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    shutil.copy(TESTS / "fake_picamera2.py", site / "picamera2/_fake.py")
    fixture = site / "picamera2/fixtures/devices/pi5-imx708"
    shutil.copytree(TESTS / "fixtures/devices/pi5-imx708", fixture)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: python3-picamera2\n"
        f"Version: {PACKAGE_VERSION}\n"
        "Architecture: all\n"
        "Maintainer: camera-agent tests <tests@camera-agent.invalid>\n"
        "Depends: python3\n"
        "Section: python\n"
        "Priority: optional\n"
        "Description: picamera2 stand-in built from camera-agent's fake\n"
        " For camera-agent's tests of its Raspberry Pi image only.\n"
    )
    deb = work / f"python3-picamera2_{PACKAGE_VERSION}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    return deb


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", *args],
        input=stdin, capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def build_repository(work: Path) -> Path:
    """dists/bookworm/main/binary-{amd64,arm64}/Packages, a Release with their hashes, signed
    inline (InRelease), the package in pool/, and the armored public key beside them."""
    served = work / "served"
    repo = served / "debian"
    deb = build_package(work)
    pool = repo / "pool/main" / deb.name
    pool.parent.mkdir(parents=True)
    shutil.copy(deb, pool)
    body = deb.read_bytes()
    control = subprocess.run(["dpkg-deb", "--field", str(deb)], check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
    stanza = (
        control.rstrip("\n")
        + f"\nFilename: pool/main/{deb.name}\nSize: {len(body)}\n"
        + f"SHA256: {hashlib.sha256(body).hexdigest()}\n"
    )
    indexes = {}
    for arch in ("amd64", "arm64"):
        packages = stanza.encode()
        index = f"main/binary-{arch}/Packages"
        for name, data in ((index, packages), (f"{index}.gz", gzip.compress(packages))):
            path = repo / "dists/bookworm" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            indexes[name] = data
    release = (
        "Origin: camera-agent tests\nLabel: camera-agent tests\nSuite: bookworm\n"
        "Codename: bookworm\nComponents: main\nArchitectures: amd64 arm64\n"
        f"Date: {formatdate(usegmt=True)}\nSHA256:\n"
        + "".join(
            f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
            for name, data in indexes.items()
        )
    )
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    gpg(home, "--quick-generate-key", "camera-agent test repository", "rsa3072", "sign", "never")
    (repo / "dists/bookworm/InRelease").write_bytes(
        gpg(home, "--clearsign", "--digest-algo", "SHA256", stdin=release.encode())
    )
    (served / "raspberrypi.gpg.key").write_bytes(gpg(home, "--armor", "--export"))
    # The key as raspberrypi-archive-keyring installs it on the Pi: a binary keyring.
    (work / "raspberrypi-archive-stable.gpg").write_bytes(gpg(home, "--export"))
    return served


@pytest.fixture(scope="module")
def repository_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("raspi-repo"))


@pytest.fixture(scope="module")
def repository(repository_dir: Path) -> Iterator[str]:
    """The repository over HTTP on 127.0.0.1, as the build reaches it (host network)."""
    handler = functools.partial(QuietHandler, directory=str(repository_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def pi_build(build_args: list[str], volumes: list[str], tag: str) -> list[str]:
    """`podman build` of the Pi variant on the tests' local bases (tests/pod_images.py)."""
    return [
        "build", "--platform", f"linux/{ARCH}", "--network", "host",
        "--build-arg", f"BASE_IMAGE={DEBIAN_BASE.format(arch=ARCH)}",
        "--build-arg", f"BUILD_BASE_IMAGE={DEBIAN_BASE.format(arch='amd64')}",
        "--build-arg", "BUILDPLATFORM=linux/amd64",
        "--volume", f"{HOST_CA_BUNDLE}:/ca.crt:ro", "--build-arg", "PIP_CERT=/ca.crt",
        *(word for arg in build_args for word in ("--build-arg", arg)),
        *(word for volume in volumes for word in ("--volume", volume)),
        "-t", tag, str(REPO),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pi_image(
    images: None,
    repository: str,
    repository_dir: Path,
    podman_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """Built as scripts/build-images builds it on a Pi: the repository and key read from the
    host's apt configuration (here a raspi.list naming the test repository and its keyring)."""
    keyring = repository_dir.parent / "raspberrypi-archive-stable.gpg"
    sources = tmp_path_factory.mktemp("pi-host") / "raspi.list"
    sources.write_text(
        f"# the Pi's own entry\ndeb [arch=arm64,amd64 signed-by={keyring}] {repository}/debian/"
        " bookworm main\n"
    )
    build_args, volumes = with_pi_repository(["PICAMERA2=true"], [], sources)
    podman(podman_env, *pi_build(build_args, volumes, PI_IMAGE), timeout=1800)
    return PI_IMAGE


def run_in(env: dict[str, str], image: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", argv[0], image, *argv[1:]],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_pi_image_installs_picamera2_from_the_signed_repository(
    pi_image: str, podman_env: dict[str, str]
) -> None:
    # The agent's venv imports Raspberry Pi OS's package: the system site packages are seen.
    found = run_in(podman_env, pi_image, "/opt/camera-agent/bin/python", "-c",
                   "import libcamera, picamera2; print(picamera2.__file__)")  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "/usr/lib/python3/dist-packages/picamera2/__init__.py"
    # The agent finds the camera through it, as on a Pi.
    doctor = run_in(podman_env, pi_image, "camera-agent", "doctor")
    assert "[ok] libcamera: 1 camera(s)" in doctor.stdout, doctor.stdout + doctor.stderr
    # The repository is trusted through its own key only, and the fetch tools are gone.
    sources = run_in(podman_env, pi_image, "cat", "/etc/apt/sources.list.d/raspi.list")
    assert sources.stdout.startswith("deb [signed-by=/usr/share/keyrings/raspberrypi.gpg] ")
    policy = run_in(podman_env, pi_image, "dpkg-query", "-W", "-f", "${Version}",
                    "python3-picamera2")  # fmt: skip
    assert policy.stdout == PACKAGE_VERSION
    tools = run_in(podman_env, pi_image, "sh", "-c", "command -v curl gpg || echo none")
    assert tools.stdout.strip() == "none"


def test_a_repository_signed_with_another_key_is_refused(
    images: None, repository: str, podman_env: dict[str, str], tmp_path: Path
) -> None:
    """The signature is checked: a key that did not sign the repository fails the build with
    apt's own words (a mirror or proxy serving other packages is never installed from)."""
    other = tmp_path / "other"
    other.mkdir()
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg(home, "--quick-generate-key", "someone else", "rsa3072", "sign", "never")
    (other / "raspberrypi.gpg.key").write_bytes(gpg(home, "--armor", "--export"))
    handler = functools.partial(QuietHandler, directory=str(other))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key_url = f"http://127.0.0.1:{server.server_address[1]}/raspberrypi.gpg.key"
        build_args = ["PICAMERA2=true", f"RASPBERRYPI_REPOSITORY={repository}/debian",
                      f"RASPBERRYPI_KEY_URL={key_url}"]  # fmt: skip
        result = subprocess.run(
            ["podman", *pi_build(build_args, [], "localhost/camera-agent:pi-test-refused")],
            env=podman_env, capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0
    assert "NO_PUBKEY" in result.stderr + result.stdout or "not signed" in result.stderr


def test_the_pi_variant_without_a_repository_fails_with_what_to_pass(
    images: None, podman_env: dict[str, str]
) -> None:
    """Nothing names Raspberry Pi's servers: a build without the repository says what it needs."""
    result = subprocess.run(
        ["podman", *pi_build(["PICAMERA2=true"], [], "localhost/camera-agent:pi-test-unnamed")],
        env=podman_env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "PICAMERA2=true needs --build-arg RASPBERRYPI_REPOSITORY=URL" in result.stderr

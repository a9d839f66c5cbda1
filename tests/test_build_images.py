"""scripts/build-images' choices that need no build: the Raspberry Pi variant's repository and
key read from the host's apt configuration, as Raspberry Pi OS lays it out (an entry in
/etc/apt/sources.list.d/raspi.list; its key installed by raspberrypi-archive-keyring, or named
by `signed-by`). The builds themselves: tests/test_pi_image.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from images import BUILD_KEY_PATH, PiRepositoryError, raspberrypi_repository, with_pi_repository

MIRROR = "http://mirror.invalid/raspberrypi/debian/"


def test_the_entry_and_the_installed_keyring_are_taken(tmp_path: Path) -> None:
    key = tmp_path / "raspberrypi-archive-stable.gpg"
    key.write_bytes(b"\x99\x01")
    sources = tmp_path / "raspi.list"
    sources.write_text(f"# comment\n\ndeb-src {MIRROR} bookworm main\ndeb {MIRROR} bookworm main\n")
    assert raspberrypi_repository(sources, (tmp_path / "absent.gpg", key)) == (MIRROR, key)


def test_signed_by_names_the_key(tmp_path: Path) -> None:
    key = tmp_path / "named.gpg"
    key.write_bytes(b"\x99\x01")
    sources = tmp_path / "raspi.list"
    sources.write_text(f"deb [arch=arm64 signed-by={key}] {MIRROR} bookworm main\n")
    assert raspberrypi_repository(sources, ()) == (MIRROR, key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read"),
        ("# deb http://commented.invalid/ bookworm main\n", "has no deb entry"),
        (f"deb {MIRROR} bookworm main\n", "no key for http://mirror.invalid/"),
    ],
)
def test_a_host_without_the_repository_is_told_what_to_pass(
    tmp_path: Path, text: str | None, message: str
) -> None:
    sources = tmp_path / "raspi.list"
    if text is not None:
        sources.write_text(text)
    with pytest.raises(PiRepositoryError, match=message):
        with_pi_repository(["PICAMERA2=true"], [], sources)


def test_the_host_key_reaches_the_build_as_a_volume(tmp_path: Path) -> None:
    key = tmp_path / "k.gpg"
    key.write_bytes(b"\x99\x01")
    sources = tmp_path / "raspi.list"
    sources.write_text(f"deb [signed-by={key}] {MIRROR} bookworm main\n")
    args, volumes = with_pi_repository(["PICAMERA2=true"], ["/ca.crt:/ca.crt:ro"], sources)
    assert args == [
        "PICAMERA2=true",
        f"RASPBERRYPI_REPOSITORY={MIRROR}",
        f"RASPBERRYPI_KEY_URL=file://{BUILD_KEY_PATH}",
    ]
    assert volumes == ["/ca.crt:/ca.crt:ro", f"{key}:{BUILD_KEY_PATH}:ro"]


def test_given_arguments_and_other_builds_are_left_alone(tmp_path: Path) -> None:
    given = ["PICAMERA2=true", "RASPBERRYPI_REPOSITORY=http://x.invalid/", "RASPBERRYPI_KEY_URL=k"]
    assert with_pi_repository(given, [], tmp_path / "absent") == (given, [])
    assert with_pi_repository(["BASE_IMAGE=b"], [], tmp_path / "absent") == (["BASE_IMAGE=b"], [])

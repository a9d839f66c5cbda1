"""Who may do what in the console, decided by pki/access.py from the subject nginx passes: read
from real certificates as openssl prints them (what nginx puts in $ssl_client_s_dn), and held
to the same answers as the broker's ACL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pki.access import Access, Subject, parse_subject
from pki.cli import main as pki_main


def nginx_subject(cert: Path) -> str:
    printed = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return printed.removeprefix("subject=")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    assert pki_main(["init", str(directory)]) == 0
    for args in (
        ["cam-x", "--role", "agent", "--camera", "x"],
        ["door", "--role", "viewer", "--camera", "x"],
        ["everyone", "--role", "viewer"],
        ["night", "--role", "operator", "--camera", "x"],
        ["console", "--role", "console"],
    ):
        assert pki_main(["issue", str(directory), *args]) == 0
    return directory


def subject_of(pki: Path, name: str) -> Subject:
    subject = parse_subject(nginx_subject(pki / "clients" / name / "cert.pem"))
    assert subject is not None
    return subject


def test_each_role_reads_and_commands_what_its_scope_covers(pki: Path) -> None:
    cases = {
        # name: (camera/x read, camera/x command, camera read, camera command)
        "operator": (True, True, True, True),
        "everyone": (True, False, True, False),
        "door": (True, False, False, False),
        "night": (True, True, False, False),
        "agent": (False, False, False, False),  # a camera is no person
        "cam-x": (False, False, False, False),
        "console": (False, False, False, False),  # acts for people, is none
    }
    for name, expected in cases.items():
        subject = subject_of(pki, name)
        got = tuple(
            subject.permits(base, access)
            for base in ("camera/x", "camera")
            for access in (Access.READ, Access.COMMAND)
        )
        assert got == expected, (name, subject)


def test_the_broker_acl_agrees_for_operators_viewers_and_the_console(pki: Path) -> None:
    acl = (pki / "server" / "acl").read_text()
    blocks = {b.split("\n")[1]: b for b in acl.split("\n\n") if "\nuser " in b}
    # The console reads and commands every recorded camera, and nothing of Home Assistant's.
    console = blocks["user console"]
    assert "topic write camera/x/control/#" in console and "topic read camera/x/#" in console
    assert "homeassistant" not in console
    # What access.py allows a scoped operator or viewer, the broker allows them too.
    assert "topic write camera/x/control/#" in blocks["user night"]
    assert "topic write camera/control/#" not in blocks["user night"]
    assert "write" not in blocks["user door"]


@pytest.mark.parametrize(
    "dn",
    [
        "",
        "CN=mallory",  # no role, no organisation
        "CN=a,OU=operator,O=someone-else",  # another organisation's certificate
        "CN=a,OU=scope:*,OU=operator,OU=viewer,O=camera-agent",  # two roles
        "CN=a,OU=scope:*,OU=scope:camera,OU=operator,O=camera-agent",  # two scopes
        "CN=a+OU=operator,OU=scope:*,O=camera-agent",  # a multi-valued RDN
        "CN=a,CN=b,OU=scope:*,OU=operator,O=camera-agent",
        "garbage without equals",
    ],
)
def test_what_is_not_one_of_our_subjects_is_no_one(dn: str) -> None:
    assert parse_subject(dn) is None


def test_an_escaped_comma_cannot_pose_as_another_attribute() -> None:
    # A CN holding ",OU=operator" is one value (RFC 2253 escapes the comma), not a role.
    subject = parse_subject(
        r"CN=x\,OU=operator\,OU=scope:*,OU=scope:camera/x,OU=viewer,O=camera-agent"
    )
    assert subject == Subject("x,OU=operator,OU=scope:*", "viewer", "camera/x")
    assert not subject.permits("camera/x", Access.COMMAND)

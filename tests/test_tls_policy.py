"""Every listener we run holds to the one TLS policy (pki/tls_policy.py), checked the way a TLS
scanner does: the shipped config says exactly the policy, and the running server, asked with
`openssl s_client` for each protocol version and each suite this machine's OpenSSL knows,
accepts the policy's suites its key can serve and refuses every other one. A config edit that
widens (or narrows) a listener fails here."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from devstack import BROKER_CONF, WEB_CONF, Broker, MediaServer, WebServer

from pki.tls_policy import TLS12_CIPHERS, TLS13_CIPHERSUITES

# TLS 1.3's suites as OpenSSL names them (all five of RFC 8446's, whether enabled or not).
ALL_TLS13 = (*TLS13_CIPHERSUITES, "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")


@dataclass(frozen=True)
class Listener:
    port: int
    ca: Path
    cert: Path
    key: Path


def every_tls12_cipher() -> list[str]:
    """Every TLS 1.2-and-older cipher this OpenSSL can offer, weak ones included."""
    listed = subprocess.run(
        ["openssl", "ciphers", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return [name for name in listed.split(":") if not name.startswith("TLS_")]


def handshake(listener: Listener, *options: str) -> str | None:
    """The suite the server chose, or None when it refused the handshake."""
    result = subprocess.run(
        ["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{listener.port}",
         "-servername", "localhost", "-CAfile", str(listener.ca),
         "-cert", str(listener.cert), "-key", str(listener.key), *options],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    found = re.search(r"^Ciphersuite: (\S+)", result.stderr, re.MULTILINE)
    return found.group(1) if result.returncode == 0 and found else None


def accepted(listener: Listener, attempts: Iterable[tuple[str, ...]]) -> set[tuple[str, ...]]:
    attempts = list(attempts)
    with ThreadPoolExecutor(8) as pool:
        chosen = list(pool.map(lambda options: handshake(listener, *options), attempts))
    return {options for options, suite in zip(attempts, chosen, strict=True) if suite}


def assert_holds_to_the_policy(
    listener: Listener,
    tls12_ciphers: Iterable[str] = TLS12_CIPHERS,
    tls13_suites: Iterable[str] = TLS13_CIPHERSUITES,
) -> None:
    # Our PKI's keys are EC (P-256): of the policy's TLS 1.2 suites, the ECDSA ones apply.
    tls12 = {
        ("-tls1_2", "-cipher", f"{name}:@SECLEVEL=0", "-ciphersuites", "")
        for name in every_tls12_cipher()
    }
    expected12 = {
        ("-tls1_2", "-cipher", f"{name}:@SECLEVEL=0", "-ciphersuites", "")
        for name in tls12_ciphers
        if "ECDSA" in name
    }
    assert accepted(listener, tls12) == expected12
    tls13 = {("-tls1_3", "-ciphersuites", name) for name in ALL_TLS13}
    assert accepted(listener, tls13) == {("-tls1_3", "-ciphersuites", n) for n in tls13_suites}
    old = {(version, "-cipher", "ALL:@SECLEVEL=0") for version in ("-tls1", "-tls1_1")}
    assert accepted(listener, old) == set()


def config_lists(text: str, directive: str) -> list[str]:
    found = re.search(rf"^\s*{re.escape(directive)}\s+([^;\s]+)", text, re.MULTILINE)
    assert found, f"no {directive}"
    return found.group(1).split(":")


def test_the_shipped_configs_spell_out_the_policy() -> None:
    mosquitto = BROKER_CONF.read_text()
    assert config_lists(mosquitto, "ciphers") == list(TLS12_CIPHERS)
    assert config_lists(mosquitto, "ciphers_tls1.3") == list(TLS13_CIPHERSUITES)
    assert re.search(r"^tls_version tlsv1\.2$", mosquitto, re.MULTILINE)
    nginx = WEB_CONF.read_text()
    assert config_lists(nginx, "ssl_ciphers") == list(TLS12_CIPHERS)
    assert config_lists(nginx, "ssl_conf_command Ciphersuites") == list(TLS13_CIPHERSUITES)
    assert re.search(r"^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$", nginx, re.MULTILINE)
    assert re.search(r"^\s*ssl_session_tickets off;$", nginx, re.MULTILINE)


def client(pki_dir: Path, name: str) -> tuple[Path, Path, Path]:
    client_dir = pki_dir / "clients" / name
    return pki_dir / "ca_chain.pem", client_dir / "cert.pem", client_dir / "key.pem"


def test_the_broker_holds_to_the_policy(broker: Broker, pki_dir: Path) -> None:
    assert_holds_to_the_policy(Listener(broker.port, *client(pki_dir, "cli")))


def test_nginx_holds_to_the_policy_and_issues_no_session_tickets(
    web: WebServer, pki_dir: Path
) -> None:
    listener = Listener(web.port, *client(pki_dir, "viewer"))
    assert_holds_to_the_policy(listener)
    # A TLS 1.2 session comes back without a ticket (resumption is by the server's cache).
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{web.port}", "-tls1_2",
         "-CAfile", str(listener.ca), "-cert", str(listener.cert), "-key", str(listener.key)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert "Cipher is ECDHE-ECDSA" in result.stdout, result.stdout[-2000:]
    assert "TLS session ticket" not in result.stdout


# Go's TLS in FIPS 140-3 mode (mediamtx/Containerfile): the policy without ChaCha20, which
# Go offers no way to keep while dropping the CBC suites its defaults still carry.
MEDIAMTX_TLS12 = tuple(name for name in TLS12_CIPHERS if "CHACHA20" not in name)
MEDIAMTX_TLS13 = tuple(name for name in TLS13_CIPHERSUITES if "CHACHA20" not in name)


@pytest.mark.parametrize("listener", ["rtsps", "hls", "webrtc"])
def test_mediamtx_holds_to_the_policy(media: MediaServer, pki_dir: Path, listener: str) -> None:
    port = {"rtsps": media.rtsps_port, "hls": media.hls_port, "webrtc": media.webrtc_port}
    assert_holds_to_the_policy(
        Listener(port[listener], *client(pki_dir, "viewer")), MEDIAMTX_TLS12, MEDIAMTX_TLS13
    )

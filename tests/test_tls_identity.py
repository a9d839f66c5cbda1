"""The agent's identity (its certificate's CN), read without `cryptography`, agrees with it on
every kind of certificate: ours, and ones openssl makes with other key types, a UTF-8 name, no
version field quirks and many subject attributes; bad files are refused in words."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.errors import ConfigError
from agent.mqtt.tls import certificate_identity
from pki.authority import CertificateAuthority, Role


def cryptography_cn(cert: Path) -> str:
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_our_certificates(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    ca.init()
    ca.issue("cam07", Role.AGENT, camera="cam07")
    certs = sorted(tmp_path.rglob("cert.pem"))
    assert len(certs) >= 4
    for cert in certs:
        assert certificate_identity(cert) == cryptography_cn(cert)
    assert certificate_identity(tmp_path / "clients" / "cam07" / "cert.pem") == "cam07"


@pytest.mark.parametrize(
    ("key", "subject"),
    [
        ("rsa:4096", "/O=Zoo/OU=a/OU=b/CN=kamera-müller/emailAddress=x@example.org"),
        ("rsa:1024", "/CN=short"),
        ("ec:prime256v1", "/C=DE/ST=Berlin/CN=" + "x" * 64),
    ],
)
def test_openssl_certificates(tmp_path: Path, key: str, subject: str) -> None:
    cert = tmp_path / "cert.pem"
    if key.startswith("ec:"):
        params = tmp_path / "params.pem"
        subprocess.run(["openssl", "ecparam", "-name", key[3:], "-out", str(params)], check=True)
        key = f"ec:{params}"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", key, "-nodes", "-keyout", str(tmp_path / "k.pem"),
         "-out", str(cert), "-days", "2", "-subj", subject, "-utf8"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert certificate_identity(cert) == cryptography_cn(cert)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "not a readable"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "holds no PEM"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        certificate_identity(cert)


def test_a_certificate_without_a_common_name_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(cert), "-subj", "/O=NoName"],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has no common name"):
        certificate_identity(cert)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        certificate_identity(tmp_path / "absent.pem")

"""The SSL context for mutual TLS with the broker, built from the PKI files."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.errors import ConfigError


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    for what, path in (("CA chain", ca), ("certificate", cert), ("private key", key)):
        if not path.is_file():
            raise ConfigError(
                f"MQTT {what} {path} does not exist (generate one with `camera-pki init`)"
            )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"cannot load {cert} with key {key}: {err}") from err
    return context


def certificate_identity(cert: Path) -> str:
    """The CN of the leaf certificate: the broker uses it as username and client id."""
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(f"{cert} has no common name; issue it with camera-pki")
    return str(names[0].value)

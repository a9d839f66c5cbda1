"""The SSL context for mutual TLS with the broker, built from the PKI files."""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from pathlib import Path

from agent.errors import ConfigError

PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)
COMMON_NAME_OID = bytes.fromhex("550403")  # 2.5.4.3, DER-encoded
SEQUENCE, SET, OID, VERSION = 0x30, 0x31, 0x06, 0xA0
STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


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
    """The CN of the leaf certificate: the broker uses it as username and client id.

    Read with the few lines of DER below instead of `cryptography`, which would hold 19 MiB of
    every idle agent's memory for this one name (the broker, not the agent, verifies the chain).
    """
    try:
        pem = PEM_CERTIFICATE.search(cert.read_bytes())
        if pem is None:
            raise ConfigError(f"{cert} holds no PEM certificate")
        name = _subject_common_name(base64.b64decode(pem[1], validate=False))
    except OSError as err:
        raise ConfigError(f"cannot read {cert}: {err.strerror}") from err
    except (IndexError, ValueError, binascii.Error) as err:
        raise ConfigError(f"{cert} is not a readable X.509 certificate: {err}") from err
    if not name:
        raise ConfigError(f"{cert} has no common name; issue it with camera-pki")
    return name


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at offset ``at``."""
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("truncated DER element")
    return tag, start, start + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        found.append(_element(der, start))
        start = found[-1][2]
    return found


def _subject_common_name(der: bytes) -> str | None:
    """RFC 5280: Certificate = SEQUENCE { tbsCertificate, ... }; tbsCertificate = SEQUENCE {
    [0] version OPTIONAL, serial, signature, issuer, validity, subject, ... }; a Name is a
    SEQUENCE of SETs of SEQUENCE { type OID, value }."""
    tag, start, end = _element(der, 0)
    tag, start, end = _element(der, start)  # tbsCertificate
    if tag != SEQUENCE:
        raise ValueError("no tbsCertificate")
    fields = _children(der, start, end)
    if fields[0][0] == VERSION:
        fields = fields[1:]
    tag, start, end = fields[4]  # serial, signature, issuer, validity, subject
    if tag != SEQUENCE:
        raise ValueError("no subject name")
    for set_tag, set_start, set_end in _children(der, start, end):
        for _, pair_start, pair_end in _children(der, set_start, set_end) if set_tag == SET else []:
            (oid_tag, oid_start, oid_end), (value_tag, value_start, value_end) = _children(
                der, pair_start, pair_end
            )[:2]
            if oid_tag == OID and der[oid_start:oid_end] == COMMON_NAME_OID:
                codec = STRING_CODECS.get(value_tag, "utf-8")
                return der[value_start:value_end].decode(codec)
    return None

"""Certificate and key building blocks (X.509 names, extensions, keys, PEM) for `authority.py`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pki.access import ORGANIZATION, SCOPE_PREFIX
from pki.model import KeyType

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# A client certificate names the cameras it may reach, as a second OU, so that a server which
# sees only the certificate (nginx serving the captures, the console) can tell. Fleet-wide
# certificates say so explicitly (`*`): a certificate without this OU (issued before it existed)
# is refused there. The rule that reads it is pki/access.py.


def x509_name(common_name: str, unit: str, scope: str | None = None) -> x509.Name:
    """O=camera-agent, OU=<role>, [OU=scope:<topic base or *>], CN=<name>; RFC 2253 prints it
    in reverse: `CN=alice,OU=scope:camera/cam1,OU=viewer,O=camera-agent`."""
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ]
    if scope is not None:
        attributes.append(
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SCOPE_PREFIX + scope)
        )
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def cert_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def ca_key_usage() -> x509.KeyUsage:
    # A CA signs certificates and CRLs and nothing else.
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def leaf_key_usage(key_type: KeyType) -> x509.KeyUsage:
    # TLS 1.2 RSA key exchange needs keyEncipherment; ECDSA leaves only sign the handshake.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_type is KeyType.RSA,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


@dataclass
class Issuer:
    cert: x509.Certificate
    key: PrivateKey

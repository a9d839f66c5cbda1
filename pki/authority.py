"""The certificate authority behind camera-agent's mutual TLS.

Layout of a PKI directory (external tools and the pod's mounts rely on it)::

    DIR/ca_chain.pem             intermediate + root: what the broker and clients trust
    DIR/crl.pem                  revocation list, issued by the intermediate
    DIR/identities.json          every issued certificate with its role (renders the ACL)
    DIR/ca/root.pem, root.key    Root CA (path length 1); its key only signs the intermediate
    DIR/ca/intermediate.pem, .key Intermediate CA (path length 0); signs everything else
    DIR/server/cert.pem, key.pem the broker's certificate (leaf + intermediate), serverAuth only
    DIR/server/acl               the Mosquitto ACL rendered from identities.json
    DIR/clients/NAME/cert.pem, key.pem  client certificates (leaf + intermediate), clientAuth only

Private keys are written with mode 0600 and every file is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.atomicfile import write_atomic
from pki.acl import render_acl

ORGANIZATION = "camera-agent"
# Names the broker is reached by: loopback for the native run, the service names for the pod and
# for the Podman-network variant (see podman-compose.yml).
DEFAULT_SERVER_DNS = ("localhost", "broker", "mosquitto", "camera-broker")
DEFAULT_SERVER_IPS = ("127.0.0.1", "::1")
DEFAULT_BASE_TOPIC = "camera"

ROOT_DAYS = 3650
INTERMEDIATE_DAYS = 1825
LEAF_DAYS = (
    825  # the CA/Browser Forum's historical cap; long enough for devices, short enough to rotate
)
# OpenSSL refuses every client once the CRL is past its next-update date, so it must outlive the
# gaps between `camera-pki crl` runs by a wide margin. `camera-pki list` warns 30 days ahead.
CRL_DAYS = 365

IDENTITY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# A topic base is a plain MQTT topic: no wildcards, no empty levels, not under $SYS.
TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]+")


class PkiError(Exception):
    """A PKI operation that cannot be carried out; the message says why, for the CLI user."""


class Role(StrEnum):
    AGENT = "agent"  # a camera: reads its commands, writes its reports
    OPERATOR = "operator"  # commands cameras and reads everything they report
    VIEWER = "viewer"  # reads reports only


class KeyType(StrEnum):
    ECDSA = "ecdsa"
    RSA = "rsa"


@dataclass
class Identity:
    """One issued client certificate, as recorded in identities.json."""

    name: str
    role: Role
    serial: int
    not_after: str
    camera: str | None = None
    base_topic: str | None = None  # agents: the topic base they serve; others: the one they may use
    revoked_at: str | None = None

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if dt.datetime.fromisoformat(self.not_after) < now:
            return "expired"
        return "valid"


@dataclass
class Registry:
    key_type: KeyType
    identities: list[Identity] = field(default_factory=list)

    def find_active(self, name: str) -> Identity | None:
        """The unrevoked certificate of ``name``; revoked ones stay recorded for the CRL."""
        return next((i for i in self.identities if i.name == name and i.revoked_at is None), None)


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def ca_chain(self) -> Path:
        return self.root / "ca_chain.pem"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def registry(self) -> Path:
        return self.root / "identities.json"

    @property
    def root_cert(self) -> Path:
        return self.root / "ca" / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.root / "ca" / "root.key"

    @property
    def intermediate_cert(self) -> Path:
        return self.root / "ca" / "intermediate.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.root / "ca" / "intermediate.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "cert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "key.pem"

    @property
    def acl(self) -> Path:
        return self.root / "server" / "acl"

    def client_dir(self, name: str) -> Path:
        return self.root / "clients" / name


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
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


def _ca_key_usage() -> x509.KeyUsage:
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


def _leaf_key_usage(key_type: KeyType) -> x509.KeyUsage:
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


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


@dataclass
class _Issuer:
    cert: x509.Certificate
    key: PrivateKey


class CertificateAuthority:
    """Reads and writes one PKI directory. Construction only assigns; methods do the work."""

    def __init__(self, directory: Path) -> None:
        self.paths = Paths(directory)

    # -- state -------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.paths.root_cert.exists() or self.paths.registry.exists()

    def load_registry(self) -> Registry:
        try:
            raw = json.loads(self.paths.registry.read_text())
        except FileNotFoundError:
            raise PkiError(
                f"{self.paths.root} is not a PKI directory (no identities.json); "
                f"run `camera-pki init {self.paths.root}` first"
            ) from None
        return Registry(
            key_type=KeyType(raw["key_type"]),
            identities=[
                Identity(**{**item, "role": Role(item["role"])}) for item in raw["identities"]
            ],
        )

    def _save_registry(self, registry: Registry) -> None:
        body = {
            "key_type": str(registry.key_type),
            "identities": [asdict(i) | {"role": str(i.role)} for i in registry.identities],
        }
        write_atomic(self.paths.registry, (json.dumps(body, indent=2) + "\n").encode())
        write_atomic(self.paths.acl, render_acl(registry.identities).encode())

    def _intermediate(self) -> _Issuer:
        cert = x509.load_pem_x509_certificate(self.paths.intermediate_cert.read_bytes())
        key = serialization.load_pem_private_key(
            self.paths.intermediate_key.read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError("the intermediate CA key is neither ECDSA nor RSA")
        return _Issuer(cert, key)

    # -- init --------------------------------------------------------------------------------

    def init(
        self,
        *,
        server_dns: Sequence[str] = (),
        server_ips: Sequence[str] = (),
        key_type: KeyType = KeyType.ECDSA,
        base_topic: str = DEFAULT_BASE_TOPIC,
        force: bool = False,
    ) -> bool:
        """Create the whole chain. Returns False (and changes nothing) if one exists already."""
        if self.exists() and not force:
            return False
        validate_topic_base(base_topic)
        ips = [_parse_ip(ip) for ip in (*DEFAULT_SERVER_IPS, *server_ips)]
        now = _now()

        root_key = _new_key(key_type)
        root_name = _name("camera-agent Root CA", "ca")
        root_cert = _sign(
            _builder(
                root_name, root_name, root_key.public_key(), now, now + dt.timedelta(ROOT_DAYS)
            )
            # Path length 1: the root may sign one intermediate CA that signs only leaves.
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True),
            root_key,
        )

        inter_key = _new_key(key_type)
        inter_cert = _sign(
            _builder(
                _name("camera-agent Intermediate CA", "ca"),
                root_name,
                inter_key.public_key(),
                now,
                now + dt.timedelta(INTERMEDIATE_DAYS),
            )
            # Path length 0: the intermediate signs leaves, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            ),
            root_key,
        )
        p = self.paths
        write_atomic(p.root_key, _key_pem(root_key), 0o600)
        write_atomic(p.root_cert, _cert_pem(root_cert))
        write_atomic(p.intermediate_key, _key_pem(inter_key), 0o600)
        write_atomic(p.intermediate_cert, _cert_pem(inter_cert))
        write_atomic(p.ca_chain, _cert_pem(inter_cert, root_cert))
        issuer = _Issuer(inter_cert, inter_key)

        dns = list(dict.fromkeys((*DEFAULT_SERVER_DNS, *server_dns)))
        self._issue_server(issuer, key_type, dns, ips)
        registry = Registry(key_type=key_type)
        self._write_crl(issuer, registry)
        self._issue_client(issuer, registry, "agent", Role.AGENT, None, base_topic, LEAF_DAYS)
        # Without a camera the operator is fleet-wide: the ACL grants it every recorded camera.
        self._issue_client(issuer, registry, "operator", Role.OPERATOR, None, None, LEAF_DAYS)
        self._save_registry(registry)
        return True

    def _issue_server(
        self,
        issuer: _Issuer,
        key_type: KeyType,
        dns: Iterable[str],
        ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
    ) -> None:
        key = _new_key(key_type)
        now = _now()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ip) for ip in ips]
        cert = _sign(
            self._leaf_builder(issuer, "mqtt-broker", "server", key, now, LEAF_DAYS)
            .add_extension(_leaf_key_usage(key_type), critical=True)
            # serverAuth only: the broker's certificate cannot be used to log in as a client.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False),
            issuer.key,
        )
        write_atomic(self.paths.server_key, _key_pem(key), 0o600)
        write_atomic(self.paths.server_cert, _cert_pem(cert, issuer.cert))

    @staticmethod
    def _leaf_builder(
        issuer: _Issuer,
        common_name: str,
        unit: str,
        key: PrivateKey,
        not_before: dt.datetime,
        days: int,
    ) -> x509.CertificateBuilder:
        return (
            _builder(
                _name(common_name, unit),
                issuer.cert.subject,
                key.public_key(),
                not_before,
                not_before + dt.timedelta(days),
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
        )

    # -- clients -----------------------------------------------------------------------------

    def issue(
        self,
        name: str,
        role: Role,
        *,
        camera: str | None = None,
        base_topic: str | None = None,
        days: int = LEAF_DAYS,
        not_before: dt.datetime | None = None,
    ) -> Identity:
        """Issue a client certificate and re-render the ACL.

        ``not_before`` exists for tests of expiry handling (a certificate that is already expired).
        """
        validate_identity_name(name)
        if camera is not None:
            validate_identity_name(camera, what="camera id")
        registry = self.load_registry()
        existing = registry.find_active(name)
        if existing is not None:
            raise PkiError(
                f"a certificate named {name!r} exists already (serial {existing.serial:x}); "
                f"revoke it first with `camera-pki revoke {self.paths.root} {name}`"
            )
        topic = base_topic or (f"{DEFAULT_BASE_TOPIC}/{camera}" if camera else None)
        if role is Role.AGENT and topic is None:
            topic = DEFAULT_BASE_TOPIC
        if topic is not None:
            validate_topic_base(topic)
        identity = self._issue_client(
            self._intermediate(), registry, name, role, camera, topic, days, not_before
        )
        self._save_registry(registry)
        return identity

    def _issue_client(
        self,
        issuer: _Issuer,
        registry: Registry,
        name: str,
        role: Role,
        camera: str | None,
        base_topic: str | None,
        days: int,
        not_before: dt.datetime | None = None,
    ) -> Identity:
        key = _new_key(registry.key_type)
        start = not_before or _now()
        cert = _sign(
            self._leaf_builder(issuer, name, str(role), key, start, days)
            .add_extension(_leaf_key_usage(registry.key_type), critical=True)
            # clientAuth only: a stolen client key cannot impersonate the broker.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            ),
            issuer.key,
        )
        directory = self.paths.client_dir(name)
        write_atomic(directory / "key.pem", _key_pem(key), 0o600)
        write_atomic(directory / "cert.pem", _cert_pem(cert, issuer.cert))
        identity = Identity(
            name=name,
            role=role,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc.isoformat(),
            camera=camera,
            base_topic=base_topic,
        )
        registry.identities.append(identity)
        return identity

    def export_p12(self, name: str, password: bytes) -> Path:
        """Write a password-protected PKCS#12 (key, certificate, CA chain) for mobile apps."""
        directory = self.paths.client_dir(name)
        key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
        certs = x509.load_pem_x509_certificates((directory / "cert.pem").read_bytes())
        chain = x509.load_pem_x509_certificates(self.paths.ca_chain.read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError(f"the key of {name!r} is neither ECDSA nor RSA")
        # SHA-1/3DES PBE: Android's and older iOS keystores cannot open PBES2/AES bundles.
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - required by the keystores named above
            .build(password)
        )
        bundle = pkcs12.serialize_key_and_certificates(
            name.encode(), key, certs[0], [*certs[1:], chain[-1]], encryption
        )
        path = directory / "bundle.p12"
        write_atomic(path, bundle, 0o600)
        return path

    def revoke(self, name: str) -> Identity:
        registry = self.load_registry()
        identity = registry.find_active(name)
        if identity is None:
            revoked = [i for i in registry.identities if i.name == name]
            if revoked:
                raise PkiError(f"{name!r} was revoked already, at {revoked[-1].revoked_at}")
            raise PkiError(f"no certificate named {name!r} in {self.paths.root}")
        identity.revoked_at = _now().isoformat()
        self._write_crl(self._intermediate(), registry)
        self._save_registry(registry)
        return identity

    def refresh_crl(self) -> None:
        """Re-sign the CRL with a fresh next-update date (run well within CRL_DAYS)."""
        self._write_crl(self._intermediate(), self.load_registry())

    def crl_next_update(self) -> dt.datetime | None:
        crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
        return crl.next_update_utc

    def _write_crl(self, issuer: _Issuer, registry: Registry) -> None:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(CRL_DAYS))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
            .add_extension(x509.CRLNumber(secrets.randbits(63)), critical=False)
        )
        for identity in registry.identities:
            if identity.revoked_at is None:
                continue
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(identity.serial)
                .revocation_date(dt.datetime.fromisoformat(identity.revoked_at))
                .build()
            )
        crl = builder.sign(issuer.key, hashes.SHA256())
        write_atomic(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM))


# Topic levels the agent's contract uses under a base; a camera named like one would collide.
RESERVED_CAMERA_IDS = frozenset(
    {"control", "status", "state", "availability", "controls", "response"}
)


def validate_identity_name(name: str, what: str = "name") -> None:
    if what == "camera id" and name in RESERVED_CAMERA_IDS:
        raise PkiError(f"invalid camera id {name!r}: it is a topic name of the agent's contract")
    if not IDENTITY_NAME.fullmatch(name) or len(name) > 64:
        raise PkiError(
            f"invalid {what} {name!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit (it becomes part of MQTT topics and ACL rules)"
        )


def validate_topic_base(topic: str) -> None:
    levels = topic.split("/")
    if not all(TOPIC_LEVEL.fullmatch(level) for level in levels):
        raise PkiError(
            f"invalid topic base {topic!r}: levels separated by '/', each of A-Z a-z 0-9 _ . -"
            " (no wildcards, no empty levels)"
        )


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PkiError(f"invalid IP address {text!r}") from None

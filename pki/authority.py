"""The certificate authority behind camera-agent's mutual TLS.

Layout of a PKI directory (external tools and the pod's mounts rely on it)::

    DIR/ca_chain.pem             intermediate + root: what the broker and clients trust
    DIR/crl.pem                  revocation lists of the intermediate and of the root
    DIR/identities.json          every issued certificate with its role (renders the ACL)
    DIR/ca/root.pem, root.key    Root CA (path length 1); signs only the intermediate and its CRL
    DIR/ca/intermediate.pem, .key Intermediate CA (path length 0); signs everything else
    DIR/server/cert.pem, key.pem the broker's certificate (leaf + intermediate), serverAuth only
    DIR/server/acl               the Mosquitto ACL rendered from identities.json
    DIR/clients/NAME/cert.pem, key.pem  client certificates (leaf + intermediate), clientAuth only
    DIR/bridges/SITE.conf        a site broker's bridge to the central broker (`camera-pki bridge`)

Private keys are written with mode 0600 and every file is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.atomicfile import write_atomic
from pki.access import ALL_CAMERAS, SCOPE_PREFIX
from pki.acl import render_acl
from pki.certs import (
    Issuer,
    PrivateKey,
    ca_key_usage,
    cert_builder,
    cert_pem,
    key_pem,
    leaf_key_usage,
    new_key,
    sign,
    utc_now,
    x509_name,
)
from pki.model import (
    DEFAULT_BASE_TOPIC,
    Identity,
    KeyType,
    Paths,
    PkiError,
    Registry,
    Role,
    validate_identity_name,
    validate_topic_base,
)

# Re-exported: callers (the CLI, the tests, the benchmarks) import these from here.
__all__ = ["CertificateAuthority", "Identity", "KeyType", "PkiError", "Role"]

# Names the broker is reached by: loopback for the native run, the service names for the pod and
# for the Podman-network variant (see podman-compose.yml).
# The machine's own name is added at init, for URLs such as storage.public_url's default.
DEFAULT_SERVER_DNS = ("localhost", "broker", "mosquitto", "camera-broker")
DEFAULT_SERVER_IPS = ("127.0.0.1", "::1")

ROOT_DAYS = 3650
INTERMEDIATE_DAYS = 1825
LEAF_DAYS = (
    825  # the CA/Browser Forum's historical cap; long enough for devices, short enough to rotate
)
# OpenSSL refuses every client once the CRL is past its next-update date, so it must outlive the
# gaps between `camera-pki crl` runs by a wide margin. `camera-pki list` warns 30 days ahead.
CRL_DAYS = 365


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

    def _intermediate(self) -> Issuer:
        return self._load_issuer(self.paths.intermediate_cert, self.paths.intermediate_key)

    def _root(self) -> Issuer:
        return self._load_issuer(self.paths.root_cert, self.paths.root_key)

    @staticmethod
    def _load_issuer(cert_path: Path, key_path: Path) -> Issuer:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError(f"the CA key {key_path} is neither ECDSA nor RSA")
        return Issuer(cert, key)

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
        now = utc_now()

        root_key = new_key(key_type)
        root_name = x509_name("camera-agent Root CA", "ca")
        root_cert = sign(
            cert_builder(
                root_name, root_name, root_key.public_key(), now, now + dt.timedelta(ROOT_DAYS)
            )
            # Path length 1: the root may sign one intermediate CA that signs only leaves.
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_key_usage(), critical=True),
            root_key,
        )

        inter_key = new_key(key_type)
        inter_cert = sign(
            cert_builder(
                x509_name("camera-agent Intermediate CA", "ca"),
                root_name,
                inter_key.public_key(),
                now,
                now + dt.timedelta(INTERMEDIATE_DAYS),
            )
            # Path length 0: the intermediate signs leaves, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_key_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            ),
            root_key,
        )
        p = self.paths
        write_atomic(p.root_key, key_pem(root_key), 0o600)
        write_atomic(p.root_cert, cert_pem(root_cert))
        write_atomic(p.intermediate_key, key_pem(inter_key), 0o600)
        write_atomic(p.intermediate_cert, cert_pem(inter_cert))
        write_atomic(p.ca_chain, cert_pem(inter_cert, root_cert))
        issuer = Issuer(inter_cert, inter_key)
        root = Issuer(root_cert, root_key)

        dns = list(dict.fromkeys((*DEFAULT_SERVER_DNS, *_host_names(), *server_dns)))
        self._issue_server(issuer, key_type, dns, ips, self.paths.server_cert.parent)
        registry = Registry(key_type=key_type)
        self._write_crl(registry, issuer, root)
        self._issue_client(issuer, registry, "agent", Role.AGENT, None, base_topic, LEAF_DAYS)
        # Without a camera the operator is fleet-wide: the ACL grants it every recorded camera.
        self._issue_client(issuer, registry, "operator", Role.OPERATOR, None, None, LEAF_DAYS)
        self._save_registry(registry)
        return True

    def _issue_server(
        self,
        issuer: Issuer,
        key_type: KeyType,
        dns: Iterable[str],
        ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
        directory: Path,
        common_name: str = "mqtt-broker",
        days: int = LEAF_DAYS,
    ) -> x509.Certificate:
        key = new_key(key_type)
        now = utc_now()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ip) for ip in ips]
        cert = sign(
            self._leaf_builder(issuer, common_name, "server", key, now, days)
            .add_extension(leaf_key_usage(key_type), critical=True)
            # serverAuth only: the broker's certificate cannot be used to log in as a client.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False),
            issuer.key,
        )
        write_atomic(directory / "key.pem", key_pem(key), 0o600)
        write_atomic(directory / "cert.pem", cert_pem(cert, issuer.cert))
        return cert

    def _registry_without(self, name: str) -> Registry:
        """The registry, once it is clear that no current certificate is named ``name``."""
        registry = self.load_registry()
        existing = registry.find_active(name)
        if existing is not None:
            raise PkiError(
                f"a certificate named {name!r} exists already (serial {existing.serial:x}); "
                f"revoke it first with `camera-pki revoke {self.paths.root} {name}`"
            )
        return registry

    def issue_server(
        self,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = LEAF_DAYS,
    ) -> Identity:
        """A server certificate of its own for one broker/nginx/MediaMTX host, in
        `servers/NAME/`: the names clients reach it by, beside the in-pod ones every server
        certificate carries (localhost, broker, ...). A site holding its own cannot pose as
        another server, as it could with the one `server/` every broker used to share."""
        validate_identity_name(name)
        registry = self._registry_without(name)
        addresses = [_parse_ip(ip) for ip in dict.fromkeys((*DEFAULT_SERVER_IPS, *ips))]
        for host in dns:
            _validate_dns_name(host)
        names = list(dict.fromkeys((*DEFAULT_SERVER_DNS, *dns)))
        identity = self._issue_named_server(registry, name, names, addresses, days)
        self._save_registry(registry)
        return identity

    def _issue_named_server(
        self,
        registry: Registry,
        name: str,
        dns: Sequence[str],
        ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
        days: int,
    ) -> Identity:
        cert = self._issue_server(
            self._intermediate(), registry.key_type, dns, ips, self.paths.server_dir(name),
            common_name=name, days=days,
        )  # fmt: skip
        identity = Identity(
            name=name,
            role=Role.SERVER,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc.isoformat(),
        )
        registry.identities.append(identity)
        return identity

    def server_names(self, name: str | None = None) -> tuple[list[str], list[str]]:
        """(DNS names, IP addresses) of server ``name``'s certificate (None: `server/`)."""
        path = self.paths.server_dir(name) if name else self.paths.server_cert.parent
        cert = x509.load_pem_x509_certificates((path / "cert.pem").read_bytes())[0]
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return (
            sans.get_values_for_type(x509.DNSName),
            [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)],
        )

    @staticmethod
    def _leaf_builder(
        issuer: Issuer,
        common_name: str,
        unit: str,
        key: PrivateKey,
        not_before: dt.datetime,
        days: int,
        scope: str | None = None,
    ) -> x509.CertificateBuilder:
        return (
            cert_builder(
                x509_name(common_name, unit, scope),
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
        registry = self._registry_without(name)
        if role is Role.SERVER:
            raise PkiError(
                f"a server certificate takes names, not a camera: `camera-pki issue"
                f" {self.paths.root} {name} --role server --dns HOST [--ip ADDRESS]`"
            )
        if role is Role.BRIDGE and (camera is not None or base_topic is not None):
            raise PkiError(
                f"a bridge carries every camera of its site (ids {name}-...): it takes neither"
                " --camera nor --base-topic"
            )
        if role is Role.BRIDGE:
            for other in registry.identities:
                overlap = other.name.startswith(f"{name}-") or name.startswith(f"{other.name}-")
                if other.role == Role.BRIDGE and other.revoked_at is None and overlap:
                    raise PkiError(
                        f"site {name!r} and site {other.name!r} would share camera ids (a site's"
                        " cameras are `SITE-...`): choose a site name that is not the other's"
                        " prefix"
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
        issuer: Issuer,
        registry: Registry,
        name: str,
        role: Role,
        camera: str | None,
        base_topic: str | None,
        days: int,
        not_before: dt.datetime | None = None,
    ) -> Identity:
        key = new_key(registry.key_type)
        start = not_before or utc_now()
        scope = base_topic or ALL_CAMERAS
        if role is Role.BRIDGE:
            scope = f"{DEFAULT_BASE_TOPIC}/{name}-{ALL_CAMERAS}"  # its site's cameras
        cert = sign(
            self._leaf_builder(issuer, name, str(role), key, start, days, scope)
            .add_extension(leaf_key_usage(registry.key_type), critical=True)
            # clientAuth only: a stolen client key cannot impersonate the broker.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            ),
            issuer.key,
        )
        directory = self.paths.client_dir(name)
        write_atomic(directory / "key.pem", key_pem(key), 0o600)
        write_atomic(directory / "cert.pem", cert_pem(cert, issuer.cert))
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

    def browser_bundle(self, name: str) -> Path:
        """``name``'s PKCS#12 bundle for a browser, made once with a random password written
        beside it (`bundle.p12.password`); the run and pod scripts point people to it."""
        path = self.paths.client_dir(name) / "bundle.p12"
        if not path.exists():
            password = secrets.token_urlsafe(18).encode()
            write_atomic(path.with_name("bundle.p12.password"), password + b"\n", 0o600)
            self.export_p12(name, password)
        return path

    def revoke(self, name: str) -> Identity:
        registry = self.load_registry()
        identity = registry.find_active(name)
        if identity is None:
            revoked = [i for i in registry.identities if i.name == name]
            if revoked:
                raise PkiError(f"{name!r} was revoked already, at {revoked[-1].revoked_at}")
            raise PkiError(f"no certificate named {name!r} in {self.paths.root}")
        identity.revoked_at = utc_now().isoformat()
        self._write_crl(registry, self._intermediate(), self._root())
        self._save_registry(registry)
        return identity

    def reissue(
        self, name: str, grace: dt.timedelta = dt.timedelta(0), days: int = LEAF_DAYS
    ) -> tuple[Identity, Identity]:
        """A new certificate (and key) for ``name`` with its role, camera and scope, in its
        client directory; the old one is revoked now, or by `refresh_crl` once ``grace`` has
        passed (so the devices that hold it can be given the new one meanwhile)."""
        registry = self.load_registry()
        old = registry.find_active(name)
        if old is None:
            raise PkiError(f"no current certificate named {name!r} in {self.paths.root}")
        if old.role == Role.SERVER:  # the same names as before
            dns, ips = self.server_names(name)
            new = self._issue_named_server(registry, name, dns, [_parse_ip(ip) for ip in ips], days)
        else:
            new = self._issue_client(
                self._intermediate(), registry, name, old.role, old.camera, old.base_topic, days
            )
        old.superseded_by = new.serial
        now = utc_now()
        old.revoke_at = (now + grace).isoformat()
        if grace <= dt.timedelta(0):
            old.revoked_at = now.isoformat()
            self._write_crl(registry, self._intermediate(), self._root())
        self._save_registry(registry)
        return old, new

    def refresh_crl(self) -> list[Identity]:
        """Re-sign the CRL with a fresh next-update date (run well within CRL_DAYS), revoking
        the reissued certificates whose grace has ended; returns those."""
        registry = self.load_registry()
        now = utc_now()
        due = [
            i
            for i in registry.identities
            if i.revoked_at is None
            and i.revoke_at is not None
            and dt.datetime.fromisoformat(i.revoke_at) <= now
        ]
        for identity in due:
            identity.revoked_at = now.isoformat()
        self._write_crl(registry, self._intermediate(), self._root())
        if due:
            self._save_registry(registry)
        return due

    def subject_problems(self, identity: Identity) -> list[str]:
        """What the current certificate of ``identity`` lacks that a server checks: the role
        and scope OUs person-facing servers grant by (certificates issued before them)."""
        if identity.role == Role.SERVER:
            return []  # serverAuth only: nobody grants a server by its OUs
        path = self.paths.client_dir(identity.name) / "cert.pem"
        try:
            cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        except (OSError, ValueError):
            return [f"its certificate {path} cannot be read"]
        if cert.serial_number != identity.serial:
            return []  # the file holds another certificate of the name (a later one)
        units = [
            str(a.value)
            for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        ]
        problems = []
        if str(identity.role) not in units:
            problems.append("no role OU")
        if not any(unit.startswith(SCOPE_PREFIX) for unit in units):
            problems.append("no scope OU")
        return problems

    def crl_next_update(self) -> dt.datetime | None:
        crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
        return crl.next_update_utc

    def _write_crl(self, registry: Registry, intermediate: Issuer, root: Issuer) -> None:
        """crl.pem: the intermediate's CRL (the client certificates it revoked), then the root's
        (empty: no intermediate has been revoked). Mosquitto checks the client's issuer only;
        nginx checks every CA of the chain and refuses every client without a CRL for each."""
        revoked = [
            (identity.serial, dt.datetime.fromisoformat(identity.revoked_at))
            for identity in registry.identities
            if identity.revoked_at is not None
        ]
        write_atomic(self.paths.crl, _crl(intermediate, revoked) + _crl(root, []))


def _crl(issuer: Issuer, revoked: Iterable[tuple[int, dt.datetime]]) -> bytes:
    now = utc_now()
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
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# Topic levels the agent's contract uses under a base; a camera named like one would collide.


def _host_names() -> list[str]:
    """This machine's host name, when it is a valid DNS name."""
    name = socket.gethostname().lower()
    valid = re.fullmatch(
        r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", name
    )
    return [name] if valid else []


def _validate_dns_name(name: str) -> None:
    valid = re.fullmatch(
        r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
        name,
    )
    if not valid:
        raise PkiError(f"invalid DNS name {name!r}: lower-case labels of a-z, 0-9 and '-'")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PkiError(f"invalid IP address {text!r}") from None

"""The PKI's model: roles, issued identities and their registry, the directory layout, and
the rules for names and topics. No cryptography here; `certs.py` makes certificates and
`authority.py` runs the operations."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

DEFAULT_BASE_TOPIC = "camera"
IDENTITY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# A topic base is a plain MQTT topic: no wildcards, no empty levels, not under $SYS.
TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]+")


class PkiError(Exception):
    """A PKI operation that cannot be carried out; the message says why, for the CLI user."""


class Role(StrEnum):
    AGENT = "agent"  # a camera: reads its commands, writes its reports
    OPERATOR = "operator"  # commands cameras and reads everything they report
    VIEWER = "viewer"  # reads reports only
    BRIDGE = "bridge"  # a site's broker at the central one: carries the site's cameras only
    CONSOLE = "console"  # the browser console's service: acts for the people it checks
    SERVER = "server"  # a broker, nginx or MediaMTX host (`servers/NAME`): no MQTT rights


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
    superseded_by: int | None = None  # `reissue`: the serial of its successor
    revoke_at: str | None = None  # `reissue` with a grace: when `camera-pki crl` revokes it

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if dt.datetime.fromisoformat(self.not_after) < now:
            return "expired"
        if self.superseded_by is not None:
            return f"reissued, revoked from {(self.revoke_at or '')[:10]}"
        return "valid"


@dataclass
class Registry:
    key_type: KeyType
    identities: list[Identity] = field(default_factory=list)

    def find_active(self, name: str) -> Identity | None:
        """The current certificate of ``name``: not revoked, not reissued (revoked ones stay
        recorded for the CRL; a reissued one until its grace ends)."""
        return next(
            (
                i
                for i in self.identities
                if i.name == name and i.revoked_at is None and i.superseded_by is None
            ),
            None,
        )


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

    def server_dir(self, name: str) -> Path:
        """A server's own certificate (`issue NAME --role server`); `server/` is the first one,
        made by `init`."""
        return self.root / "servers" / name

    def identity_dir(self, name: str, role: str) -> Path:
        return self.server_dir(name) if role == "server" else self.client_dir(name)

    def bridge_config(self, site: str) -> Path:
        return self.root / "bridges" / f"{site}.conf"


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


def site_agents(identities: Sequence[Identity], site: str) -> list[Identity]:
    """The unrevoked agents of site ``site``. Fleet camera ids are `SITE-CAM`, unique across
    sites, so a site's cameras are the ids that start with its name and `-`."""
    return [
        i
        for i in identities
        if i.revoked_at is None
        and i.role == Role.AGENT
        and i.camera is not None
        and i.camera.startswith(f"{site}-")
        and len(i.camera) > len(site) + 1
    ]


def validate_topic_base(topic: str) -> None:
    levels = topic.split("/")
    if not all(TOPIC_LEVEL.fullmatch(level) for level in levels):
        raise PkiError(
            f"invalid topic base {topic!r}: levels separated by '/', each of A-Z a-z 0-9 _ . -"
            " (no wildcards, no empty levels)"
        )

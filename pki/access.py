"""Who may do what to which camera, decided from a client certificate alone.

`camera-pki` writes role and scope into every client certificate's subject
(`CN=<name>,OU=scope:<topic base or *>,OU=<role>,O=camera-agent`, see `certs.x509_name`). The
broker's ACL (`acl.py`), nginx's captures (`web/nginx.conf`) and the console service all grant
by those two facts; the rule itself lives here once:

- a viewer reads the reports of the cameras in its scope and changes nothing;
- an operator reads them and commands those cameras;
- a console (the browser console's service) reads and commands every camera in its scope, on
  behalf of the people whose own certificates it checks with `permits`;
- agents, bridges and unknown roles get nothing from a person-facing service.

No `cryptography` here: the console service imports this module and reads the subject nginx
verified, as text (RFC 2253, which escapes a comma inside a value, so one attribute cannot pose
as another).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SCOPE_PREFIX = "scope:"
ALL_CAMERAS = "*"
ORGANIZATION = "camera-agent"


class Access(enum.Enum):
    READ = "read"  # reports: state, controls, events, pictures, the stream, the captures
    COMMAND = "command"  # settings and actions (pictures, recordings, deletes)


# What each person-facing role may do within its scope. Roles not listed get nothing.
ROLE_ACCESS: dict[str, frozenset[Access]] = {
    "viewer": frozenset({Access.READ}),
    "operator": frozenset({Access.READ, Access.COMMAND}),
}


@dataclass(frozen=True)
class Subject:
    """A verified client certificate's identity: its CN, role and scope."""

    name: str
    role: str
    scope: str | None  # a topic base, `*` for every camera, None when the certificate has none

    @property
    def dn(self) -> str:
        return f"CN={self.name}"

    def covers(self, base: str) -> bool:
        """Whether ``base`` (a camera's topic base) lies in this subject's scope."""
        return self.scope is not None and scope_covers(self.scope, base)

    def permits(self, base: str, access: Access) -> bool:
        return access in ROLE_ACCESS.get(self.role, frozenset()) and self.covers(base)

    def may_command_any(self) -> bool:
        return Access.COMMAND in ROLE_ACCESS.get(self.role, frozenset())


def scope_covers(scope: str, base: str) -> bool:
    """`*` covers every camera; a topic base covers that camera only (a scope is never a
    prefix: `camera` is the single camera's base, not the fleet under `camera/`)."""
    return scope in {ALL_CAMERAS, base}


_RDN = re.compile(r"((?:[^,\\]|\\.)*)(?:,|$)")
_HEX_PAIR = re.compile(r"\\([0-9A-Fa-f]{2})")


def _unescape(value: str) -> str:
    value = _HEX_PAIR.sub(lambda m: chr(int(m.group(1), 16)), value)
    return re.sub(r"\\(.)", r"\1", value)


def parse_subject(dn: str) -> Subject | None:
    """The subject nginx passes (`$ssl_client_s_dn`, RFC 2253), or None when it is not one of
    our client certificates (no CN, no role, another organisation, a multi-valued RDN)."""
    names: list[str] = []
    units: list[str] = []
    organizations: list[str] = []
    for match in _RDN.finditer(dn):
        rdn = match.group(1)
        if not rdn:
            if match.end() >= len(dn):
                break
            return None
        if re.search(r"(?<!\\)\+", rdn):
            return None  # multi-valued RDNs are not ours
        key, sep, raw = rdn.partition("=")
        if not sep:
            return None
        value = _unescape(raw)
        {"CN": names, "OU": units, "O": organizations}.get(key.strip().upper(), []).append(value)
    if len(names) != 1 or organizations != [ORGANIZATION]:
        return None
    scopes = [u.removeprefix(SCOPE_PREFIX) for u in units if u.startswith(SCOPE_PREFIX)]
    roles = [u for u in units if not u.startswith(SCOPE_PREFIX)]
    if len(roles) != 1 or len(scopes) > 1:
        return None
    return Subject(names[0], roles[0], scopes[0] if scopes else None)

"""`camera-pki`: create and manage the certificate chain for broker, agents and operators."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from agent.atomicfile import write_atomic
from pki.authority import (
    CertificateAuthority,
    KeyType,
    PkiError,
    Role,
)
from pki.bridge import CONTAINER_CERTS, parse_central, render_bridge_config
from pki.model import site_agents

CRL_WARNING_DAYS = 30


def _cmd_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority(args.dir)
    created = ca.init(
        server_dns=args.server_dns,
        server_ips=args.server_ip,
        key_type=KeyType(args.key_type),
        base_topic=args.base_topic,
        force=args.force,
    )
    if not created:
        print(f"{args.dir}: a PKI exists already; nothing changed (use --force to replace it)")
        return 0
    print(
        "created Root CA, Intermediate CA, broker certificate and clients agent, operator"
        f" in {args.dir}"
    )
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    ca = CertificateAuthority(args.dir)
    if args.role == Role.SERVER:
        return _issue_server(ca, args)
    if args.dns or args.ip:
        raise PkiError("--dns and --ip name a server: they go with --role server")
    identity = ca.issue(
        args.name,
        Role(args.role),
        camera=args.camera,
        base_topic=args.base_topic,
        days=args.days,
    )
    where = ca.paths.client_dir(args.name)
    print(
        f"issued {identity.role} certificate {identity.name}"
        f" (serial {identity.serial:x}) in {where}"
    )
    if args.p12:
        password = _p12_password(args.p12_password_file)
        bundle = ca.export_p12(args.name, password)
        if args.p12_password_file is None:
            secret_file = bundle.with_name("bundle.p12.password")
            write_atomic(secret_file, password + b"\n", 0o600)
            print(f"wrote {bundle}; its password is in {secret_file}")
        else:
            print(f"wrote {bundle}")
    print("reload the broker to apply the new ACL: kill -HUP $(pidof mosquitto)")
    return 0


def _issue_server(ca: CertificateAuthority, args: argparse.Namespace) -> int:
    if args.camera or args.base_topic or args.p12:
        raise PkiError(
            "a server certificate takes --dns and --ip, not --camera, --base-topic or --p12"
        )
    if not args.dns and not args.ip:
        raise PkiError(
            "name the server: --dns HOST (its name, repeatable) and/or --ip ADDRESS, as its"
            " clients reach it"
        )
    identity = ca.issue_server(args.name, dns=args.dns, ips=args.ip, days=args.days)
    dns, ips = ca.server_names(args.name)
    print(
        f"issued server certificate {identity.name} (serial {identity.serial:x}) in"
        f" {ca.paths.server_dir(args.name)} for {', '.join([*dns, *ips])}"
    )
    print(
        "give it to that host's broker, nginx and MediaMTX (the pod: CAMERA_SERVER="
        f"{args.name} scripts/pod-up); no other host needs its key"
    )
    return 0


def _p12_password(password_file: Path | None) -> bytes:
    if password_file is None:
        return secrets.token_urlsafe(18).encode()
    password = password_file.read_bytes().strip()
    if not password:
        raise PkiError(f"{password_file} is empty; a PKCS#12 bundle needs a password")
    return password


def _cmd_revoke(args: argparse.Namespace) -> int:
    identity = CertificateAuthority(args.dir).revoke(args.name)
    print(f"revoked {identity.name} (serial {identity.serial:x}); rewrote crl.pem and the ACL")
    print("restart the broker so that it loads the new CRL")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    ca = CertificateAuthority(args.dir)
    due = ca.refresh_crl()
    for identity in due:
        serial = f"{identity.serial:x}"
        print(f"revoked {identity.name} (serial {serial}): its grace after reissue ended")
    print(f"re-signed {ca.paths.crl}; next update {ca.crl_next_update()}")
    if due:
        print("restart the broker so that it loads the new CRL")
    return 0


def _cmd_reissue(args: argparse.Namespace) -> int:
    if args.grace_days < 0:
        raise PkiError(f"--grace-days {args.grace_days:g}: give 0 or more days")
    ca = CertificateAuthority(args.dir)
    old, new = ca.reissue(args.name, dt.timedelta(days=args.grace_days), args.days)
    print(
        f"reissued {new.role} certificate {new.name} (serial {new.serial:x}) in"
        f" {ca.paths.identity_dir(new.name, new.role)}"
    )
    if old.revoked_at is not None:
        print(f"revoked the old one (serial {old.serial:x}); restart the broker for the new CRL")
    else:
        print(
            f"the old one (serial {old.serial:x}) stays valid until {old.revoke_at}; after"
            f" that `camera-pki crl {args.dir}` revokes it"
        )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    ca = CertificateAuthority(args.dir)
    registry = ca.load_registry()
    now = dt.datetime.now(dt.UTC)
    rows = [("NAME", "ROLE", "CAMERA", "TOPIC BASE", "SERIAL", "EXPIRES", "STATUS")]
    for name, role, path in (
        ("root", "root-ca", ca.paths.root_cert),
        ("intermediate", "intermediate-ca", ca.paths.intermediate_cert),
        ("mqtt-broker", "server", ca.paths.server_cert),
    ):
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        expires = cert.not_valid_after_utc
        status = "expired" if expires < now else "valid"
        rows.append(
            (name, role, "-", "-", f"{cert.serial_number:x}", f"{expires:%Y-%m-%d}", status)
        )
    for i in registry.identities:
        rows.append(
            (
                i.name,
                str(i.role),
                i.camera or "-",
                "-" if i.role == Role.SERVER else i.base_topic or "(all cameras)",
                f"{i.serial:x}",
                i.not_after[:10],
                i.status(now),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for identity in registry.identities:
        if identity.status(now) != "valid":
            continue
        problems = ca.subject_problems(identity)
        if problems:
            print(
                f"warning: {identity.name} ({identity.role}) has {' and '.join(problems)}"
                " (issued before camera-pki wrote them): nginx (the captures, the console's"
                " pages) and the console service refuse it; the broker still accepts it. Renew"
                f" it: `camera-pki reissue {args.dir} {identity.name} --grace-days 7`",
                file=sys.stderr,
            )
    next_update = ca.crl_next_update()
    if next_update is not None and next_update - now < dt.timedelta(days=CRL_WARNING_DAYS):
        print(
            f"warning: the CRL expires {next_update:%Y-%m-%d}; after that the broker refuses every "
            f"client. Run `camera-pki crl {args.dir}` and restart the broker.",
            file=sys.stderr,
        )
    return 0


def _cmd_bridge(args: argparse.Namespace) -> int:
    ca = CertificateAuthority(args.dir)
    registry = ca.load_registry()
    bridge = registry.find_active(args.site)
    if bridge is None:
        raise PkiError(
            f"no bridge identity {args.site!r}; issue it first with"
            f" `camera-pki issue {args.dir} {args.site} --role bridge`"
        )
    text = render_bridge_config(bridge, args.central, args.certs_dir, not args.no_discovery)
    _warn_unless_the_centre_has_its_own(ca, args.central)
    path = ca.paths.bridge_config(args.site)
    write_atomic(path, text.encode(), 0o644)
    cameras = [str(i.camera) for i in site_agents(registry.identities, args.site)]
    print(f"wrote {path}: site {args.site} bridged to {args.central}")
    print(
        f"cameras of the site: {', '.join(cameras)}"
        if cameras
        else f"no camera of the site yet: issue agents with --camera {args.site}-NAME"
    )
    print(
        "put it in the site broker's include_dir (the pod: CAMERA_SITE="
        + args.site
        + " scripts/pod-up), with the bridge's certificate and key"
    )
    return 0


def _warn_unless_the_centre_has_its_own(ca: CertificateAuthority, central: str) -> None:
    """The bridge checks that the centre's certificate names HOST; only a certificate the centre
    alone holds makes that check worth anything."""
    host, _ = parse_central(central)
    owners = [
        i.name for i in ca.load_registry().identities
        if i.role == Role.SERVER and i.revoked_at is None and host in _all_names(ca, i.name)
    ]  # fmt: skip
    shared = host in _all_names(ca, None)
    if not owners:
        print(
            f"warning: no server certificate of its own names {host}: issue the centre's with"
            f" `camera-pki issue {ca.paths.root} central --role server --dns {host}` and give it"
            " to the central broker only"
            + ("; today the shared server/ names it, and every site holds that key" if shared
               else ""),
            file=sys.stderr,
        )  # fmt: skip
    elif shared:
        print(
            f"warning: the shared server/ certificate also names {host}: a site holding it"
            f" could pose as the centre; make server/ without that name (see README, Fleets)",
            file=sys.stderr,
        )


def _all_names(ca: CertificateAuthority, name: str | None) -> set[str]:
    dns, ips = ca.server_names(name)
    return {*dns, *ips}


def _cmd_acl(args: argparse.Namespace) -> int:
    print(CertificateAuthority(args.dir).paths.acl.read_text(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camera-pki", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("dir", type=Path, help="the PKI directory")
        p.set_defaults(handler=handler)
        return p

    init = command(
        "init", _cmd_init, "create Root CA, Intermediate CA, broker and client certificates"
    )
    init.add_argument(
        "--server-dns",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name for the broker certificate (repeatable)",
    )
    init.add_argument(
        "--server-ip",
        action="append",
        default=[],
        metavar="IP",
        help="extra IP address for the broker certificate (repeatable)",
    )
    init.add_argument(
        "--key-type",
        choices=[k.value for k in KeyType],
        default=KeyType.ECDSA.value,
        help="ECDSA P-256 (default) or RSA 3072",
    )
    init.add_argument("--base-topic", default="camera", help="topic base of the `agent` identity")
    init.add_argument(
        "--force", action="store_true", help="replace an existing PKI (all certificates)"
    )

    issue = command(
        "issue", _cmd_issue, "issue another client certificate, or a server's (--role server)"
    )
    issue.add_argument("name", help="identity name (CN, MQTT username): [a-z0-9][a-z0-9_-]*")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
    issue.add_argument(
        "--camera", help="limit to one camera; an agent's topic base becomes camera/ID"
    )
    issue.add_argument(
        "--base-topic", help="explicit topic base (overrides the one --camera implies)"
    )
    issue.add_argument(
        "--dns", action="append", default=[], metavar="HOST",
        help="a server's DNS name (--role server; repeatable)",
    )  # fmt: skip
    issue.add_argument(
        "--ip", action="append", default=[], metavar="ADDRESS",
        help="a server's IP address (--role server; repeatable)",
    )  # fmt: skip
    issue.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    issue.add_argument("--p12", action="store_true", help="also write a password-protected PKCS#12")
    issue.add_argument(
        "--p12-password-file",
        type=Path,
        help="read the PKCS#12 password from this file instead of generating one",
    )

    revoke = command("revoke", _cmd_revoke, "revoke a client certificate and rewrite crl.pem")
    revoke.add_argument("name")
    command("list", _cmd_list, "show every certificate with role, serial, expiry and status")
    command(
        "crl", _cmd_crl,
        "re-sign the CRL with a fresh next-update date; revoke reissued certificates whose grace"
        " ended",
    )  # fmt: skip
    reissue = command(
        "reissue", _cmd_reissue, "renew a certificate: same name, role and scope, a new key"
    )
    reissue.add_argument("name", help="the identity to renew")
    reissue.add_argument(
        "--grace-days", type=float, default=0.0,
        help="days the old certificate stays valid (default 0: revoked at once)",
    )  # fmt: skip
    reissue.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    command("acl", _cmd_acl, "print the Mosquitto ACL rendered from the identities")
    bridge = command(
        "bridge", _cmd_bridge, "write DIR/bridges/SITE.conf: the site broker's bridge to the centre"
    )
    bridge.add_argument("site", help="the site's bridge identity (`issue SITE --role bridge`)")
    bridge.add_argument(
        "--central", required=True, metavar="HOST:PORT", help="the central broker's mTLS listener"
    )
    bridge.add_argument(
        "--certs-dir",
        default=CONTAINER_CERTS,
        help=f"where the site's broker finds the PKI files (default {CONTAINER_CERTS}, the pod's)",
    )
    bridge.add_argument(
        "--no-discovery",
        action="store_true",
        help="do not carry Home Assistant discovery (the agents' homeassistant.discovery = false)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o022)
    try:
        return int(args.handler(args))
    except PkiError as err:
        print(f"camera-pki: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"camera-pki: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

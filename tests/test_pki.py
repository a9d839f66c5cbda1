"""camera-pki: the chain verifies with openssl and carries exactly the usages it should."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.cli import main as pki_main


def certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def openssl_verify(pki: Path, cert: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "verify", "-CAfile", str(pki / "ca" / "root.pem"),
            "-untrusted", str(pki / "ca" / "intermediate.pem"), "-purpose", purpose, str(cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


@pytest.fixture
def fresh_pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    assert (
        pki_main(["init", str(directory), "--server-dns", "cam.example", "--server-ip", "10.1.2.3"])
        == 0
    )
    return directory


def test_chain_verifies_with_openssl_for_its_purpose(fresh_pki: Path) -> None:
    server = fresh_pki / "server" / "cert.pem"
    agent = fresh_pki / "clients" / "agent" / "cert.pem"
    assert openssl_verify(fresh_pki, server, "sslserver").returncode == 0
    assert openssl_verify(fresh_pki, agent, "sslclient").returncode == 0
    # The purposes are exclusive: a client certificate cannot serve, nor a server log in.
    assert openssl_verify(fresh_pki, agent, "sslserver").returncode != 0
    assert openssl_verify(fresh_pki, server, "sslclient").returncode != 0


def test_ca_constraints_and_key_usages(fresh_pki: Path) -> None:
    (root,) = certs(fresh_pki / "ca" / "root.pem")
    (inter,) = certs(fresh_pki / "ca" / "intermediate.pem")
    for ca, path_length in ((root, 1), (inter, 0)):
        basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca and basic.value.path_length == path_length
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
        assert not (usage.digital_signature or usage.key_encipherment or usage.content_commitment)
    chain = certs(fresh_pki / "ca_chain.pem")
    assert [c.subject for c in chain] == [inter.subject, root.subject]


def test_leaf_usages_and_server_names(fresh_pki: Path) -> None:
    server_chain = certs(fresh_pki / "server" / "cert.pem")
    assert len(server_chain) == 2  # leaf + intermediate
    server = server_chain[0]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert {"localhost", "broker", "cam.example"} <= set(dns)
    assert {"127.0.0.1", "10.1.2.3"} <= set(ips)
    for name in ("agent", "operator"):
        leaf = certs(fresh_pki / "clients" / name / "cert.pem")[0]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        cn = leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        assert cn == name


def test_private_keys_are_0600(fresh_pki: Path) -> None:
    keys = [*fresh_pki.glob("ca/*.key"), *fresh_pki.glob("**/key.pem")]
    assert len(keys) == 5
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys)


def test_init_again_changes_nothing_unless_forced(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_before = (fresh_pki / "ca" / "root.pem").read_bytes()
    capsys.readouterr()
    assert pki_main(["init", str(fresh_pki)]) == 0
    assert "exists already; nothing changed" in capsys.readouterr().out
    assert (fresh_pki / "ca" / "root.pem").read_bytes() == root_before
    assert pki_main(["init", str(fresh_pki), "--force"]) == 0
    assert (fresh_pki / "ca" / "root.pem").read_bytes() != root_before


def test_rsa_key_type(tmp_path: Path) -> None:
    assert pki_main(["init", str(tmp_path / "rsa"), "--key-type", "rsa"]) == 0
    leaf = certs(tmp_path / "rsa" / "clients" / "agent" / "cert.pem")[0]
    assert leaf.public_key().key_size == 3072  # type: ignore[union-attr]
    agent = tmp_path / "rsa" / "clients" / "agent" / "cert.pem"
    assert openssl_verify(tmp_path / "rsa", agent, "sslclient").returncode == 0


def test_issue_list_revoke_and_p12(fresh_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pki_main(["issue", str(fresh_pki), "phone", "--role", "viewer", "--p12"]) == 0
    password = (fresh_pki / "clients" / "phone" / "bundle.p12.password").read_bytes().strip()
    bundle = pkcs12.load_pkcs12(
        (fresh_pki / "clients" / "phone" / "bundle.p12").read_bytes(), password
    )
    assert bundle.cert is not None and bundle.key is not None
    assert len(bundle.additional_certs) == 2  # intermediate and root, for the app's trust store

    assert pki_main(["revoke", str(fresh_pki), "phone"]) == 0
    serial = certs(fresh_pki / "clients" / "phone" / "cert.pem")[0].serial_number
    crl = x509.load_pem_x509_crl((fresh_pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.next_update_utc is not None
    (inter,) = certs(fresh_pki / "ca" / "intermediate.pem")
    assert crl.issuer == inter.subject
    assert "user phone" not in (fresh_pki / "server" / "acl").read_text()

    capsys.readouterr()
    assert pki_main(["list", str(fresh_pki)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["root"][1] == "root-ca"
    assert rows["mqtt-broker"][1] == "server"
    assert rows["phone"][-1] == "revoked"
    assert rows["phone"][1] == "viewer"
    assert rows["agent"][-1] == "valid"
    assert rows["agent"][4] == f"{certs(fresh_pki / 'clients/agent/cert.pem')[0].serial_number:x}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "{dir}", "Bad/Name", "--role", "viewer"], "invalid name"),
        (["issue", "{dir}", "x", "--role", "agent", "--camera", "status"], "invalid camera id"),
        (["issue", "{dir}", "agent", "--role", "agent"], "exists already"),
        (["revoke", "{dir}", "nobody"], "no certificate named"),
        (["issue", "{missing}", "x", "--role", "viewer"], "not a PKI directory"),
    ],
)
def test_bad_input_is_a_clear_error(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [a.format(dir=fresh_pki, missing=fresh_pki / "nope") for a in args]
    assert pki_main(argv) == 2
    assert message in capsys.readouterr().err


def test_acl_grants_each_role_its_topics(fresh_pki: Path) -> None:
    assert pki_main(["issue", str(fresh_pki), "cam-x", "--role", "agent", "--camera", "x"]) == 0
    assert pki_main(["issue", str(fresh_pki), "guard", "--role", "viewer", "--camera", "x"]) == 0
    acl = (fresh_pki / "server" / "acl").read_text()
    blocks = {
        b.split("\n")[1]: b for b in acl.split("\n\n") if b.startswith("#") and "\nuser " in b
    }
    cam_x = blocks["user cam-x"]
    assert "topic read camera/x/control/#" in cam_x
    assert "topic write camera/x/status" in cam_x
    assert "camera/control" not in cam_x
    operator = blocks["user operator"]  # fleet-wide: every recorded camera
    assert (
        "topic write camera/x/control/#" in operator and "topic write camera/control/#" in operator
    )
    guard = blocks["user guard"]
    assert "write" not in guard and "topic read camera/x/status" in guard


def test_reissuing_a_revoked_name_keeps_the_old_serial_revoked(fresh_pki: Path) -> None:
    assert pki_main(["issue", str(fresh_pki), "tablet", "--role", "operator"]) == 0
    old = certs(fresh_pki / "clients" / "tablet" / "cert.pem")[0].serial_number
    assert pki_main(["revoke", str(fresh_pki), "tablet"]) == 0
    assert pki_main(["issue", str(fresh_pki), "tablet", "--role", "operator"]) == 0
    new = certs(fresh_pki / "clients" / "tablet" / "cert.pem")[0].serial_number
    assert pki_main(["crl", str(fresh_pki)]) == 0
    crl = x509.load_pem_x509_crl((fresh_pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old) is not None
    assert crl.get_revoked_certificate_by_serial_number(new) is None
    assert "user tablet" in (fresh_pki / "server" / "acl").read_text()


def test_client_subjects_name_role_and_scope_as_nginx_prints_them(fresh_pki: Path) -> None:
    assert pki_main(["issue", str(fresh_pki), "door", "--role", "viewer", "--camera", "door"]) == 0
    expected = {
        "agent": "CN=agent,OU=scope:camera,OU=agent,O=camera-agent",
        "operator": "CN=operator,OU=scope:*,OU=operator,O=camera-agent",
        "door": "CN=door,OU=scope:camera/door,OU=viewer,O=camera-agent",
    }
    for name, subject in expected.items():
        # openssl's RFC 2253 form is what nginx puts in $ssl_client_s_dn.
        printed = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253",
             "-in", str(fresh_pki / "clients" / name / "cert.pem")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert printed == f"subject={subject}"


def test_crl_file_holds_a_crl_for_each_ca_and_revocations_in_the_intermediates(
    fresh_pki: Path,
) -> None:
    assert pki_main(["revoke", str(fresh_pki), "operator"]) == 0
    text = (fresh_pki / "crl.pem").read_text()
    blocks = text.split("-----END X509 CRL-----")[:-1]
    crls = [x509.load_pem_x509_crl((b + "-----END X509 CRL-----\n").encode()) for b in blocks]
    (root,) = certs(fresh_pki / "ca" / "root.pem")
    (inter,) = certs(fresh_pki / "ca" / "intermediate.pem")
    assert [crl.issuer for crl in crls] == [inter.subject, root.subject]
    assert crls[0].is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert crls[1].is_signature_valid(root.public_key())  # type: ignore[arg-type]
    operator = certs(fresh_pki / "clients" / "operator" / "cert.pem")[0]
    assert crls[0].get_revoked_certificate_by_serial_number(operator.serial_number) is not None
    assert len(list(crls[1])) == 0

    # openssl checks the whole chain against them: the revoked leaf fails, the others pass.
    def verify(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-crl_check_all", "-CRLfile", str(fresh_pki / "crl.pem"),
             "-CAfile", str(fresh_pki / "ca" / "root.pem"),
             "-untrusted", str(fresh_pki / "ca" / "intermediate.pem"),
             str(fresh_pki / "clients" / name / "cert.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert verify("agent").returncode == 0, verify("agent").stderr
    assert "revoked" in verify("operator").stdout + verify("operator").stderr


def test_a_bridge_carries_its_sites_cameras_only(fresh_pki: Path) -> None:
    d = str(fresh_pki)
    assert pki_main(["issue", d, "farm", "--role", "bridge"]) == 0
    for camera in ("farm-barn", "farm-gate", "shop-door", "farmer"):
        assert pki_main(["issue", d, camera, "--role", "agent", "--camera", camera]) == 0
    acl = (fresh_pki / "server" / "acl").read_text()
    farm = next(b for b in acl.split("\n\n") if "\nuser farm\n" in b)
    assert farm.startswith("# bridge of site farm: cameras farm-barn, farm-gate")
    for camera in ("farm-barn", "farm-gate"):
        assert f"topic read camera/{camera}/control/#" in farm
        assert f"topic write camera/{camera}/status" in farm
        assert f"topic write homeassistant/+/{camera}/+/config" in farm
    # `farmer` is not `farm-...`; another site's cameras and the fleet-wide base are not its own.
    assert "farmer" not in farm and "shop-door" not in farm
    assert "camera/control" not in farm and "camera/#" not in farm
    subject = x509.load_pem_x509_certificates(
        (fresh_pki / "clients" / "farm" / "cert.pem").read_bytes()
    )[0].subject.rfc4514_string()
    assert subject == "CN=farm,OU=scope:camera/farm-*,OU=bridge,O=camera-agent"


def test_bridge_snippet_is_the_shipped_example_for_its_site(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(fresh_pki)
    assert pki_main(["issue", d, "site-a", "--role", "bridge"]) == 0
    assert pki_main(["bridge", d, "site-a", "--central", "central.example.org:8883"]) == 0
    assert "no camera of the site yet" in capsys.readouterr().out
    snippet = (fresh_pki / "bridges" / "site-a.conf").read_text()
    example = Path(__file__).resolve().parent.parent / "broker" / "bridge.conf.example"
    assert snippet == example.read_text()
    topics = [line.split()[1:] for line in snippet.splitlines() if line.startswith("topic ")]
    assert ["camera/+/control/#", "in", "1"] in topics
    assert ["camera/+/status", "out", "1"] in topics and ["camera/+/picture", "out", "1"] in topics
    assert all(qos == "1" for _, _, qos in topics)
    assert "cleansession false" in snippet and "bridge_insecure false" in snippet
    assert pki_main(["bridge", d, "site-a", "--central", "[fd00::1]:8883", "--no-discovery"]) == 0
    snippet = (fresh_pki / "bridges" / "site-a.conf").read_text()
    assert "address [fd00::1]:8883" in snippet and "homeassistant" not in snippet


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "{dir}", "farm", "--role", "bridge", "--camera", "x"], "takes neither"),
        (["bridge", "{dir}", "nowhere", "--central", "c:8883"], "no bridge identity 'nowhere'"),
        (["bridge", "{dir}", "operator", "--central", "c:8883"], "has role operator, not bridge"),
        (["bridge", "{dir}", "site-a", "--central", "central"], "give HOST:PORT"),
        (["bridge", "{dir}", "site-a", "--central", "c:99999"], "give HOST:PORT"),
        (["bridge", "{dir}", "site-a", "--central", "c d:8883"], "is not a host name"),
        (["issue", "{dir}", "site-a-north", "--role", "bridge"], "would share camera ids"),
        (["issue", "{dir}", "site", "--role", "bridge"], "would share camera ids"),
    ],
)
def test_bridge_mistakes_are_clear_errors(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert pki_main(["issue", str(fresh_pki), "site-a", "--role", "bridge"]) == 0
    assert pki_main([a.format(dir=fresh_pki) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_reissue_with_a_grace_keeps_the_old_one_until_the_crl_run_after_it(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pki_main(["issue", str(fresh_pki), "door", "--role", "viewer", "--camera", "cam1"]) == 0
    old = certs(fresh_pki / "clients" / "door" / "cert.pem")[0]
    assert pki_main(["reissue", str(fresh_pki), "door", "--grace-days", "7"]) == 0
    new = certs(fresh_pki / "clients" / "door" / "cert.pem")[0]
    assert new.serial_number != old.serial_number and new.subject == old.subject
    crl = x509.load_pem_x509_crl((fresh_pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is None  # its grace
    assert (fresh_pki / "server" / "acl").read_text().count("user door\n") == 1
    capsys.readouterr()
    assert pki_main(["list", str(fresh_pki)]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("door ")]
    week = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).date().isoformat()
    assert listed[0].endswith(f"reissued, revoked from {week}") and listed[1].endswith("valid")
    # Once the grace has passed, `crl` revokes it (the registry says when).
    registry = json.loads((fresh_pki / "identities.json").read_text())
    for item in registry["identities"]:
        if item["serial"] == old.serial_number:
            item["revoke_at"] = "2020-01-01T00:00:00+00:00"
    (fresh_pki / "identities.json").write_text(json.dumps(registry))
    assert pki_main(["crl", str(fresh_pki)]) == 0
    assert "revoked door" in capsys.readouterr().out
    crl = x509.load_pem_x509_crl((fresh_pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is None


def test_reissue_mistakes_are_clear_errors(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pki_main(["reissue", str(fresh_pki), "nobody"]) != 0
    assert "no current certificate named 'nobody'" in capsys.readouterr().err
    assert pki_main(["reissue", str(fresh_pki), "agent", "--grace-days", "-1"]) != 0
    assert "--grace-days -1: give 0 or more days" in capsys.readouterr().err


def test_a_server_gets_a_certificate_of_its_own(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(fresh_pki)
    argv = ["issue", d, "central", "--role", "server", "--dns", "central.example.org",
            "--ip", "192.0.2.10"]  # fmt: skip
    assert pki_main(argv) == 0
    assert "for localhost" in capsys.readouterr().out
    chain = certs(fresh_pki / "servers" / "central" / "cert.pem")
    assert len(chain) == 2
    assert (fresh_pki / "servers" / "central" / "key.pem").stat().st_mode & 0o777 == 0o600
    server = chain[0]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    # Its own names and the in-pod ones; not the shared certificate's extra names.
    assert "central.example.org" in dns and "localhost" in dns and "broker" in dns
    assert "cam.example" not in dns
    assert ips == {"127.0.0.1", "::1", "192.0.2.10"}
    path = fresh_pki / "servers" / "central" / "cert.pem"
    assert openssl_verify(fresh_pki, path, "sslserver").returncode == 0
    assert openssl_verify(fresh_pki, path, "sslclient").returncode != 0
    # Listed, never a broker user, renewed with the same names, revoked in the CRL.
    assert pki_main(["list", d]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert any(row[:2] == ["central", "server"] for row in listed), listed
    assert "user central" not in (fresh_pki / "server" / "acl").read_text()
    assert pki_main(["reissue", d, "central"]) == 0
    assert str(fresh_pki / "servers" / "central") in capsys.readouterr().out
    renewed = certs(path)[0]
    assert renewed.serial_number != server.serial_number
    assert renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == sans
    crl = x509.load_pem_x509_crl((fresh_pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(server.serial_number) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "{dir}", "edge", "--role", "server"], "name the server: --dns HOST"),
        (["issue", "{dir}", "edge", "--role", "server", "--dns", "Bad_Name"], "invalid DNS name"),
        (["issue", "{dir}", "edge", "--role", "server", "--ip", "10.0.0.999"], "invalid IP"),
        (["issue", "{dir}", "edge", "--role", "server", "--dns", "e.org", "--camera", "x"],
         "not --camera"),
        (["issue", "{dir}", "phone", "--role", "viewer", "--dns", "e.org"], "with --role server"),
        (["issue", "{dir}", "agent", "--role", "server", "--dns", "e.org"], "exists already"),
    ],
)  # fmt: skip
def test_server_certificate_mistakes_are_clear_errors(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert pki_main([a.format(dir=fresh_pki) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_bridge_warns_unless_the_centre_has_a_certificate_of_its_own(
    fresh_pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(fresh_pki)
    assert pki_main(["issue", d, "site-a", "--role", "bridge"]) == 0
    # cam.example is in the shared server/ (the fixture's --server-dns): every site holds it.
    assert pki_main(["bridge", d, "site-a", "--central", "cam.example:8883"]) == 0
    err = capsys.readouterr().err
    assert "no server certificate of its own names cam.example" in err
    assert "every site holds that key" in err
    assert pki_main(["issue", d, "central", "--role", "server", "--dns", "hub.example"]) == 0
    assert pki_main(["bridge", d, "site-a", "--central", "hub.example:8883"]) == 0
    assert "warning" not in capsys.readouterr().err

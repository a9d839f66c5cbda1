"""The captures over HTTPS: a real nginx running the shipped web/nginx.conf with our PKI, fetched
with curl and client certificates like a user would, beside the real agent, broker and MediaMTX."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker, WebServer

from pki import authority as pki_authority
from pki.authority import CertificateAuthority, Role
from pki.certs import x509_name
from pki.cli import main as pki_main
from tests.support import AgentProcess, Probe, tls_context, wait_until
from tests.test_jobs import ask, run_job


@dataclass(frozen=True)
class Fetched:
    status: int  # 0: no HTTP answer at all (the TLS handshake was refused)
    headers: dict[str, str]
    body: bytes
    error: str


def curl(url: str, pki_dir: Path, identity: str | None, *extra: str) -> Fetched:
    """GET ``url`` with curl, as ``identity`` (a client of pki_dir; None: no certificate)."""
    client = ["--cert", f"{pki_dir}/clients/{identity}/cert.pem",
              "--key", f"{pki_dir}/clients/{identity}/key.pem"] if identity else []  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        headers, body = Path(work) / "headers", Path(work) / "body"
        done = subprocess.run(
            ["curl", "-sS", "--path-as-is", "--max-time", "10", "--cacert",
             f"{pki_dir}/ca_chain.pem", *client, "-D", str(headers), "-o", str(body),
             "-w", "%{http_code}", *extra, url],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        lines = headers.read_text().splitlines() if headers.exists() else []
        return Fetched(
            status=int(done.stdout or 0),
            headers={
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)
            },
            body=body.read_bytes() if body.exists() else b"",
            error=done.stderr,
        )


def test_a_viewer_fetches_a_picture_and_a_recording_from_their_urls(
    served_agent: AgentProcess, web: WebServer, broker: Broker, operator: Probe, pki_dir: Path
) -> None:
    viewer = Probe(broker, "viewer")
    try:
        viewer.subscribe("camera/picture/info")
        picture = run_job(operator, {"id": "pic", "action": "picture"})["data"]["result"]
        info = viewer.wait_for(lambda m: m.topic == "camera/picture/info", what="info").json()
    finally:
        viewer.close()
    record = run_job(operator, {"id": "rec", "action": "record", "duration": 2}, timeout=40)
    clip = record["data"]["result"]
    assert picture["url"] == f"{web.captures_url}{picture['path']}" == info["url"]
    assert clip["url"] == f"{web.captures_url}{clip['path']}"

    for result, content_type in ((picture, "image/jpeg"), (clip, "video/mp4")):
        got = curl(result["url"], pki_dir, "viewer")
        assert got.status == 200, got
        assert hashlib.sha256(got.body).hexdigest() == result["sha256"]
        assert got.headers["content-type"] == content_type
        assert got.headers["etag"] and got.headers["last-modified"]
        # A player seeking: the bytes asked for, and only those.
        part = curl(result["url"], pki_dir, "viewer", "-H", "Range: bytes=100-1123")
        assert part.status == 206
        assert part.headers["content-range"] == f"bytes 100-1123/{result['size']}"
        assert part.body == got.body[100:1124]
        # A client that has the file already is told so.
        again = curl(
            result["url"], pki_dir, "viewer", "-H", f"If-None-Match: {got.headers['etag']}"
        )
        assert again.status == 304 and again.body == b""

    # The JSON listing names both, and `files` gives the same urls.
    listing = curl(web.captures_url, pki_dir, "operator")
    assert listing.status == 200 and listing.headers["content-type"] == "application/json"
    listed = {entry["name"]: entry for entry in json.loads(listing.body)}
    assert {picture["path"], clip["path"]} <= set(listed)
    assert listed[picture["path"]]["size"] == picture["size"]
    files = ask(operator, {"id": "ls", "action": "files"})["data"]["files"]
    assert {f["name"]: f["url"] for f in files} == {
        picture["path"]: picture["url"],
        clip["path"]: clip["url"],
    }


def test_only_viewers_and_operators_of_this_camera_are_served(
    web: WebServer, pki_dir: Path, tmp_path: Path
) -> None:
    web.captures_dir.joinpath("picture-1.jpg").write_bytes(b"\xff\xd8 a picture \xff\xd9")
    url = f"{web.captures_url}picture-1.jpg"
    for allowed in ("viewer", "operator", "viewer-here"):
        got = curl(url, pki_dir, allowed)
        assert (got.status, got.body) == (200, b"\xff\xd8 a picture \xff\xd9"), (allowed, got)
    # The agent role (this camera's and another's) and a viewer of another camera: 403.
    for refused in ("agent", "cam-a", "viewer-b"):
        got = curl(url, pki_dir, refused)
        assert got.status == 403 and b"picture" not in got.body, (refused, got)
    # No certificate: nginx answers 400 without serving anything.
    anonymous = curl(url, pki_dir, None)
    assert anonymous.status == 400 and b"picture" not in anonymous.body, anonymous
    # A certificate of another CA with the same names: the handshake fails.
    other = CertificateAuthority(tmp_path / "other-pki")
    other.init()
    other.issue("viewer", Role.VIEWER)
    foreign = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", f"{pki_dir}/ca_chain.pem",
         "--cert", f"{other.paths.client_dir('viewer')}/cert.pem",
         "--key", f"{other.paths.client_dir('viewer')}/key.pem", "-o", "/dev/null",
         "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert foreign.stdout in ("000", "400"), foreign


def handshakes(web: WebServer, pki_dir: Path, max_version: ssl.TLSVersion) -> bool:
    client = pki_dir / "clients" / "viewer"
    context = tls_context(
        pki_dir / "ca_chain.pem", client / "cert.pem", client / "key.pem", max_version
    )
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost"):
                return True
        except ssl.SSLError:
            return False


def test_tls_1_1_is_refused(web: WebServer, pki_dir: Path) -> None:
    assert not handshakes(web, pki_dir, ssl.TLSVersion.TLSv1_1)
    assert handshakes(web, pki_dir, ssl.TLSVersion.TLSv1_2)


@contextlib.contextmanager
def own_pki_web(pki_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, WebServer, str]]:
    """A copy of the session's PKI (revoking in the session's would change every later test's
    CRL), an nginx on it, and the URL of a picture it serves."""
    pki = tmp_path / "pki"
    shutil.copytree(pki_dir, pki)
    server = WebServer(pki, tmp_path / "captures", tmp_path / "web")
    server.start()
    try:
        (tmp_path / "captures" / "picture-1.jpg").write_bytes(b"jpeg")
        yield pki, server, f"{server.captures_url}picture-1.jpg"
    finally:
        server.stop()


def test_a_revoked_certificate_is_refused_once_nginx_reloads(pki_dir: Path, tmp_path: Path) -> None:
    with own_pki_web(pki_dir, tmp_path) as (pki, server, url):
        ca = CertificateAuthority(pki)
        ca.issue("lost-phone", Role.VIEWER)
        assert curl(url, pki, "lost-phone").status == 200
        ca.revoke("lost-phone")
        server.reload()
        refused = curl(url, pki, "lost-phone")
        assert refused.status in (0, 400) and refused.body != b"jpeg", refused
        assert curl(url, pki, "viewer").status == 200  # the others still get in


def test_a_certificate_from_before_scopes_is_flagged_and_its_reissue_is_served(
    pki_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A viewer certificate without the scope OU (as camera-pki issued before it wrote one):
    nginx refuses it, `camera-pki list` says so and what to do, and `reissue` makes one nginx
    serves; the old one, revoked at once, is refused after nginx reloads its CRL."""
    with own_pki_web(pki_dir, tmp_path) as (pki, server, url):
        ca = CertificateAuthority(pki)
        without_scope = x509_name
        monkeypatch.setattr(
            pki_authority, "x509_name", lambda cn, unit, scope=None: without_scope(cn, unit)
        )
        ca.issue("old-phone", Role.VIEWER)
        monkeypatch.undo()
        old_cert = (ca.paths.client_dir("old-phone") / "cert.pem").read_bytes()
        old_key = (ca.paths.client_dir("old-phone") / "key.pem").read_bytes()
        assert curl(url, pki, "old-phone").status == 403
        capsys.readouterr()
        assert pki_main(["list", str(pki)]) == 0
        warnings = capsys.readouterr().err
        assert "warning: old-phone (viewer) has no scope OU" in warnings
        assert f"camera-pki reissue {pki} old-phone" in warnings
        assert "warning: viewer " not in warnings  # the certificates of today are not flagged

        assert pki_main(["reissue", str(pki), "old-phone"]) == 0
        assert curl(url, pki, "old-phone").status == 200
        capsys.readouterr()
        assert pki_main(["list", str(pki)]) == 0
        assert "old-phone" not in capsys.readouterr().err
        # The old certificate, revoked by the reissue, is refused once nginx has the new CRL.
        old = tmp_path / "old"
        old.mkdir()
        (old / "cert.pem").write_bytes(old_cert)
        (old / "key.pem").write_bytes(old_key)
        server.reload()
        refused = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", f"{pki}/ca_chain.pem",
             "--cert", str(old / "cert.pem"), "--key", str(old / "key.pem"),
             "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert refused.stdout in ("000", "400"), refused


def test_nothing_outside_the_captures_directory_or_unfinished_is_served(
    web: WebServer, pki_dir: Path, tmp_path: Path
) -> None:
    secret = b"stream password: hunter2"
    (tmp_path / "agent" / "agent.toml").write_bytes(secret)  # beside the captures directory
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(secret)
    captures = web.captures_dir
    (captures / "picture-1.jpg").write_bytes(b"jpeg")
    (captures / "leak.jpg").symlink_to(tmp_path / "agent" / "agent.toml")
    (captures / "linked").symlink_to(outside, target_is_directory=True)
    (captures / ".record-1.mp4.partial").write_bytes(b"half a recording")
    (captures / ".hidden").write_bytes(secret)
    base = web.captures_url
    root = base.removesuffix("captures/")
    attempts = [
        f"{base}../agent.toml",
        f"{base}%2e%2e/agent.toml",
        f"{base}..%2fagent.toml",
        f"{base}%2e%2e%2fagent.toml",
        f"{base}..%5cagent.toml",
        f"{root}agent.toml",
        f"{root}captures/../../outside/secret.jpg",
        f"{base}leak.jpg",
        f"{base}linked/secret.jpg",
        f"{base}.hidden",
        f"{base}.record-1.mp4.partial",
    ]
    for url in attempts:
        got = curl(url, pki_dir, "operator")
        assert got.status in (400, 403, 404), (url, got)
        assert secret not in got.body and b"half" not in got.body, (url, got)
    listing = json.loads(curl(base, pki_dir, "viewer").body)
    # Symlinks are listed by autoindex but never served; hidden and partial files are not listed.
    assert not {entry["name"] for entry in listing} & {".record-1.mp4.partial", ".hidden"}
    # Read-only: nothing can be written or removed over HTTP.
    for method in ("PUT", "DELETE", "POST"):
        got = curl(f"{base}picture-1.jpg", pki_dir, "operator", "-X", method, "-d", "x")
        assert got.status in (403, 405), (method, got)
    assert (captures / "picture-1.jpg").read_bytes() == b"jpeg"


def test_delete_over_mqtt_stops_nginx_serving_the_file_and_a_recording_is_busy(
    served_agent: AgentProcess, operator: Probe, pki_dir: Path
) -> None:
    picture = run_job(operator, {"id": "pic", "action": "picture"})["data"]["result"]
    assert curl(picture["url"], pki_dir, "viewer").status == 200
    gone = ask(operator, {"id": "rm", "action": "delete", "file": picture["path"]})
    assert gone["ok"] is True, gone
    assert curl(picture["url"], pki_dir, "viewer").status == 404

    # A recording names its file as it starts; deleting it meanwhile is refused.
    operator.publish("camera/control/action", json.dumps({"id": "long", "action": "record"}))
    progress: dict[str, Any] = operator.wait_event(event="job.progress", timeout=10)
    name = progress["data"]["progress"]["file"]
    busy = ask(operator, {"id": "rm2", "action": "delete", "file": name})
    assert busy["error"]["code"] == "busy", busy
    operator.publish("camera/control/action", json.dumps({"id": "halt", "action": "stop"}))
    done = operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json().get("id") == "long"
        and m.json()["event"] in ("job.succeeded", "job.failed"), timeout=30,
    ).json()  # fmt: skip
    assert done["event"] == "job.succeeded", done
    assert done["data"]["result"]["path"] == name
    assert curl(done["data"]["result"]["url"], pki_dir, "viewer").status == 200


def download(
    url: str, pki_dir: Path, target: Path, *extra: str, rate: str = "4M"
) -> subprocess.Popen[bytes]:
    """A slow download, as over a phone's connection, running in the background."""
    client = pki_dir / "clients" / "viewer"
    return subprocess.Popen(
        ["curl", "-sS", "--limit-rate", rate, "--max-time", "30", "--cacert",
         f"{pki_dir}/ca_chain.pem", "--cert", f"{client}/cert.pem", "--key", f"{client}/key.pem",
         "-o", str(target), *extra, url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_download_outlives_a_delete_and_resumes_after_nginx_restarts(
    agent: AgentProcess, web: WebServer, operator: Probe, pki_dir: Path, tmp_path: Path
) -> None:
    # Larger than what the kernel's socket buffers hold, so that some of it is still unsent when
    # nginx goes away.
    first, second = os.urandom(4 << 20), os.urandom(48 << 20)
    (web.captures_dir / "record-1.mp4").write_bytes(first)
    (web.captures_dir / "record-2.mp4").write_bytes(second)

    # Deleted half-way: the download still gets the whole file it started, then it is gone.
    out = tmp_path / "one.mp4"
    fetching = download(f"{web.captures_url}record-1.mp4", pki_dir, out, rate="1M")
    wait_until(lambda: out.exists() and out.stat().st_size > 512 << 10, what="half a download")
    assert ask(operator, {"id": "rm", "action": "delete", "file": "record-1.mp4"})["ok"] is True
    assert fetching.wait(30) == 0
    assert out.read_bytes() == first
    assert curl(f"{web.captures_url}record-1.mp4", pki_dir, "viewer").status == 404

    # nginx restarted half-way: curl says the transfer broke (never a silently short file),
    # and a resumed download (a Range request) completes it.
    out = tmp_path / "two.mp4"
    fetching = download(f"{web.captures_url}record-2.mp4", pki_dir, out)
    wait_until(lambda: out.exists() and out.stat().st_size > 512 << 10, what="half a download")
    web.stop()
    assert fetching.wait(30) != 0
    assert 0 < out.stat().st_size < len(second)
    web.start()
    resumed = download(f"{web.captures_url}record-2.mp4", pki_dir, out, "-C", "-", rate="1G")
    assert resumed.wait(30) == 0
    assert out.read_bytes() == second

"""`scripts/run`'s stack (scripts/devstack.py) as a user meets it: the lines it prints work."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from devstack import REPO, Broker
from playwright.sync_api import expect

from tests.browser import chromium
from tests.support import Probe, children_of, wait_until
from tests.test_jobs import run_job
from tests.test_stream import probe_stream


def test_the_printed_curl_and_camera_ctl_lines_work_and_stopping_leaves_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    stack = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "devstack.py"), str(home), "--any-ports"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert stack.stdout is not None
    printed: dict[str, str] = {}
    servers: list[int] = []
    try:
        for line in stack.stdout:
            label, _, rest = line.partition(":")
            printed[label.strip()] = rest.strip()
            if label == "console":
                break
        assert "files" in printed, f"scripts/run printed no curl line: {printed}"
        assert "console" in printed, f"scripts/run printed no console line: {printed}"
        broker_port = int(printed["broker on 127.0.0.1"].split(" ")[0])
        operator = Probe(Broker(home / "pki", tmp_path / "probe", port=broker_port), "operator")
        try:
            operator.subscribe("camera/#")
            operator.wait_event(event="stream.online", timeout=30)
            servers = children_of(stack.pid)
            picture = run_job(operator, {"id": "p", "action": "picture"})["data"]["result"]
        finally:
            operator.close()

        curl = shlex.split(printed["files"])
        assert curl[0] == "curl" and curl[-1] == picture["url"].removesuffix(picture["path"])
        listing = subprocess.run([*curl, "-sS"], capture_output=True, timeout=20, check=True)
        assert picture["path"] in {entry["name"] for entry in json.loads(listing.stdout)}
        fetched = subprocess.run(
            [*curl[:-1], "-sS", picture["url"]], capture_output=True, timeout=20, check=True
        )
        assert hashlib.sha256(fetched.stdout).hexdigest() == picture["sha256"]
        # The printed camera-ctl line, as pasted: it finds broker and certificate in the home.
        control = subprocess.run(
            ["env", *shlex.split(printed["control"])], capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        assert control.returncode == 0, control.stderr
        assert control.stdout.strip() == "SUCCESS: brightness set to 0.3"
        # The printed players' lines: the RTSPS URL plays, and the HLS page's playlist plays
        # over HTTPS checked against the CA the line names, with the password it gives.
        watch = printed["watch"].split()
        assert watch[0] == "ffplay" and watch[1].startswith("rtsps://"), printed["watch"]
        assert probe_stream(watch[1])["codec_name"] == "h264"
        found = re.fullmatch(
            r"(https://\S+) \(HLS\), (https://\S+) \(WebRTC\); user viewer, password (\S+);"
            r" the certificate is from (\S+)",
            printed["browser"],
        )
        assert found, printed["browser"]
        hls, _, password, ca = found.groups()
        playlist = hls.replace("https://", f"https://viewer:{password}@") + "index.m3u8"
        assert probe_stream(playlist, Path(ca))["codec_name"] == "h264"
        # The printed console line: its bundle and password, imported as a person would, open
        # the console, which shows the camera and the value just set.
        found = re.fullmatch(
            r"(https://\S+) \(import (\S+) into the browser, password in (\S+);.*",
            printed["console"],
        )
        assert found, printed["console"]
        url, bundle, password = found.groups()
        with chromium() as browser:
            page = browser.new_context(
                ignore_https_errors=True,
                client_certificates=[{
                    "origin": url.rstrip("/"), "pfxPath": bundle,
                    "passphrase": Path(password).read_text().strip(),
                }],
            ).new_page()  # fmt: skip
            page.goto(url)
            expect(page.locator("[data-camera]")).to_have_count(1)
            page.goto(url + "#/camera/camera")
            expect(page.locator('[data-control="brightness"] output')).to_have_text("0.3")
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(30)
    # Ctrl-C/SIGTERM stops the agent, the console, nginx, MediaMTX and the broker: nothing is
    # left running.
    assert len(servers) == 5, servers
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in servers), what="exit")

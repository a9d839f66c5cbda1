"""The console in Debian's Firefox (ESR), beside the Chromium tests of tests/test_console.py:
the operator's PKCS#12 bundle imported into a fresh Firefox profile with NSS's pk12util, as a
person imports it, then the fleet page and a camera page with live video. Firefox is driven over
WebDriver BiDi by puppeteer-core (Playwright's Firefox is a patched build of its own, which is not
what people run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.browser import ARTIFACTS, REPO
from tests.conftest import Console

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox") or "/usr/bin/firefox-esr"


def firefox_profile(directory: Path, bundle: Path) -> Path:
    """A Firefox profile whose certificate store holds ``bundle`` (key and chain)."""
    directory.mkdir(parents=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{directory}", "--empty-password"],
        check=True, capture_output=True,
    )  # fmt: skip
    password = bundle.with_name("bundle.p12.password").read_text().strip()
    subprocess.run(
        ["pk12util", "-i", str(bundle), "-d", f"sql:{directory}", "-W", password, "-K", ""],
        check=True, capture_output=True,
    )  # fmt: skip
    return directory


def test_firefox_opens_the_console_with_the_imported_bundle_and_plays_the_video(
    console: Console, tmp_path: Path
) -> None:
    from pki.authority import CertificateAuthority  # noqa: PLC0415 - as the run script does

    bundle = CertificateAuthority(console.broker.pki_dir).browser_bundle("operator")
    profile = firefox_profile(tmp_path / "profile", bundle)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "console-camera-firefox.png"
    run = subprocess.run(
        ["node", str(REPO / "tests/firefox/console_smoke.cjs"), console.origin, str(profile),
         FIREFOX, str(shot)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "NODE_PATH": str(REPO / "console/node_modules")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["badge"] == "online"
    # WebRTC when Firefox can decode H.264 in it (with the OpenH264 plugin Firefox fetches on a
    # desktop); Debian's, offline, cannot, and MediaMTX says so: then LL-HLS through hls.js, with
    # the reason shown.
    assert seen["video"] in ("live (WebRTC)", "live (HLS)"), seen
    if seen["video"] == "live (HLS)":
        assert any(s.startswith("WebRTC unavailable (400: codecs not supported") for s in
                   seen["states"]), seen  # fmt: skip
        assert seen["hlsjs"] is True  # Firefox has no HLS of its own: the pinned hls.js plays it
    assert seen["width"] == 1280
    assert seen["slider"] == {"type": "range", "disabled": False}
    assert seen["errors"] == []
    assert shot.stat().st_size > 0

"""A real browser for the console's tests: Debian's Chromium driven by Playwright, with a client
certificate of our PKI (Playwright's `client_certificates`, presented on every TLS connection
to the origin, as a browser does once the person picked the certificate)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = REPO / "console" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("CAMERA_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # The live video starts without a click, as it does for a person who opened the page.
            args=["--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield browser
        finally:
            browser.close()


def context(
    browser: Browser,
    origin: str,
    pki: Path | None,
    identity: str | None,
    viewport: dict[str, int] = DESKTOP,
    **options: Any,
) -> BrowserContext:
    """A browser profile holding ``identity``'s certificate of ``pki`` (None: none at all). The
    private CA is not in the browser's trust store, hence ignore_https_errors: what is tested
    is the client certificate, which nginx checks whatever the browser thinks of nginx's."""
    certificates = []
    if pki is not None and identity is not None:
        client = pki / "clients" / identity
        certificates.append(
            {
                "origin": origin.rstrip("/"),
                "certPath": str(client / "cert.pem"),
                "keyPath": str(client / "key.pem"),
            }
        )
    return browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        ignore_https_errors=True,
        client_certificates=certificates,  # type: ignore[arg-type]
        **options,
    )


def watch_origins(page: Page, origin: str) -> list[str]:
    """Every request the page makes to another origin (must stay empty: one origin for all)."""
    foreign: list[str] = []
    allowed = (origin.rstrip("/") + "/", "wss://" + origin.split("://", 1)[1], "blob:", "data:")
    page.on(
        "request",
        lambda request: None if request.url.startswith(allowed) else foreign.append(request.url),
    )
    return foreign


def page_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    return errors


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def poll(page: Page, script: str, accept: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """Evaluate ``script`` in the page until ``accept`` takes its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if accept(value):
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}; last value {value!r}")


# The mean brightness (0-255) of the frame the page's <video> shows now, read back through a
# canvas as a person's eye would see it.
FRAME_BRIGHTNESS = """() => {
  const video = document.querySelector('video');
  if (!video || video.readyState < 2 || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = 160; canvas.height = 90;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  g.drawImage(video, 0, 0, canvas.width, canvas.height);
  const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
  return sum / (data.length / 4);
}"""


def axe_findings(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page (axe pinned by
    console/package-lock.json). The page's context needs bypass_csp: the scan is injected."""
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]

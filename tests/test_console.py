"""The browser console, as a person uses it: Debian's Chromium with a client certificate of our
PKI opens the shipped nginx config, which serves the page, proxies the console service (a real
`camera-console` process) and MediaMTX's WHEP and HLS, beside the real broker and agents."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import WebServer
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from pki.authority import CertificateAuthority, Role
from tests.browser import (
    FRAME_BRIGHTNESS,
    PHONE,
    axe_findings,
    chromium,
    context,
    page_errors,
    poll,
    screenshot,
    watch_origins,
)
from tests.conftest import Console, start_agent
from tests.support import AgentProcess, Probe, camera_agent_env, is_online
from tests.test_jobs import run_job
from tests.test_web import curl

VIDEO_S = 20.0  # first frame through WHEP, with MediaMTX and the encoder warming up


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def open_console(
    browser: Browser, console: Console, identity: str | None, **options: object
) -> Page:
    pki = console.broker.pki_dir
    page = context(browser, console.origin, pki, identity, **options).new_page()  # type: ignore[arg-type]
    page.set_default_timeout(15_000)
    return page


def open_camera(page: Page, console: Console, base: str = "camera") -> None:
    page.goto(f"{console.origin}/#/camera/{base}")
    expect(page.locator("#camera-title")).to_be_visible()


def refused(page: Page, url: str) -> bool:
    """nginx gave no console: the handshake failed, or it answered 400 (with TLS 1.3 the client
    certificate is checked after the handshake, and nginx then says so in a 400 page)."""
    try:
        response = page.goto(url)
    except PlaywrightError as err:
        return "ERR_" in str(err)
    return response is not None and response.status == 400 and "Cameras" not in page.content()


def live_camera_page(browser: Browser, console: Console, identity: str = "operator") -> Page:
    """The camera's page, opened by ``identity``, with its live video playing."""
    page = open_console(browser, console, identity)
    open_camera(page, console)
    wait_for_video(page)
    return page


def wait_for_video(page: Page) -> float:
    """The page's live video shows frames; returns the brightness of one."""
    value: float = poll(page, FRAME_BRIGHTNESS, lambda v: v is not None, VIDEO_S, "a live frame")
    return value


# -- who gets in ------------------------------------------------------------------------------


def test_no_page_without_our_certificate_and_the_service_trusts_only_nginx(
    browser: Browser, console: Console, tmp_path: Path
) -> None:
    # No certificate: nginx answers 400 and serves nothing of the console.
    assert refused(open_console(browser, console, None), console.origin + "/")
    # A certificate of another CA with the same name: no page either.
    other = CertificateAuthority(tmp_path / "other-pki")
    other.init()
    foreign = context(browser, console.origin, other.paths.root, "operator").new_page()
    assert refused(foreign, console.origin + "/")
    # An agent's certificate is ours but no person's: 403 for the page and the WebSocket.
    for path in ("/", "/console/ws", "/console/picture?camera=camera"):
        got = curl(console.origin + path, console.broker.pki_dir, "agent")
        assert got.status == 403, (path, got)
    # The service itself refuses what did not come through nginx's check, even on its socket.
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(console.web.console_socket))
        raw.sendall(
            b"GET /console/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Client-Subject: CN=operator,OU=scope:*,OU=operator,O=camera-agent\r\n\r\n"
        )
        assert raw.recv(200).startswith(b"HTTP/1.1 403")


def test_a_revoked_certificate_gets_no_page(
    browser: Browser, pki_dir: Path, tmp_path: Path
) -> None:
    # A PKI of its own: revoking in the session's would change every later test's CRL.
    pki = tmp_path / "pki"
    shutil.copytree(pki_dir, pki)
    ca = CertificateAuthority(pki)
    ca.issue("lost-phone", Role.OPERATOR)
    ca.revoke("lost-phone")
    server = WebServer(pki, tmp_path / "captures", tmp_path / "web")
    server.start()
    try:
        assert refused(context(browser, server.url, pki, "lost-phone").new_page(), server.url)
    finally:
        server.stop()


def test_a_viewer_sees_the_camera_and_can_change_nothing(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = open_console(browser, console, "viewer")
    foreign = watch_origins(page, console.origin)
    page.goto(console.origin + "/")
    expect(page.locator("[data-camera]")).to_have_count(1)
    expect(page.locator("#who")).to_have_text("viewer · viewer")
    open_camera(page, console)
    wait_for_video(page)
    expect(page.get_by_label("brightness", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Picture")).to_have_count(0)
    expect(page.get_by_role("button", name="Record")).to_have_count(0)
    # A command the page would never send, sent anyway over the page's own WebSocket: the
    # console refuses it in words, and nothing reaches the camera.
    answer = page.evaluate(
        """() => new Promise((resolve) => {
          const ws = new WebSocket(`wss://${location.host}/console/ws`);
          ws.onmessage = (m) => {
            const msg = JSON.parse(m.data);
            if (msg.type === 'answer') resolve(msg);
          };
          ws.onopen = () => ws.send(JSON.stringify({type: 'command', ref: 'x', camera: 'camera',
            channel: 'settings', body: {set: {brightness: 0.9}}}));
        })"""
    )
    assert answer["refused"] is True and "viewer viewer may not change camera" in answer["message"]
    page.wait_for_timeout(500)
    assert not [m for m in operator.history if m.topic == "camera/control/settings"]
    # The gallery lists the captures (as nginx lets a viewer list them), with nothing to delete.
    run_job(operator, {"id": "v-1", "action": "picture"})
    page.get_by_role("link", name="Gallery").click()
    expect(page.locator("[data-file]")).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("^delete "))).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("^download "))).to_have_count(1)
    assert foreign == []


# -- an operator at work ------------------------------------------------------------------------


def test_an_operator_brightens_the_live_video_and_the_page_shows_the_cameras_value(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = open_console(browser, console, "operator")
    errors = page_errors(page)
    foreign = watch_origins(page, console.origin)
    open_camera(page, console)
    before = wait_for_video(page)
    expect(page.locator(".video-state")).to_have_text("live (WebRTC)")
    slider = page.get_by_label("brightness", exact=True)
    slider.fill("0.5")
    applied = operator.wait_event(event="settings.applied")
    assert applied["data"]["applied"] == {"brightness": 0.5}
    assert applied["by"] == "CN=operator"  # who asked, through the console's own identity
    state = operator.wait_for(
        lambda m: m.topic == "camera/state" and m.json()["controls"]["brightness"] == 0.5,
        what="brightness 0.5 in the state",
    )
    assert state.retain is False or state.json()["controls"]["brightness"] == 0.5
    poll(
        page, FRAME_BRIGHTNESS, lambda v: v is not None and v > before + 40, 10, "a brighter frame"
    )
    expect(page.locator('[data-control="brightness"] output')).to_have_text("0.5")
    # An out-of-range value is refused by the camera, in words next to the control, and the
    # slider goes back to the camera's value.
    page.evaluate(
        """() => { const s = document.getElementById('control-brightness');
                   s.max = 5; s.value = 5; s.dispatchEvent(new Event('change')); }"""
    )
    expect(page.locator("#control-brightness-problem")).to_contain_text("out of range")
    expect(page.locator('[data-control="brightness"] output')).to_have_text("0.5")
    assert errors == [] and foreign == []


def test_without_webrtc_the_video_plays_over_ll_hls_through_the_same_door(
    browser: Browser, console: Console
) -> None:
    page = open_console(browser, console, "operator")
    foreign = watch_origins(page, console.origin)
    # WebRTC refused on the way (a network that blocks it): the player falls back to LL-HLS.
    page.route("**/whep", lambda route: route.abort())
    open_camera(page, console)
    wait_for_video(page)
    expect(page.locator(".video-state")).to_have_text("live (HLS)")
    hls = [url for url in page.evaluate("() => performance.getEntries().map(e => e.name)")
           if "/media/cam/" in url and "whep" not in url]  # fmt: skip
    assert any(url.endswith("index.m3u8") for url in hls), hls
    assert foreign == []


def test_picture_record_gallery_and_delete(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = live_camera_page(browser, console)
    page.get_by_role("button", name="Picture").click()
    picture = operator.wait_event(event="job.succeeded", timeout=15)
    assert picture["by"] == "CN=operator"
    picture_name = picture["data"]["result"]["path"]
    expect(page.locator(".job-message")).to_contain_text("queued")

    page.get_by_label("length (s)").fill("3")
    page.get_by_role("button", name="Record").click()
    expect(page.locator(".jobs progress")).to_have_count(1, timeout=10_000)
    recorded = operator.wait_event(event="job.succeeded", timeout=30)
    recording = recorded["data"]["result"]["path"]
    expect(page.locator(".jobs.done li").first).to_contain_text("record succeeded")

    page.get_by_role("link", name="Gallery").click()
    expect(page.locator(f'[data-file="{picture_name}"]')).to_be_visible()
    page.get_by_role("button", name=f"open {picture_name}").click()
    poll(
        page,
        "() => document.querySelector('#viewer img')?.naturalWidth",
        lambda w: w == 1280,
        10,
        "the picture",
    )
    page.get_by_role("button", name="Close").click()

    page.get_by_role("button", name=f"open {recording}").click()
    duration = poll(
        page, "() => document.querySelector('#viewer video')?.duration",
        lambda d: isinstance(d, (int, float)) and d > 0, 10, "the recording's duration",
    )  # fmt: skip
    assert 2.5 <= duration <= 4.0, duration
    poll(
        page,
        "() => document.querySelector('#viewer video').currentTime",
        lambda t: t > 1.0,
        10,
        "playback",
    )
    page.get_by_role("button", name="Close").click()

    url = recorded["data"]["result"]["url"]
    fetched = curl(url, console.broker.pki_dir, "operator")
    assert fetched.status == 200
    # Download saves the very file the agent recorded.
    with page.expect_download() as download:
        page.get_by_role("link", name=f"download {recording}").click()
    saved = Path(download.value.path())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == recorded["data"]["result"]["sha256"]
    page.get_by_role("button", name=f"delete {recording}").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(f'[data-file="{recording}"]')).to_have_count(0)
    deleted = operator.wait_event(event="file.deleted")
    assert deleted["by"] == "CN=operator"
    assert curl(url, console.broker.pki_dir, "operator").status == 404


def test_a_restart_class_change_asks_first_then_the_video_goes_on_at_the_new_size(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = live_camera_page(browser, console)
    width = page.get_by_label("width", exact=True)
    width.fill("640")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("restarts the stream")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator('[data-control="width"] output')).to_have_text("1280 px")
    page.wait_for_timeout(300)
    assert not [m for m in operator.history if m.topic == "camera/control/settings"]

    width.fill("640")
    page.get_by_role("button", name="Change width").click()
    applied = operator.wait_event(event="settings.applied", timeout=20)
    assert applied["data"]["restarted"] is True
    poll(
        page,
        "() => document.querySelector('video').videoWidth",
        lambda w: w == 640,
        20,
        "640 px video",
    )
    expect(page.locator('[data-control="width"] output')).to_have_text("640 px")


def test_the_fleet_page_shows_the_cameras_each_certificate_covers(
    browser: Browser, console: Console, operator: Probe, tmp_path: Path
) -> None:
    # A link to camera a, followed before a is on the broker, shows a once it comes.
    early = open_console(browser, console, "operator")
    early.goto(f"{console.origin}/#/camera/camera%2Fa")
    expect(early.get_by_role("heading", level=1)).to_have_text("No such camera")
    others = []
    for camera in ("a", "b"):
        # The session's identities cam-a and cam-b serve the fleet cameras a and b.
        env = {
            **camera_agent_env(console.broker.pki_dir, f"cam-{camera}"),
            "CAMERA_AGENT_MQTT__BASE_TOPIC": f"camera/{camera}",
            "CAMERA_AGENT_CAMERA__ID": camera,
        }
        agent = AgentProcess(console.broker, tmp_path / f"agent-{camera}", env=env)
        agent.start()
        others.append(agent)
    try:
        for camera in ("a", "b"):
            operator.wait_for(is_online(camera), timeout=20, what=f"camera {camera} online")
        expect(early.locator("#camera-title")).to_have_text("a")
        expect(early.get_by_label("brightness", exact=True)).to_be_enabled()
        expectations = {"operator": 3, "viewer-b": 1, "viewer-here": 1}
        for identity, count in expectations.items():
            page = open_console(browser, console, identity)
            page.goto(console.origin + "/")
            expect(page.locator("[data-camera]")).to_have_count(count)
            if identity == "viewer-b":
                expect(page.locator("[data-camera]")).to_have_attribute("data-camera", "camera/b")
                # Another camera's page, typed in by hand, is absent, not forbidden.
                page.goto(f"{console.origin}/#/camera/camera")
                expect(page.get_by_role("heading", level=1)).to_have_text("No such camera")
                expect(page.locator("video")).to_have_count(0)
            if identity == "operator":
                screenshot(page, "console-fleet-of-three-desktop")
            page.context.close()
    finally:
        for agent in others:
            agent.stop()


def test_a_timelapse_from_the_page_shows_its_progress_and_its_end(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = open_console(browser, console, "operator")
    open_camera(page, console)
    page.get_by_label("every (s)").fill("1")
    page.get_by_label("frames").fill("3")
    page.get_by_role("button", name="Timelapse").click()
    expect(page.locator(".jobs li").first).to_contain_text(re.compile(r"timelapse · \d of 3"))
    done = operator.wait_event(event="job.succeeded", timeout=30)
    assert done["data"]["kind"] == "timelapse" and done["by"] == "CN=operator"
    expect(page.locator(".jobs.done li").first).to_contain_text("timelapse succeeded")


def test_keyboard_alone_opens_a_camera_and_moves_a_control(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = open_console(browser, console, "operator")
    page.goto(console.origin + "/")
    expect(page.locator("[data-camera]")).to_have_count(1)

    def tab_to(selector: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate(f"() => document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to(".cardlink")
    page.keyboard.press("Enter")
    expect(page.locator("#camera-title")).to_be_visible()
    tab_to("#control-brightness")
    page.keyboard.press("End")  # the slider's maximum, as a keyboard user reaches it
    applied = operator.wait_event(event="settings.applied")
    assert applied["data"]["applied"] == {"brightness": 1.0}
    expect(page.locator('[data-control="brightness"] output')).to_have_text("1")


def test_a_camera_short_of_disk_says_so_on_its_card(
    browser: Browser, console: Console, operator: Probe
) -> None:
    console.agent.stop()
    # More free space asked for than any disk has: the agent reports the disk nearly full.
    console.agent.env["CAMERA_AGENT_STORAGE__MIN_FREE_BYTES"] = str(2**60)
    start_agent(console.agent, operator)
    page = open_console(browser, console, "viewer")
    page.goto(console.origin + "/")
    expect(page.locator('[data-camera="camera"] .warning')).to_contain_text("disk nearly full")


# -- faults -------------------------------------------------------------------------------------


def test_broker_restart_the_page_reconnects_and_a_command_sent_meanwhile_is_answered(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = live_camera_page(browser, console)
    console.broker.stop()
    expect(page.locator("#banner")).to_contain_text("Reconnecting")
    page.get_by_role("button", name="Picture").click()
    page.wait_for_timeout(1000)
    console.broker.start()
    # The command waited in the console's outbox and reached the camera once the broker was back.
    expect(page.locator(".job-message")).to_contain_text("queued", timeout=30_000)
    expect(page.locator("#banner")).to_be_hidden(timeout=30_000)


def test_a_killed_agent_goes_offline_on_its_card(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = open_console(browser, console, "operator")
    page.goto(console.origin + "/")
    card = page.locator('[data-camera="camera"]')
    expect(card.locator(".badge")).to_have_text("online")
    console.agent.kill()
    # The broker sends the agent's will after 1.5 keep-alives (5 s here).
    expect(card.locator(".badge")).to_have_text("offline", timeout=15_000)
    start_agent(console.agent, operator)
    expect(card.locator(".badge")).to_have_text("online", timeout=15_000)


def test_the_video_comes_back_by_itself_after_mediamtx_restarts(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = live_camera_page(browser, console)
    frames = "() => document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames"
    console.media.restart()
    operator.wait_event(event="stream.online", timeout=30)
    after_restart = page.evaluate(frames)
    # New frames arrive in the same page, without a reload or a click.
    poll(page, frames, lambda n: n > after_restart + 30, 30, "frames after the restart")
    expect(page.locator(".video-state")).to_have_text(re.compile(r"^live"))


def test_a_command_the_camera_cannot_answer_is_reported_unknown_in_words(
    browser: Browser, console: Console, operator: Probe
) -> None:
    console.service.stop()
    console.service.env["CAMERA_CONSOLE_CONSOLE__ANSWER_TIMEOUT_S"] = "3"
    console.service.start()
    page = live_camera_page(browser, console)
    # The agent hangs (still connected as far as anyone knows): no answer comes.
    assert console.agent.process is not None
    os.kill(console.agent.process.pid, signal.SIGSTOP)
    try:
        page.get_by_role("button", name="Picture").click()
        expect(page.locator(".job-message")).to_contain_text(
            "no answer from camera within 3 s", timeout=10_000
        )
        expect(page.locator(".job-message")).to_contain_text("may still run")
    finally:
        os.kill(console.agent.process.pid, signal.SIGCONT)
    # And so it does, once the agent goes on: the picture is taken, for the operator.
    done = operator.wait_event(event="job.succeeded", timeout=30)
    assert done["by"] == "CN=operator"


def test_the_page_reconnects_after_the_console_service_restarts(
    browser: Browser, console: Console, operator: Probe
) -> None:
    page = live_camera_page(browser, console)
    console.service.kill()
    expect(page.locator("#banner")).to_contain_text("Reconnecting to the console")
    console.service.start()
    expect(page.locator("#banner")).to_be_hidden(timeout=20_000)
    page.get_by_label("contrast", exact=True).fill("1.5")
    applied = operator.wait_event(event="settings.applied", timeout=15)
    assert applied["data"]["applied"] == {"contrast": 1.5}
    expect(page.locator('[data-control="contrast"] output')).to_have_text("1.5")


# -- looked at ----------------------------------------------------------------------------------


def test_screenshots_on_a_phone_and_no_serious_accessibility_findings(
    browser: Browser, console: Console, operator: Probe
) -> None:
    # Something in the gallery and on the card: a picture and a short recording.
    run_job(operator, {"id": "shot-1", "action": "picture"})
    run_job(operator, {"id": "shot-2", "action": "record", "duration": 2})
    for name, options in (("desktop", {}), ("phone", {"viewport": PHONE})):
        page = open_console(browser, console, "operator", bypass_csp=True, **options)
        page.goto(console.origin + "/")
        expect(page.locator("[data-camera]")).to_have_count(1)
        # The card shows the latest picture, the retained BASE/picture, at its full size.
        thumbnail = "() => document.querySelector('[data-camera=\"camera\"] img')?.naturalWidth"
        poll(page, thumbnail, lambda width: width == 1280, 10, "the latest picture on the card")
        assert axe_findings(page) == []
        screenshot(page, f"console-fleet-{name}")
        open_camera(page, console)
        wait_for_video(page)
        assert axe_findings(page) == [], json.dumps(axe_findings(page), indent=1)[:3000]
        screenshot(page, f"console-camera-{name}")
        if name == "phone":
            # Nothing wider than the phone: no sideways scrolling.
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"], width
        page.get_by_role("link", name="Gallery").click()
        expect(page.locator("[data-file]")).to_have_count(2)
        assert axe_findings(page) == []
        screenshot(page, f"console-gallery-{name}")
        page.get_by_role("link", name="Events").click()
        expect(page.locator(".events li").first).to_be_visible()
        assert axe_findings(page) == []
        screenshot(page, f"console-events-{name}")
        page.context.close()

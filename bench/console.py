"""Console benchmark: the browser console as a person meets it, in Debian's Chromium.

One run, on the shipped nginx, broker and MediaMTX configs, with the real console service and
agents (one streaming test-pattern camera; the others with streaming off):

- page load to interactive: from navigation start until every camera's card is on the fleet
  page, in a fresh browser profile (a new TLS session each time), with 1 and with 20 cameras;
- first live frame: from opening the camera page (on a loaded fleet page) until its <video> has
  a frame (WebRTC through nginx's WHEP proxy);
- control change to the changed frame: brightness moved on the page's slider until the first
  frame in the page's video whose brightness crossed half-way; beside it, the baseline: the same
  change sent over MQTT and seen by ffmpeg reading the RTSP stream (what ffplay shows, without
  its display);
- the console service's resident memory and CPU with 20 cameras and 3 pages open (two fleet
  pages, one camera page playing), while an operator changes one camera a second.

Ratios compare the 20-camera figures with the 1-camera ones, and the page's control latency with
the RTSP baseline. The issue's targets: interactive < 1 s, first frame < 1.5 s, control visible
< 300 ms, console < 60 MB.

Usage: `scripts/bench console [--runs 7] [--cameras 20] [--seconds 30]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import Broker, ConsoleService, MediaServer, WebServer
from playwright.sync_api import Browser, Page

from bench.control_plane import process_usage
from pki.authority import CertificateAuthority, Role
from tests.browser import chromium, context
from tests.support import AgentProcess, Frame, Probe, RtspReader, is_online

START_TIMEOUT_S = 120.0

# In-page: brightness is moved on the slider, and the time to the first frame whose mean
# brightness crossed half-way from `before` to `after` is returned (ms), or null.
CONTROL_TO_FRAME = """async ([value, before, after]) => {
  const video = document.querySelector('video');
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 36;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const mean = () => {
    g.drawImage(video, 0, 0, 64, 36);
    const d = g.getImageData(0, 0, 64, 36).data;
    let s = 0;
    for (let i = 0; i < d.length; i += 4) s += (d[i] + d[i + 1] + d[i + 2]) / 3;
    return s / (d.length / 4);
  };
  const half = (before + after) / 2;
  const crossed = (m) => (after > before ? m > half : m < half);
  return await new Promise((resolve) => {
    const slider = document.getElementById('control-brightness');
    const started = performance.now();
    const frame = () => {
      if (crossed(mean())) resolve(performance.now() - started);
      else if (performance.now() - started > 5000) resolve(null);
      else video.requestVideoFrameCallback(frame);
    };
    slider.value = value;
    slider.dispatchEvent(new Event('change'));
    video.requestVideoFrameCallback(frame);
  });
}"""

MEAN_BRIGHTNESS = """() => {
  const video = document.querySelector('video');
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 36;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  g.drawImage(video, 0, 0, 64, 36);
  const d = g.getImageData(0, 0, 64, 36).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += (d[i] + d[i + 1] + d[i + 2]) / 3;
  return s / (d.length / 4);
}"""


@dataclass
class System:
    root: Path
    broker: Broker
    media: MediaServer
    web: WebServer
    console: ConsoleService
    camera: AgentProcess

    @property
    def origin(self) -> str:
        return self.web.url.rstrip("/")


@contextmanager
def running_system(root: Path, cameras: int) -> Iterator[System]:
    pki = root / "pki"
    ca = CertificateAuthority(pki)
    ca.init()
    ca.issue("console", Role.CONSOLE)
    for n in range(1, cameras):
        ca.issue(f"cam{n:02d}", Role.AGENT, camera=f"cam{n:02d}")
    with ExitStack() as stack:
        broker = Broker(pki, root / "broker")
        broker.start()
        stack.callback(broker.stop)
        media = MediaServer(root / "mediamtx", pki_dir=pki)
        media.start()
        stack.callback(media.stop)
        web = WebServer(pki, root / "agent" / "captures", root / "web", media=media)
        web.start()
        stack.callback(web.stop)
        console = ConsoleService(broker, web, root / "console")
        console.start()
        stack.callback(console.stop)
        camera = AgentProcess(broker, root / "agent", media=media, web=web)
        camera.start()
        stack.callback(camera.stop)
        yield System(root, broker, media, web, console, camera)


def start_idle_cameras(system: System, count: int, operator: Probe) -> list[AgentProcess]:
    agents = []
    for n in range(1, count + 1):
        camera = f"cam{n:02d}"
        client = system.broker.pki_dir / "clients" / camera
        agent = AgentProcess(
            system.broker, system.root / camera,
            env={
                "CAMERA_AGENT_MQTT__CERT": str(client / "cert.pem"),
                "CAMERA_AGENT_MQTT__KEY": str(client / "key.pem"),
                "CAMERA_AGENT_MQTT__BASE_TOPIC": f"camera/{camera}",
                "CAMERA_AGENT_CAMERA__ID": camera,
            },
        )  # fmt: skip
        agent.start()
        agents.append(agent)
    for n in range(1, count + 1):
        operator.wait_for(is_online(f"cam{n:02d}"), timeout=START_TIMEOUT_S, what="online")
    return agents


def new_page(browser: Browser, system: System, identity: str = "operator") -> Page:
    page = context(browser, system.origin, system.broker.pki_dir, identity).new_page()
    page.set_default_timeout(30_000)
    return page


def load_to_interactive_ms(browser: Browser, system: System, cameras: int) -> float:
    """Navigation start to every card on the page, in a fresh profile."""
    page = new_page(browser, system)
    try:
        page.goto(system.origin + "/")
        handle = page.wait_for_function(
            f"() => document.querySelectorAll('[data-camera]').length >= {cameras}"
            " ? performance.now() : null",
            polling=5,
        )
        return float(handle.json_value())
    finally:
        page.context.close()


def first_frame_ms(browser: Browser, system: System) -> float:
    """Camera page opened (on a loaded fleet page) to the first frame in its video."""
    page = new_page(browser, system)
    try:
        page.goto(system.origin + "/")
        page.wait_for_selector('[data-camera="camera"]')
        page.evaluate(
            "() => { window.__open = performance.now(); location.hash = '#/camera/camera'; }"
        )
        handle = page.wait_for_function(
            "() => { const v = document.querySelector('video');"
            " return v && v.readyState >= 2 && v.videoWidth"
            " ? performance.now() - window.__open : null }",
            polling=5,
        )
        return float(handle.json_value())
    finally:
        page.context.close()


def page_control_ms(page: Page, runs: int) -> list[float]:
    """Brightness moved on the page's slider, to the changed frame in the page's video."""
    found = []
    for n in range(runs):
        value = 0.6 if n % 2 == 0 else 0.0
        page.wait_for_timeout(700)  # the previous change has settled
        before = float(page.evaluate(MEAN_BRIGHTNESS))
        after = before + 60 if value else before - 60
        took = page.evaluate(CONTROL_TO_FRAME, [value, before, after])
        if took is not None:
            found.append(float(took))
    return found


def rtsp_control_ms(system: System, operator: Probe, runs: int) -> list[float]:
    """The same change over MQTT, to the changed frame decoded by ffmpeg from RTSP."""
    reader = RtspReader(system.media.viewer_url(), 1280, 720)
    found = []
    try:
        reader.wait_for(lambda frame: True, timeout=20)
        for n in range(runs):
            value = 0.6 if n % 2 == 0 else 0.0
            time.sleep(0.7)  # the previous change has settled
            before = reader.snapshot()[-1].luma
            half = before + (30 if value else -30)
            sent = time.time()
            operator.publish("camera/control/settings", f"brightness {value}", wait=False)
            frame = reader.wait_for(changed_frame(sent, half, rising=bool(value)), timeout=5)
            found.append((frame.arrived - sent) * 1000)
    finally:
        reader.close()
    return found


def changed_frame(sent: float, half: float, rising: bool) -> Callable[[Frame], bool]:
    def crossed(frame: Frame) -> bool:
        return frame.arrived > sent and (frame.luma > half if rising else frame.luma < half)

    return crossed


def console_usage(system: System, seconds: float, operator: Probe) -> tuple[float, float]:
    """(CPU % of one core, RSS MiB) of the console service over ``seconds``, while the operator
    changes one camera a second (each change republishes that camera's state to the pages)."""
    assert system.console.process is not None
    pid = system.console.process.pid
    cpu0, _ = process_usage(pid)
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < seconds:
        camera = f"camera/cam{n % 19 + 1:02d}" if n % 2 else "camera"
        operator.publish(f"{camera}/control/settings", f"contrast {1 + (n % 5) / 10}", wait=False)
        n += 1
        time.sleep(1.0)  # one change a second is the load being measured
    cpu1, rss = process_usage(pid)
    return 100 * (cpu1 - cpu0) / (time.monotonic() - began), rss / 2**20


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def row(name: str, one: str, many: str, ratio: str, target: str) -> str:
    return f"| {name} | {one} | {many} | {ratio} | {target} |"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp,
        running_system(Path(tmp), args.cameras) as system,
        chromium() as browser,
    ):
        operator = Probe(system.broker, "operator")
        operator.subscribe("camera/#")
        # The retained state, not the event: the stream may have come online before this
        # subscription.
        operator.wait_for(
            lambda m: m.topic == "camera/state" and m.json()["stream"]["state"] == "online",
            timeout=30,
            what="the stream online",
        )
        load_to_interactive_ms(browser, system, 1)  # warm-up: the encoder and nginx's caches

        measure: dict[str, Callable[[], list[float]]] = {
            "load": lambda: [load_to_interactive_ms(browser, system, 1) for _ in range(args.runs)],
            "frame": lambda: [first_frame_ms(browser, system) for _ in range(args.runs)],
        }
        results["one"] = {name: run() for name, run in measure.items()}
        page = new_page(browser, system)
        page.goto(system.origin + "/#/camera/camera")
        page.wait_for_function("() => document.querySelector('video')?.readyState >= 2")
        results["page_control"] = page_control_ms(page, args.runs * 2)
        results["rtsp_control"] = rtsp_control_ms(system, operator, args.runs * 2)
        page.context.close()

        idle = start_idle_cameras(system, args.cameras - 1, operator)
        try:
            results["many"] = {name: run() for name, run in measure.items()}
            pages = [new_page(browser, system) for _ in range(3)]
            for n, page in enumerate(pages):
                page.goto(system.origin + ("/#/camera/camera" if n == 0 else "/"))
            pages[0].wait_for_function("() => document.querySelector('video')?.readyState >= 2")
            for page in pages[1:]:
                page.wait_for_function(
                    f"() => document.querySelectorAll('[data-camera]').length >= {args.cameras}"
                )
            results["usage"] = console_usage(system, args.seconds, operator)
        finally:
            for agent in idle:
                agent.stop()
            operator.close()

    one, many = results["one"], results["many"]
    page_ms, rtsp_ms = median(results["page_control"]), median(results["rtsp_control"])
    cpu, rss = results["usage"]
    print(f"console benchmark: {args.runs} runs each, medians; {args.cameras} cameras for the"
          " second column")  # fmt: skip
    print()
    print(row("metric", "1 camera", f"{args.cameras} cameras", "ratio", "target"))
    print(row("---", "---", "---", "---", "---"))
    for name, label, target in (
        ("load", "page load to interactive (ms)", "< 1000"),
        ("frame", "first live frame (ms)", "< 1500"),
    ):
        a, b = median(one[name]), median(many[name])
        print(row(label, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}", target))
    print(row(
        "control change to changed frame, page / RTSP (ms)",
        f"{page_ms:.0f} / {rtsp_ms:.0f}", "", f"{page_ms / rtsp_ms:.2f}", "< 300",
    ))  # fmt: skip
    print(row("console RSS (MiB), 3 pages open", "", f"{rss:.1f}", "", "< 57.2 (60 MB)"))
    print(row("console CPU (% of a core), 3 pages, 1 change/s", "", f"{cpu:.2f}", "", ""))
    print()
    print("raw:", json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

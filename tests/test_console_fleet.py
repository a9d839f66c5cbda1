"""The console service's own rules, without a broker: its picture of the cameras, built from
the agents' topics alone, and what it holds for a page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from console.fleet import Fleet, split_topic, subscriptions
from console.server import Page
from pki.access import Subject


@pytest.mark.parametrize(
    ("topic", "parts"),
    [
        ("camera/state", ("camera", "state")),
        ("camera/picture/info", ("camera", "picture/info")),
        ("camera/picture", ("camera", "picture")),
        ("camera/door/picture/info", ("camera/door", "picture/info")),
        ("camera/door/availability", ("camera/door", "availability")),
        ("camera/control/settings", None),  # a command, not a report
        ("camera/response/x", None),
        ("state", None),  # no base
        ("a/b/c/state", None),  # deeper than the console looks
    ],
)
def test_a_report_topic_names_its_camera(topic: str, parts: tuple[str, str] | None) -> None:
    assert split_topic(topic) == parts


def test_the_subscriptions_cover_one_and_two_level_bases() -> None:
    assert "+/state" in subscriptions() and "+/+/picture/info" in subscriptions()


def test_a_camera_appears_with_its_retained_reports_and_goes_when_they_are_cleared() -> None:
    fleet = Fleet(events_kept=10)
    assert fleet.apply("camera/door/status", b'{"event": "x.y"}') is None  # no camera yet
    state = {"camera": "door", "stream": {"url": "rtsp://127.0.0.1:8554/door"}, "jobs": []}
    fleet.apply("camera/door/state", json.dumps(state).encode())
    fleet.apply("camera/door/availability", b"online")
    camera = fleet.cameras["camera/door"]
    assert (camera.id, camera.stream_path, camera.view()["online"]) == ("door", "door", True)
    assert fleet.by_stream_path("door") is camera
    for n in range(25):  # the events kept stay bounded however long the camera runs
        fleet.apply("camera/door/status", json.dumps({"event": "job.progress", "n": n}).encode())
    assert len(camera.events) == 10 and camera.events[-1]["n"] == 24
    assert fleet.apply("camera/door/status", b"SUCCESS: plain text") is None
    for report in ("state", "availability"):
        change = fleet.apply(f"camera/door/{report}", b"")
    assert change is not None and change[1] == "removed"
    assert "camera/door" not in fleet.cameras


class StuckConnection:
    """A page's connection that never drains (a phone asleep)."""

    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_a_page_that_does_not_read_is_dropped_not_buffered_without_end() -> None:
    connection = StuckConnection()
    page = Page(connection, Subject("alice", "viewer", "*"), limit=3)  # type: ignore[arg-type]
    for n in range(10):
        page.send({"type": "event", "n": n})
    await asyncio.sleep(0)  # the close is scheduled, not awaited in the sender's path
    assert connection.closed_with == (1013, "too slow; reconnect")
    assert page.dropped and page.queue.qsize() == 0


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("[console]\nsockett = '/tmp/x.sock'\n", "console.sockett"),
        ("[console]\nanswer_timeout_s = -1\n", "console.answer_timeout_s"),
        ("[mqtt]\ncert = '/nonexistent/cert.pem'\n", "cannot read /nonexistent/cert.pem"),
        ("not toml [", "is not valid TOML"),
    ],
)
def test_a_bad_console_config_is_a_clear_error_not_a_traceback(
    config: str, said: str, tmp_path: Path
) -> None:
    path = tmp_path / "console.toml"
    path.write_text(config)
    run = subprocess.run(
        [sys.executable, "-m", "console", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert said in run.stderr and "Traceback" not in run.stderr, run.stderr

"""The field kit: the selftest tour against every device fixture, and `doctor --dump` writing
the fixture layout the tests load, so a dump from a real camera becomes a regression test."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.camera.dump import dump_devices
from agent.camera.picamera2_backend import Picamera2Camera
from agent.camera.selftest import Step, TourStream, run_tour
from agent.camera.v4l2 import V4l2Camera
from agent.errors import CameraError
from tests import fake_picamera2
from tests.fake_picamera2 import Picamera2Fixture, picamera2_fixtures
from tests.fake_v4l2 import DEVICES, FakeV4l2Ctl, Listing
from tests.test_picamera2 import TARGET
from tests.test_v4l2 import touch_nodes


def tourable_v4l2_nodes() -> list[tuple[str, str]]:
    """(fixture, node) for every node whose controls were dumped."""
    return [
        (node.parent.parent.name, node.name)
        for node in sorted(DEVICES.glob("*/v4l2/*"))
        if (node / "list-ctrls-menus.txt").exists()
    ]


def assert_all_passed(steps: list[Step]) -> None:
    failed = [s.line() for s in steps if not s.ok]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("fixture", [f.name for f in picamera2_fixtures()])
async def test_the_tour_passes_on_every_picamera2_fixture(
    monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    fake_picamera2.install(monkeypatch, fixture)
    camera = Picamera2Camera(0, 1280, 720, 30)
    steps = await run_tour(camera, TourStream(TARGET, record=False))
    assert_all_passed(steps)
    names = [s.check for s in steps]
    assert "control exposure_time_us" in names and "control zoom" in names
    assert names[-1] == "stop" and "picture" in names
    restart = next(s for s in steps if s.check == "restart-class change")
    assert restart.detail == "fps 30 -> 15, stream back"


@pytest.mark.parametrize(("fixture", "node"), tourable_v4l2_nodes())
async def test_the_tour_passes_on_every_v4l2_fixture(fixture: str, node: str) -> None:
    fake = FakeV4l2Ctl.from_fixture(fixture)
    steps = await run_tour(V4l2Camera(f"/dev/{node}", 1280, 720, 30, run=fake))
    assert_all_passed(steps)
    assert any(s.check == "control focus_position" for s in steps) or fixture != "c920"


async def test_the_tour_reports_a_control_the_camera_does_not_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeV4l2Ctl.from_fixture("c920")
    # A camera whose firmware ignores a control: the tour must say so, not pass it.
    node = fake.nodes["/dev/video0"]
    original = node.set_ext

    def ignoring_sharpness(batch: list[tuple[object, int]]) -> None:
        original([(c, v) for c, v in batch if getattr(c, "name", "") != "sharpness"])  # type: ignore[misc]

    monkeypatch.setattr(node, "set_ext", ignoring_sharpness)
    steps = await run_tour(V4l2Camera("/dev/video0", 1280, 720, 30, run=fake))
    failed = {s.check: s.detail for s in steps if not s.ok}
    assert set(failed) == {"control sharpness"}
    assert "the camera reports 128" in failed["control sharpness"]


async def test_a_dump_is_a_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_picamera2.install(monkeypatch, "pi4-imx219")
    dev = tmp_path / "dev"
    dev.mkdir()
    source = FakeV4l2Ctl.from_fixture("c920", str(dev), version="1.22.1")
    touch_nodes(dev, source)
    out = tmp_path / "dump"
    findings = await dump_devices(out, dev, source, (1280, 720, 30))
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert {f.check for f in findings} == {f"v4l2 {dev}/video0", f"v4l2 {dev}/video1", "picamera2"}
    assert (out / "v4l2" / "version.txt").read_text() == "v4l2-ctl 1.22.1\n"
    assert "doctor --dump" in (out / "SOURCE.md").read_text()
    # What was written loads as fixtures do, and plays back what the device printed.
    replay = FakeV4l2Ctl.from_directory(out, str(dev))
    original = DEVICES / "c920" / "v4l2" / "video0"
    assert (out / "v4l2" / "video0" / "info.txt").read_text() == (original / "info.txt").read_text()
    assert (
        Listing.parse((out / "v4l2" / "video0" / "list-ctrls-menus.txt").read_text()).render()
        == (original / "list-ctrls-menus.txt").read_text()
    )
    assert replay.nodes[f"{dev}/video0"].formats == (original / "list-formats-ext.txt").read_text()
    dumped = Picamera2Fixture.load(out)
    reference = Picamera2Fixture.load(DEVICES / "pi4-imx219")
    assert dumped.platform == "vc4"
    assert dumped.before == reference.before
    assert dumped.after["ExposureTime"] == reference.after["ExposureTime"]
    assert dumped.after["ScalerCrop"] == ((0, 0, 64, 64), (0, 0, 3280, 2464), (0, 310, 3280, 1844))
    steps = await run_tour(V4l2Camera(f"{dev}/video0", 1280, 720, 30, run=replay))
    assert_all_passed(steps)


async def test_the_picamera2_tour_reads_back_from_frame_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch, "pi5-imx708")
    original = fake_picamera2.Picamera2._metadata

    def contrast_ignored(self: fake_picamera2.Picamera2) -> dict[str, object]:
        return {**original(self), "Contrast": 1.0}  # an IPA that never applies Contrast

    monkeypatch.setattr(fake_picamera2.Picamera2, "_metadata", contrast_ignored)
    steps = await run_tour(Picamera2Camera(0, 1280, 720, 30), TourStream(TARGET, record=False))
    failed = {s.check: s.detail for s in steps if not s.ok}
    assert set(failed) == {"control contrast"}
    assert "set 0.0, the camera reports 1.0" in failed["control contrast"]


async def test_a_dump_with_the_camera_in_use_says_what_it_could_not_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_picamera2.install(monkeypatch, "pi5-imx708")
    agent_camera = Picamera2Camera(0, 1280, 720, 30)
    await agent_camera.start()  # the agent holds the camera
    findings = await dump_devices(tmp_path / "dump", tmp_path, FakeV4l2Ctl({}), (1280, 720, 30))
    by_check = {f.check: f for f in findings}
    assert not by_check["picamera2"].ok
    assert "Device or resource busy" in by_check["picamera2"].detail
    assert "is the agent running?" in by_check["picamera2"].detail
    assert not (tmp_path / "dump" / "picamera2.json").exists()  # nothing half-written
    # The agent's own attempt to open a busy camera says why, not "no camera".
    with pytest.raises(CameraError, match="Failed to acquire camera: Device or resource busy"):
        await Picamera2Camera(0, 1280, 720, 30).start()
    await agent_camera.stop()
    findings = await dump_devices(tmp_path / "dump", tmp_path, FakeV4l2Ctl({}), (1280, 720, 30))
    assert all(f.ok for f in findings)

"""The V4L2 backend against a faked v4l2-ctl that reproduces a Logitech C920."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.app import select_backend
from agent.camera.detect import captures_video, find_v4l2_capture
from agent.camera.settings import plan_change
from agent.camera.v4l2 import V4l2Camera
from agent.camera.v4l2_ctl import parse_controls, parse_formats
from agent.config import AgentConfig
from agent.doctor import check_cameras
from agent.errors import CameraError, ConfigError, ErrorCode, SettingsRejected
from agent.process import CommandResult
from agent.stream.ffmpeg_args import v4l2_pusher_args
from tests import fake_picamera2
from tests.fakes import FIXTURES, FakeV4l2Device, render_controls


async def started_camera() -> tuple[V4l2Camera, FakeV4l2Device]:
    device = FakeV4l2Device()
    camera = V4l2Camera("/dev/video0", 1920, 1080, 30, run=device)
    await camera.start()
    return camera, device


def test_parser_reads_v4l2_ctl_listing_exactly() -> None:
    text = (FIXTURES / "c920-list-ctrls-menus.txt").read_text()
    controls = {c.name: c for c in parse_controls(text)}
    assert len(controls) == 17
    pan = controls["pan_absolute"]
    assert (pan.minimum, pan.maximum, pan.step, pan.default, pan.value) == (
        -36000,
        36000,
        3600,
        0,
        0,
    )
    assert controls["focus_absolute"].inactive
    assert controls["auto_exposure"].menu == {1: "Manual Mode", 3: "Aperture Priority Mode"}
    assert controls["auto_exposure"].value == 3
    assert controls["white_balance_automatic"].type == "bool"
    # The fake renders what it parsed in the same format: parsing is a fixed point.
    assert render_controls(
        parse_controls(render_controls(list(controls.values())))
    ) == render_controls(list(controls.values()))


def test_formats_prefer_the_cameras_own_h264() -> None:
    formats = parse_formats((FIXTURES / "c920-list-formats-ext.txt").read_text())
    assert sorted(formats) == ["H264", "MJPG", "YUYV"]
    assert (1920, 1080) in formats["H264"]


async def test_descriptors_use_canonical_names_native_ranges_and_aliases() -> None:
    camera, _ = await started_camera()
    by_name = {d.name: d for d in camera.descriptors()}
    focus = by_name["focus_position"]
    assert focus.aliases == ("focus_absolute",)
    assert (focus.minimum, focus.maximum, focus.step) == (0, 250, 5)
    assert by_name["auto_focus"].aliases == ("focus_automatic_continuous",)
    assert by_name["pan"].minimum == -36000
    assert by_name["power_line_frequency"].options[1].label == "50 Hz"
    assert by_name["width"].restarts_stream and not by_name["brightness"].restarts_stream
    values = camera.values()
    assert values["auto_focus"] is True
    assert focus.inactive_reason(values) == "turn auto_focus off first"
    assert (
        by_name["exposure_time_us"].inactive_reason(values)
        == "set auto_exposure to 1 (Manual Mode) first"
    )
    assert camera.info()["input_format"] == "H264"


async def test_dependent_controls_are_explained_and_judged_as_a_whole() -> None:
    camera, device = await started_camera()
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"focus_absolute": 100})
    assert refused.value.code == ErrorCode.INACTIVE
    assert "turn auto_focus off first" in refused.value.detail
    plan = plan_change(
        camera.descriptors(),
        camera.values(),
        {"focus_automatic_continuous": 0, "focus_position": 100},
    )
    await camera.apply(plan.values, restart=False)
    assert device.calls[-2] == [
        "v4l2-ctl",
        "-d",
        "/dev/video0",
        "--set-ctrl=focus_automatic_continuous=0,focus_absolute=100",
    ]
    values = camera.values()
    assert values["focus_position"] == 100 and values["auto_focus"] is False
    by_name = {d.name: d for d in camera.descriptors()}
    assert by_name["focus_position"].inactive_reason(values) is None


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"pan": 1000}, ErrorCode.INVALID_VALUE),  # not on the 3600 step
        ({"pan_absolute": 72000}, ErrorCode.OUT_OF_RANGE),
        ({"auto_exposure": 2}, ErrorCode.INVALID_VALUE),  # not a menu entry of this camera
        ({"led_colour": 1}, ErrorCode.UNKNOWN_CONTROL),
    ],
)
async def test_bad_values_never_reach_the_device(
    request_: dict[str, object], code: ErrorCode
) -> None:
    camera, device = await started_camera()
    calls = len(device.calls)
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), request_)
    assert refused.value.code == code
    assert len(device.calls) == calls


async def test_menu_by_label_and_device_errors() -> None:
    camera, device = await started_camera()
    plan = plan_change(camera.descriptors(), camera.values(), {"auto_exposure": "Manual Mode"})
    await camera.apply(plan.values, restart=False)
    assert camera.values()["auto_exposure"] == 1
    device.device = "/dev/video9"  # unplugged
    with pytest.raises(CameraError, match="Cannot open device"):
        await camera.apply({"brightness": 10}, restart=False)


@pytest.mark.parametrize(
    ("input_format", "expect_copy"), [("h264", True), ("mjpeg", False), ("yuyv422", False)]
)
def test_v4l2_pusher_copies_h264_and_encodes_the_rest(input_format: str, expect_copy: bool) -> None:
    argv = v4l2_pusher_args(
        "/dev/video0", input_format, 1920, 1080, 30, 4000, 2.0, "rtsp://a:b@h/cam", "/run/x.yuv"
    )
    assert argv[argv.index("-input_format") + 1] == input_format
    assert argv[argv.index("-video_size") + 1] == "1920x1080"
    codec = argv[argv.index("-c:v") + 1]
    assert codec == ("copy" if expect_copy else "libx264")
    if not expect_copy:
        assert argv[argv.index("-g") + 1] == "60"
    assert argv[-1] == "/run/x.yuv" and "rtsp://a:b@h/cam" in argv


class FakeNodes:
    """`v4l2-ctl --info` for a C920's two nodes: video0 captures, video1 carries metadata."""

    def __init__(self, dev: Path) -> None:
        self.dev = dev

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        node = Path(argv[2]).name
        fixture = {"video0": "c920-info.txt", "video1": "c920-info-metadata.txt"}.get(node)
        if fixture is None:
            return CommandResult(1, "", f"Cannot open device {argv[2]}, exiting.\n")
        return CommandResult(0, (FIXTURES / fixture).read_text(), "")


def config_with(backend: str) -> AgentConfig:
    return AgentConfig(camera={"backend": backend})


@pytest.mark.parametrize("order", [("video1", "video0"), ("video0", "video1")])
async def test_auto_detection_picks_the_capture_node(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    for name in order:
        (tmp_path / name).touch()
    device, notes = await find_v4l2_capture(tmp_path, FakeNodes(tmp_path))
    assert device == str(tmp_path / "video0")
    assert notes == []  # probed in node-number order, whatever order the files appeared in
    backend, _ = await select_backend(config_with("auto"), tmp_path, FakeNodes(tmp_path))
    assert backend.name == "v4l2"
    assert backend.info()["device"] == str(tmp_path / "video0")


async def test_auto_detection_without_cameras_falls_back_with_a_warning(tmp_path: Path) -> None:
    backend, warnings = await select_backend(config_with("auto"), tmp_path, FakeNodes(tmp_path))
    assert backend.name == "testsrc"
    assert warnings[-1] == "no camera found; streaming the test pattern"


def test_capture_caps_are_read_from_the_node_not_the_device() -> None:
    assert captures_video((FIXTURES / "c920-info.txt").read_text())
    # The metadata node's device has Video Capture too, but the node itself does not.
    assert not captures_video((FIXTURES / "c920-info-metadata.txt").read_text())


async def test_auto_detection_prefers_a_libcamera_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_picamera2.install(monkeypatch)
    (tmp_path / "video0").touch()  # a Pi also exposes V4L2 nodes; libcamera comes first
    backend, warnings = await select_backend(config_with("auto"), tmp_path, FakeNodes(tmp_path))
    assert backend.name == "picamera2" and warnings == []


async def test_picamera2_device_must_be_a_camera_number(tmp_path: Path) -> None:
    config = AgentConfig(camera={"backend": "picamera2", "device": "/dev/video0"})
    with pytest.raises(ConfigError, match="camera number"):
        await select_backend(config, tmp_path, FakeNodes(tmp_path))


async def test_doctor_lists_cameras_formats_and_controls(tmp_path: Path) -> None:
    (tmp_path / "video0").touch()
    (tmp_path / "video1").touch()
    device = FakeV4l2Device(str(tmp_path / "video0"))
    nodes = FakeNodes(tmp_path)

    async def run(argv: Sequence[str]) -> CommandResult:
        return await (nodes(argv) if "--info" in argv else device(argv))

    findings = {f.check: f for f in await check_cameras(tmp_path, run)}
    camera = findings[f"v4l2 {tmp_path / 'video0'}"]
    assert camera.ok
    formats = "YUYV up to 1920x1080, H264 up to 1920x1080, MJPG up to 1920x1080"
    assert camera.detail == f"HD Pro Webcam C920: {formats}; 17 controls"
    assert (
        findings[f"v4l2 {tmp_path / 'video1'}"].detail == "HD Pro Webcam C920: not a capture node"
    )

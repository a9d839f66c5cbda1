"""The V4L2 backend against a fake v4l2-ctl and uvcvideo fed by real-device fixtures."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.app import select_backend
from agent.camera.detect import find_v4l2_capture, parse_info
from agent.camera.settings import plan_change
from agent.camera.v4l2 import V4l2Camera, v4l2_descriptors
from agent.camera.v4l2_ctl import parse_controls, parse_formats, set_controls_calls
from agent.config import AgentConfig
from agent.controls import CameraControls, ControlStore
from agent.doctor import check_cameras
from agent.errors import CameraError, ConfigError, ErrorCode, SettingsRejected
from agent.process import CommandResult, ProcessStartError, run_command
from agent.stream.ffmpeg_args import v4l2_pusher_args
from tests import fake_picamera2
from tests.fake_v4l2 import DEVICES, VERSIONS, FakeV4l2Ctl, Listing, v4l2_fixtures

C920 = DEVICES / "c920" / "v4l2" / "video0"


def listings() -> list[Path]:
    return sorted(
        [*DEVICES.glob("*/v4l2/*/list-ctrls-menus.txt"), *DEVICES.glob("*/v4l2/*/list-ctrls.txt")]
    )


async def started_camera(
    version: str = "1.26.1", newer_kernel: bool = True
) -> tuple[V4l2Camera, FakeV4l2Ctl]:
    fake = FakeV4l2Ctl.from_fixture("c920", version=version)
    fake.nodes["/dev/video0"].newer_kernel = newer_kernel
    camera = V4l2Camera("/dev/video0", 1920, 1080, 30, run=fake)
    await camera.start()
    return camera, fake


@pytest.mark.parametrize("path", listings(), ids=lambda p: p.parent.parent.parent.name)
def test_the_fake_prints_every_fixture_listing_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    assert Listing.parse(text).render() == text


def test_parser_reads_every_flag_of_a_multi_flag_line() -> None:
    text = (DEVICES / "vsi-encoder" / "v4l2" / "video0" / "list-ctrls-menus.txt").read_text()
    controls = {c.name: c for c in parse_controls(text)}
    buffers = controls["min_number_of_capture_buffers"]
    assert buffers.flags == {"read-only", "volatile"} and buffers.read_only
    assert controls["video_b_frames"].flags == {"update"}
    assert controls["vsi_priv_v4l2_roi_params_set"].type == "unknown"
    names = {d.name for d in v4l2_descriptors(list(controls.values()))}
    assert "vsi_priv_v4l2_roi_params_set" not in names  # a payload, nothing a slider can set
    assert {d.name for d in v4l2_descriptors(list(controls.values())) if d.read_only} >= {
        "min_number_of_capture_buffers"
    }


def test_parser_reads_every_scalar_type_v4l2_ctl_prints() -> None:
    # Lines in print_qctrl's formats (v4l2-ctl-common.cpp) for the types no fixture has yet.
    lines = [
        ("pixel_rate", "0x009f0902 (int64)  : min=1 max=840000000 step=1 "
                       "default=840000000 value=840000000 flags=read-only"),
        ("link_frequency", "0x009f0901 (intmenu): min=0 max=1 default=0 "
                           "value=0 (450000000 0x1ad27480) flags=read-only"),
        ("test_pattern", "0x009f0903 (bitmask): max=0x0000000f default=0x00000000 value=5"),
        ("focus_one_push", "0x009a0917 (button) : value=0 flags=write-only, execute-on-write"),
        ("exposure_time_absolute", "0x009a0902 (int)    : min=3 max=2047 step=1 default=250 "
                                   "value=250 flags=inactive, volatile"),
    ]  # fmt: skip
    rendered = [f"{name:>31} {rest}" for name, rest in lines]
    rendered[1:2] = [
        rendered[1],
        "\t\t\t\t0: 450000000 (0x1ad27480)",
        "\t\t\t\t1: 453000000 (0x1b000e40)",
    ]
    text = "\n".join(rendered)
    controls = {c.name: c for c in parse_controls(text)}
    assert (controls["pixel_rate"].type, controls["pixel_rate"].maximum) == ("int64", 840000000)
    assert controls["link_frequency"].menu == {
        0: "450000000 (0x1ad27480)",
        1: "453000000 (0x1b000e40)",
    }
    assert controls["link_frequency"].value == 0
    assert (controls["test_pattern"].maximum, controls["test_pattern"].value) == (15, 5)
    assert controls["focus_one_push"].flags == {"write-only", "execute-on-write"}
    assert controls["exposure_time_absolute"].inactive
    descriptors = {d.name: d for d in v4l2_descriptors(list(controls.values()))}
    assert "focus_one_push" not in descriptors
    assert [o.label for o in descriptors["link_frequency"].options] == ["450000000", "453000000"]
    assert descriptors["test_pattern"].maximum == 15
    assert Listing.parse(text + "\n").render() == text + "\n"


def test_formats_keep_lowercase_fourccs_and_old_layouts() -> None:
    cfe = parse_formats(
        (DEVICES / "pi5-cfe" / "v4l2" / "video0" / "list-formats-ext.txt").read_text()
    )
    assert list(cfe) == ["YUYV", "RGGB", "pRAA", "RG10", "pRCC", "PC1R"]
    assert cfe["pRAA"] == [(16, 16), (16384, 16384)]
    elp = parse_formats(
        (DEVICES / "elp-h264" / "v4l2" / "video0" / "list-formats-ext.txt").read_text()
    )
    assert elp == {"MJPG": [(1920, 1080), (1280, 720)]}
    assert parse_formats(
        "\t[0]: 'XR15-BE' (16-bit XRGB 1-5-5-5 BE)\n\t\tSize: Discrete 640x480\n"
    ) == {"XR15-BE": [(640, 480)]}
    c920 = parse_formats((C920 / "list-formats-ext.txt").read_text())
    assert sorted(c920) == ["H264", "MJPG", "YUYV"]


async def test_descriptors_use_canonical_names_native_ranges_and_aliases() -> None:
    camera, _ = await started_camera()
    by_name = {d.name: d for d in camera.descriptors()}
    focus = by_name["focus_position"]
    assert focus.aliases == ("focus_absolute",)
    assert (focus.minimum, focus.maximum, focus.step) == (0, 250, 5)
    assert by_name["auto_focus"].aliases == ("focus_automatic_continuous", "focus_auto")
    assert by_name["auto_exposure"].aliases == ("exposure_auto",)
    assert by_name["power_line_frequency"].options[1].label == "50 Hz"
    values = camera.values()
    assert values["auto_focus"] is True
    assert focus.inactive_reason(values) == "turn auto_focus off first"
    assert camera.info()["input_format"] == "H264"


async def test_old_uvcvideo_names_are_accepted_on_a_new_kernel_and_shown_on_an_old_one() -> None:
    camera, _ = await started_camera()
    plan = plan_change(
        camera.descriptors(),
        camera.values(),
        {"exposure_auto": 1, "white_balance_temperature_auto": 0},
    )
    assert plan.values == {"auto_exposure": 1, "auto_white_balance": False}
    old = parse_controls(
        (DEVICES / "legacy-names" / "v4l2" / "video0" / "list-ctrls.txt").read_text()
    )
    by_name = {d.name: d for d in v4l2_descriptors(old)}
    assert by_name["auto_exposure"].aliases == ("exposure_auto", "auto_exposure")
    assert by_name["exposure_time_us"].inactive_reason({"auto_exposure": 3}) is not None
    assert by_name["auto_white_balance"].aliases == (
        "white_balance_temperature_auto",
        "white_balance_automatic",
    )


@pytest.mark.parametrize("newer_kernel", [True, False])
@pytest.mark.parametrize(
    "request_",
    [
        {"white_balance_temperature": 4500, "white_balance_automatic": 0},  # dependent first
        {"focus_automatic_continuous": 0, "focus_absolute": 100},
        {"exposure_time_absolute": 300, "auto_exposure": 1},
    ],
)
async def test_auto_controls_go_first_so_a_dependent_change_applies_whole(
    request_: dict[str, int], newer_kernel: bool
) -> None:
    camera, fake = await started_camera(newer_kernel=newer_kernel)
    plan = plan_change(camera.descriptors(), camera.values(), request_)
    applied = await camera.apply(plan.values, restart=False)
    device = fake.nodes["/dev/video0"].controls
    for name, value in request_.items():
        assert device[name].value == value, (name, fake.calls[-3:])
    assert set(applied.values) == set(plan.values)
    sets = [c[3] for c in fake.calls if c[3].startswith("--set-ctrl=")]
    assert len(sets) == 2  # the auto control in a call of its own, first


async def test_a_half_applied_change_says_what_was_kept_and_the_cache_follows_the_device() -> None:
    camera, fake = await started_camera()
    node = fake.nodes["/dev/video0"]
    node.controls["brightness"].flags = frozenset({"read-only"})  # as a grabbed control would be
    with pytest.raises(CameraError) as failed:
        await camera.apply({"contrast": 100, "brightness": 10, "saturation": 90}, restart=False)
    message = str(failed.value)
    assert "brightness: Permission denied" in message
    assert "applied: contrast=100, saturation=90" in message
    values = camera.values()  # refreshed after the failure: the device's values, not stale ones
    assert (values["contrast"], values["saturation"], values["brightness"]) == (100, 90, 128)


async def test_uvcvideo_rounding_is_reported_as_the_value_kept() -> None:
    camera, fake = await started_camera()
    node = fake.nodes["/dev/video0"]
    # Straight to the device (no descriptor check), as a value restored from an older camera.
    applied = await camera.apply({"pan": 5000}, restart=False)
    assert node.controls["pan_absolute"].value == 3600
    assert applied.values == {"pan": 3600}


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"pan": 1000}, ErrorCode.INVALID_VALUE),  # not on the 3600 step
        ({"pan_absolute": 72000}, ErrorCode.OUT_OF_RANGE),
        ({"auto_exposure": 2}, ErrorCode.INVALID_VALUE),  # not a menu entry of this camera
        ({"led_colour": 1}, ErrorCode.UNKNOWN_CONTROL),
        ({"focus_absolute": 100}, ErrorCode.INACTIVE),
    ],
)
async def test_bad_values_never_reach_the_device(
    request_: dict[str, object], code: ErrorCode
) -> None:
    camera, fake = await started_camera()
    calls = len(fake.calls)
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), request_)
    assert refused.value.code == code
    assert len(fake.calls) == calls


async def test_unplugged_camera_is_a_camera_error() -> None:
    camera, fake = await started_camera()
    fake.nodes.pop("/dev/video0")
    with pytest.raises(CameraError, match="Cannot open device"):
        await camera.apply({"brightness": 10}, restart=False)


def test_set_calls_put_masters_first() -> None:
    calls = set_controls_calls(
        "/dev/video0",
        {"white_balance_temperature": 4500, "white_balance_automatic": 0, "brightness": 9},
        {"white_balance_automatic"},
    )  # fmt: skip
    assert [c[3] for c in calls] == [
        "--set-ctrl=white_balance_automatic=0",
        "--set-ctrl=white_balance_temperature=4500,brightness=9",
    ]


@pytest.mark.parametrize(
    ("input_format", "expect_copy"), [("h264", True), ("mjpeg", False), ("yuyv422", False)]
)
def test_v4l2_pusher_copies_h264_and_encodes_the_rest(input_format: str, expect_copy: bool) -> None:
    argv = v4l2_pusher_args(
        "/dev/video0", input_format, 1920, 1080, 30, 4000, 2.0, "rtsp://a:b@h/cam", "/run/x.yuv"
    )
    assert argv[argv.index("-input_format") + 1] == input_format
    codec = argv[argv.index("-c:v") + 1]
    assert codec == ("copy" if expect_copy else "libx264")


def touch_nodes(dev: Path, fake: FakeV4l2Ctl) -> None:
    for node in fake.nodes:
        (dev / Path(node).name).touch()


def config_with(backend: str) -> AgentConfig:
    return AgentConfig(camera={"backend": backend})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("fixtures", "expected"),
    [
        (["c920"], "c920/video0"),  # video1 is uvcvideo's metadata node
        (["elp-h264"], "elp-h264/video1"),  # H.264 on the second node wins over MJPEG
        (["mjpeg-webcam"], "mjpeg-webcam/video0"),
        (["pi4-unicam", "c920"], "c920/video0"),  # the CSI receiver offers YUYV, but is no webcam
        (["pi5-cfe", "pi5-pispbe", "mjpeg-webcam"], "mjpeg-webcam/video0"),
        (["pi4-unicam", "pi4-rpivid"], None),
        (["pi5-cfe", "pi5-pispbe"], None),
    ],
)
async def test_auto_detection_takes_webcams_only(
    tmp_path: Path, fixtures: list[str], expected: str | None, version: str
) -> None:
    fake = FakeV4l2Ctl({}, version)
    names: dict[str, str] = {}
    number = 0
    for fixture in fixtures:  # each camera's nodes after the previous one's, as udev numbers them
        for node_path, node in FakeV4l2Ctl.from_fixture(fixture, str(tmp_path)).nodes.items():
            path = f"{tmp_path}/video{number}"
            fake.nodes[path] = node
            names[path] = f"{fixture}/{Path(node_path).name}"
            number += 1
    touch_nodes(tmp_path, fake)
    device, notes = await find_v4l2_capture(tmp_path, fake)
    assert (names[device] if device else None) == expected, notes
    backend, warnings = await select_backend(config_with("auto"), tmp_path, fake)
    assert backend.name == ("v4l2" if expected else "testsrc")
    if expected is None:
        assert warnings[-1] == "no camera found; streaming the test pattern"
        assert all("skipped" in note for note in warnings[:-1])


def test_io_mc_is_read_from_the_hex_caps_that_every_v4l2_ctl_prints() -> None:
    info = (DEVICES / "pi4-unicam" / "v4l2" / "video0" / "info.txt").read_text()
    as_122 = info.replace("\t\tI/O MC\n", "")
    for text in (info, as_122):
        assert "media-controller" in (parse_info(text).unusable_reason() or "")
    assert parse_info((C920 / "info.txt").read_text()).unusable_reason() is None


async def test_auto_detection_prefers_a_libcamera_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_picamera2.install(monkeypatch)
    fake = FakeV4l2Ctl.from_fixture("c920", str(tmp_path))
    touch_nodes(tmp_path, fake)
    backend, warnings = await select_backend(config_with("auto"), tmp_path, fake)
    assert backend.name == "picamera2" and warnings == []


async def test_a_usb_webcam_seen_by_libcamera_is_driven_through_v4l2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_picamera2.install(monkeypatch)
    monkeypatch.setattr(fake_picamera2.Picamera2.fixture, "global_camera_info", [])
    monkeypatch.setattr(fake_picamera2.Picamera2, "usb_cameras", [fake_picamera2.USB_WEBCAM_INFO])
    fake = FakeV4l2Ctl.from_fixture("c920", str(tmp_path))
    touch_nodes(tmp_path, fake)
    backend, _ = await select_backend(config_with("auto"), tmp_path, fake)
    assert backend.name == "v4l2"


async def test_picamera2_device_must_be_a_camera_number(tmp_path: Path) -> None:
    config = AgentConfig(camera={"backend": "picamera2", "device": "/dev/video0"})
    with pytest.raises(ConfigError, match="camera number"):
        await select_backend(config, tmp_path, FakeV4l2Ctl({}))


async def test_doctor_lists_cameras_formats_controls_and_why_nodes_are_skipped(
    tmp_path: Path,
) -> None:
    fake = FakeV4l2Ctl.from_fixture("c920", str(tmp_path))
    fake.nodes[f"{tmp_path}/video2"] = FakeV4l2Ctl.from_fixture("pi4-unicam").nodes["/dev/video0"]
    touch_nodes(tmp_path, fake)
    findings = {f.check: f for f in await check_cameras(tmp_path, fake)}
    camera = findings[f"v4l2 {tmp_path / 'video0'}"]
    assert camera.ok
    formats = "YUYV up to 1920x1080, H264 up to 1920x1080, MJPG up to 1920x1080"
    assert camera.detail == f"HD Pro Webcam C920: {formats}; 17 controls"
    assert (
        findings[f"v4l2 {tmp_path / 'video1'}"].detail
        == "HD Pro Webcam C920: not a video capture node"
    )
    assert "media-controller" in findings[f"v4l2 {tmp_path / 'video2'}"].detail


def test_every_v4l2_fixture_names_its_source() -> None:
    for name in v4l2_fixtures():
        assert (DEVICES / name / "SOURCE.md").exists(), name


async def test_every_scalar_type_is_set_and_read_back_through_v4l2_ctl() -> None:
    fake = FakeV4l2Ctl.from_fixture("vivid")
    node = fake.nodes["/dev/video0"]
    camera = V4l2Camera("/dev/video0", 1280, 720, 30, run=fake)
    await camera.refresh()
    by_name = {d.name: d for d in camera.descriptors()}
    assert "button" not in by_name and "string" not in by_name
    assert by_name["read_only_integer_32_bits"].read_only
    assert camera.values()["bitmask"] == 0x80002000  # printed as -2147475456
    assert [o.value for o in by_name["menu"].options] == [1, 3, 4]  # skipped entries absent
    assert [o.label for o in by_name["integer_menu"].options][:3] == ["2", "3", "5"]
    plan = plan_change(
        camera.descriptors(),
        camera.values(),
        {"bitmask": 0x80402010, "integer_64_bits": 2**40, "integer_menu": 8, "menu": 4},
    )
    await camera.apply(plan.values, restart=False)
    assert node.controls["bitmask"].value == 0x80402010
    assert camera.values() | plan.values == camera.values()
    sets = [c for c in fake.calls if c[3].startswith("--set-ctrl=")]
    assert len(sets) == 1  # no auto control among them: one call


async def test_the_fake_answers_as_the_installed_v4l2_ctl_where_no_device_is_needed(
    tmp_path: Path,
) -> None:
    """The real v4l2-ctl (Debian's v4l-utils, which the test command installs) against the
    fake, for what needs no camera: a node that does not exist, and --version."""
    missing = str(tmp_path / "video7")
    for option in ("--info", "--list-ctrls-menus", "--set-ctrl=brightness=1"):
        argv = ["v4l2-ctl", "-d", missing, option]
        real = await run_command(argv)
        fake = await FakeV4l2Ctl({})(argv)
        assert (fake.returncode, fake.stdout, fake.stderr) == (
            real.returncode, real.stdout, real.stderr,
        ), option  # fmt: skip
    real = await run_command(["v4l2-ctl", "--version"])
    version = real.stdout.split()[-1]
    fake = await FakeV4l2Ctl({}, version)(["v4l2-ctl", "--version"])
    assert fake.stdout == real.stdout


async def test_a_missing_v4l2_ctl_is_a_camera_error_that_says_what_to_install() -> None:
    async def missing(argv: Sequence[str]) -> CommandResult:
        raise ProcessStartError(f"cannot start {argv[0]}: No such file or directory")

    with pytest.raises(CameraError, match="apt install v4l-utils"):
        await V4l2Camera("/dev/video0", 1280, 720, 30, run=missing).start()


async def test_64_bit_limits_are_checked_exactly() -> None:
    camera = V4l2Camera("/dev/video0", 1280, 720, 30, run=FakeV4l2Ctl.from_fixture("vivid"))
    await camera.refresh()
    top = 2**63 - 1
    plan = plan_change(camera.descriptors(), camera.values(), {"integer_64_bits": str(top)})
    assert plan.values == {"integer_64_bits": top}
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"integer_64_bits": top + 1})
    assert refused.value.detail == (
        f"integer_64_bits {top + 1} is out of range [{-(2**63)}, {top}]"
    )


async def test_restoring_an_inactive_control_saved_under_its_native_name_ends(
    tmp_path: Path,
) -> None:
    """controls.json from an older release (native names): exposure_time_absolute while auto
    exposure is on is dropped with a warning; the rest is restored (it looped for ever)."""
    camera, _ = await started_camera()
    store = ControlStore(tmp_path / "controls.json")
    store.save({"exposure_time_absolute": 300, "brightness": 140})
    await store.close()
    controls = CameraControls(camera, store, None, lambda: None)
    await asyncio.wait_for(controls.restore(), 5)
    values = camera.values()
    assert values["brightness"] == 140
    assert values["exposure_time_us"] == 250  # not 300: inactive, not restored


async def test_a_timelapse_lock_freezes_the_automatics_where_they_are_and_restores_them(
    tmp_path: Path,
) -> None:
    camera, _ = await started_camera()
    freeze_and_restore = camera.auto_lock_plan()
    assert freeze_and_restore is not None
    freeze, restore = freeze_and_restore
    # The c920 fixture: aperture priority (3) and automatic white balance at 250 and 4000 K.
    assert freeze == {"auto_exposure": 1, "exposure_time_us": 250,
                      "auto_white_balance": False, "white_balance_temperature": 4000}  # fmt: skip
    assert restore == {"auto_exposure": 3, "auto_white_balance": True}
    controls = CameraControls(camera, ControlStore(tmp_path / "controls.json"), None, lambda: None)
    await controls.change(freeze)
    assert camera.values()["auto_exposure"] == 1
    assert camera.values()["auto_white_balance"] is False
    assert camera.auto_lock_plan() is None  # nothing automatic runs any more
    await controls.change(restore)
    assert (camera.values()["auto_exposure"], camera.values()["auto_white_balance"]) == (3, True)


@pytest.mark.parametrize("input_format", ["mjpeg", "h264"])
def test_the_v4l2_pipeline_writes_motion_detections_grey_frame(
    input_format: str, tmp_path: Path
) -> None:
    """The V4L2 pusher's own arguments, run by the real ffmpeg on what such a webcam sends (its
    MJPEG, or its H.264 copied): the camera input and the RTSP output swapped for files."""
    source = tmp_path / f"webcam.{input_format}"
    encode = ["-c:v", "mjpeg"] if input_format == "mjpeg" else ["-c:v", "libx264", "-g", "10"]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10",
         "-frames:v", "30", *encode, "-f", input_format, str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    grey = tmp_path / "motion.gray"
    argv = v4l2_pusher_args(
        "/dev/video0", input_format, 640, 360, 10, 1000, 1.0, "rtsp://a:b@h/cam",
        str(tmp_path / "still.yuv"), motion=(str(grey), 320, 180), motion_fps=5,
    )  # fmt: skip
    camera = argv.index("-f")  # `-f v4l2 -input_format F -video_size S -framerate N -i DEV`
    argv[camera : argv.index("-i") + 2] = ["-f", input_format, "-framerate", "10", "-i",
                                           str(source)]  # fmt: skip
    rtsp = argv.index("rtsp")
    argv[rtsp - 1 : rtsp + 4] = ["-f", "mp4", str(tmp_path / "published.mp4")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    pixels = grey.read_bytes()
    assert len(pixels) == 320 * 180  # one grey frame, analysis size
    assert len(set(pixels)) > 50  # the picture, shrunk, not a flat fill
    assert (tmp_path / "still.yuv").stat().st_size == 640 * 360 * 3 // 2

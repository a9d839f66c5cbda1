"""The picamera2 backend against a fake of picamera2/libcamera fed by real-device fixtures."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from devstack import Broker, agent_config_toml

from agent.app import AgentApp
from agent.camera.detect import libcamera_cameras
from agent.camera.libcamera_controls import CropGeometry, crop_descriptors, pack_yuv420
from agent.camera.picamera2_backend import Picamera2Camera
from agent.camera.settings import plan_change
from agent.config import load_config
from agent.controls import CameraControls, ControlStore
from agent.errors import CameraError, ErrorCode, SettingsRejected
from agent.stream.target import StreamTarget
from tests import fake_picamera2
from tests.fake_picamera2 import USB_WEBCAM_INFO, picamera2_fixtures
from tests.support import Probe

TARGET = StreamTarget("rtsp://127.0.0.1:8554/cam", "agent", "s3cret")
FIXTURES = [f.name for f in picamera2_fixtures()]


async def open_camera(
    monkeypatch: pytest.MonkeyPatch,
    fixture: str = "pi5-imx708",
    size: tuple[int, int] = (1280, 720),
) -> Picamera2Camera:
    fake_picamera2.install(monkeypatch, fixture)
    camera = Picamera2Camera(0, size[0], size[1], 30)
    await camera.start()
    return camera


def by_name(camera: Picamera2Camera) -> dict[str, object]:
    return {d.name: d for d in camera.descriptors()}


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_start_survives_placeholder_limits_and_publishes_the_modes_real_ones(
    monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    loaded = fake_picamera2.install(monkeypatch, fixture)
    # Before configure libcamera reports a 0x0 smallest crop: no zoom can be derived from it.
    assert CropGeometry.from_controls(loaded.before) is None
    assert crop_descriptors(None) == []
    camera = Picamera2Camera(0, 1280, 720, 1)  # 1 fps: a frame outlasts the longest exposure
    await camera.start()
    descriptors = {d.name: d for d in camera.descriptors()}
    exposure = descriptors["exposure_time_us"]
    after = loaded.after["ExposureTime"]
    assert exposure.minimum == after[0]
    assert exposure.maximum == min(after[1], 1_000_000)  # the mode's, not the placeholder 66666
    gain = descriptors["analogue_gain"]
    assert (gain.minimum, gain.maximum) == loaded.after["AnalogueGain"][:2]
    assert (descriptors["zoom"].maximum or 0) > 1
    await camera.stop()


async def test_an_exposure_cannot_outlast_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    camera = await open_camera(monkeypatch, "pi4-imx477")
    assert {d.name: d for d in camera.descriptors()}["exposure_time_us"].maximum == 33333
    await camera.apply({"fps": 5}, restart=True)
    await camera.start_pusher(TARGET)  # configured again: the limits follow the frame rate
    assert {d.name: d for d in camera.descriptors()}["exposure_time_us"].maximum == 200000


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_auto_exposure_and_white_balance_stay_auto_across_restarts(
    monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    camera = await open_camera(monkeypatch, fixture)
    for _ in range(2):  # the first start, then a restart (size, flip, encoder crash)
        pusher = await camera.start_pusher(TARGET)
        state = camera._camera.state
        assert state.exposure_auto and state.gain_auto, state.applied
        assert state.awb_auto and state.colour_gains is None, state.applied
        await pusher.stop()
    await camera.stop()


async def test_manual_exposure_and_gains_are_kept_across_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch)
    pusher = await camera.start_pusher(TARGET)
    plan = plan_change(
        camera.descriptors(),
        camera.values(),
        {"auto_exposure": False, "exposure_time_us": 8000, "auto_white_balance": False,
         "colour_gains": [1.5, 2.0], "auto_focus": 0, "focus_position": 3.0},
    )  # fmt: skip
    await camera.apply(plan.values, restart=False)
    state = camera._camera.state
    assert not state.exposure_auto and state.exposure_time == 8000
    assert not state.awb_auto and state.colour_gains == (1.5, 2.0)
    assert state.lens_position == 3.0
    await pusher.stop()
    await camera.start_pusher(TARGET)  # a restart: a new configure resets picamera2's controls
    state = camera._camera.state
    assert not state.exposure_auto and state.exposure_time == 8000
    assert state.colour_gains == (1.5, 2.0) and state.lens_position == 3.0
    # Back to auto: the manual values are no longer sent.
    plan = plan_change(camera.descriptors(), camera.values(), {"auto_exposure": True})
    await camera.apply(plan.values, restart=False)
    assert state.exposure_auto and "ExposureTime" not in state.applied[-1]


@pytest.mark.parametrize(
    ("fixture", "size", "aspect"),
    [("pi4-imx219", (1280, 720), 16 / 9), ("pi4-imx477", (1280, 720), 16 / 9),
     ("pi4-imx219", (640, 480), 4 / 3), ("pi5-imx708", (1280, 720), 16 / 9)],
)  # fmt: skip
async def test_zoom_one_keeps_the_streams_aspect_ratio(
    monkeypatch: pytest.MonkeyPatch, fixture: str, size: tuple[int, int], aspect: float
) -> None:
    camera = await open_camera(monkeypatch, fixture, size)
    await camera.start_pusher(TARGET)
    crop = camera._camera.state.crop
    assert crop is not None
    assert crop[2] / crop[3] == pytest.approx(aspect, rel=0.01)  # not stretched
    field_of_view = camera._camera.camera_controls["ScalerCrop"][1]
    assert crop[2] == field_of_view[2] or crop[3] == field_of_view[3]  # as wide as it can be


async def test_zoom_pan_and_tilt_move_one_crop_and_survive_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch, "pi4-imx219")
    pusher = await camera.start_pusher(TARGET)
    picam = camera._camera
    plan = plan_change(camera.descriptors(), camera.values(), {"zoom": 2})
    await camera.apply(plan.values, restart=False)
    assert not plan.restart
    assert picam.state.crop == (820, 771, 1640, 922)  # the centre, half the 16:9 default crop
    plan = plan_change(camera.descriptors(), camera.values(), {"pan": 1, "tilt": -1})
    await camera.apply(plan.values, restart=False)
    assert picam.state.crop == (1640, 0, 1640, 922)  # top right of the sensor, still 2x
    await pusher.stop()
    await camera.start_pusher(TARGET)
    assert picam.state.crop == (1640, 0, 1640, 922)
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"zoom": 0.5})
    assert refused.value.code == ErrorCode.OUT_OF_RANGE


async def test_on_a_pi5_zoom_goes_through_scaler_crops_which_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch, "pi5-imx708")
    plan = plan_change(camera.descriptors(), camera.values(), {"zoom": 4})
    await camera.apply(plan.values, restart=True)  # set while stopped: applied at start
    await camera.start_pusher(TARGET)
    picam = camera._camera
    assert picam.state.crop == (1728, 972, 1152, 648)  # not picamera2's own full-view crop
    assert camera.values()["zoom"] == 4
    await camera.apply({"zoom": 2.0}, restart=False)
    assert picam.state.applied[-1] == {"ScalerCrops": [(1152, 648, 2304, 1296)]}


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_picture_has_the_configured_width_and_no_row_padding(
    monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    camera = await open_camera(monkeypatch, fixture, (1000, 562))  # 1000 is not 64-aligned
    pusher = await camera.start_pusher(TARGET)
    assert camera._camera.camera_config["main"]["stride"] == 1024
    frame = await pusher.latest_frame()
    assert (frame.width, frame.height, frame.pix_fmt) == (1000, 562, "yuv420p")
    data = await asyncio.to_thread(Path(frame.path).read_bytes)
    assert len(data) == 1000 * 562 * 3 // 2
    assert b"\xee" not in data  # the fake fills the padding with 0xEE
    assert not camera._camera.held_requests  # every request went back to the camera


async def test_a_picture_while_frames_stall_fails_in_time_and_leaves_nothing_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agent.camera.picamera2_backend.CAPTURE_TIMEOUT_S", 0.3)
    camera = await open_camera(monkeypatch)
    pusher = await camera.start_pusher(TARGET)
    picam = camera._camera
    picam.frames_stalled = True
    started = time.monotonic()
    with pytest.raises(CameraError, match="no frame within"):
        await pusher.latest_frame()
    assert time.monotonic() - started < 3
    picam.resume_frames()
    assert not picam.held_requests and not picam._jobs
    frame = await pusher.latest_frame()  # the camera is usable again
    assert frame.width == 1280
    runtime = Path(frame.path).parent
    await pusher.stop()  # the run ends with everything it owned
    assert not runtime.exists()
    with pytest.raises(CameraError, match="not streaming"):
        await pusher.latest_frame()


async def test_pi5_software_encoder_gets_the_configured_frame_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch, "pi5-imx708")
    camera = Picamera2Camera(0, 1280, 720, 15)
    await camera.start()
    await camera.start_pusher(TARGET)
    encoder = camera._camera.encoder
    assert isinstance(encoder, fake_picamera2.LibavH264Encoder)
    assert encoder.framerate == 15 and encoder.iperiod == 15
    assert camera.info()["encoder"] == "software (libav, PiSP)"
    assert by_name(camera)["width"].maximum == 3840  # type: ignore[attr-defined]


async def test_pi4_hardware_encoder_limits_the_size_to_1080p(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch, "pi4-imx477")
    descriptors = by_name(camera)
    assert descriptors["width"].maximum == 1920  # type: ignore[attr-defined]
    assert descriptors["height"].maximum == 1080  # type: ignore[attr-defined]
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"width": 3840, "height": 2160})
    assert refused.value.code == ErrorCode.OUT_OF_RANGE
    pusher = await camera.start_pusher(TARGET)
    assert isinstance(camera._camera.encoder, fake_picamera2.V4l2H264Encoder)
    await pusher.stop()


async def test_stream_configures_encodes_and_reports_a_broken_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch)
    await camera.apply({"hflip": True, "bitrate": 3000}, restart=True)
    pusher = await camera.start_pusher(TARGET)
    picam = camera._camera
    assert picam.camera_config["main"]["size"] == (1280, 720)
    assert picam.camera_config["transform"].hflip == 1
    assert picam.encoder.bitrate == 3_000_000 and picam.encoder.iperiod == 30
    assert (
        picam.encoder.output.output_filename
        == "-f rtsp -rtsp_transport tcp rtsp://agent:s3cret@127.0.0.1:8554/cam"
    )
    plan = plan_change(camera.descriptors(), camera.values(), {"brightness": 0.3, "Contrast": 2.0})
    await camera.apply(plan.values, restart=False)
    assert picam.state.applied[-1] == {"Brightness": 0.3, "Contrast": 2.0}
    waiter = asyncio.create_task(pusher.wait())
    await asyncio.sleep(0)
    picam.encoder.output.error_callback(BrokenPipeError(32, "Broken pipe"))
    assert await asyncio.wait_for(waiter, 5) == 1
    assert "Broken pipe" in pusher.stderr_text()
    await pusher.stop()
    assert picam.encoder is None and not picam.started


async def test_fixed_focus_sensor_has_no_focus_controls(monkeypatch: pytest.MonkeyPatch) -> None:
    camera = await open_camera(monkeypatch, "pi4-imx219")
    names = set(by_name(camera))
    assert "auto_focus" not in names and "focus_position" not in names
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"LensPosition": 2.0})
    assert refused.value.code == ErrorCode.UNKNOWN_CONTROL


async def test_descriptors_and_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    camera = await open_camera(monkeypatch)
    descriptors = {d.name: d for d in camera.descriptors()}
    assert descriptors["brightness"].aliases == ("Brightness",)
    assert [o.label for o in descriptors["auto_focus"].options] == ["Manual", "Auto", "Continuous"]
    values = camera.values()
    assert values["auto_exposure"] is True and values["auto_white_balance"] is True
    assert descriptors["exposure_time_us"].inactive_reason(values) == "turn auto_exposure off first"
    gains = descriptors["colour_gains"]
    # 0 would put white balance back to auto (libcamera): the manual range starts above it.
    assert (gains.type, gains.minimum, gains.maximum, gains.default) == (
        "pair",
        0.01,
        32.0,
        (1.0, 1.0),
    )
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), values, {"colour_gains": "1.5,2.0"})
    assert refused.value.code == ErrorCode.INACTIVE
    for bad, code in (([40, 1], ErrorCode.OUT_OF_RANGE), ([1.0], ErrorCode.INVALID_VALUE)):
        with pytest.raises(SettingsRejected) as refused:
            plan_change(camera.descriptors(), values, {"colour_gains": bad})
        assert refused.value.code == code, bad


async def test_missing_camera_or_library_is_a_clear_camera_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch)
    with pytest.raises(CameraError, match="no libcamera camera 3"):
        await Picamera2Camera(3, 640, 480, 30).start()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # as on x86: not importable
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        await Picamera2Camera(0, 640, 480, 30).start()


def test_usb_webcams_listed_by_libcamera_are_not_counted_as_pi_cameras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch)
    monkeypatch.setattr(fake_picamera2.Picamera2, "usb_cameras", [USB_WEBCAM_INFO])
    assert len(fake_picamera2.Picamera2.global_camera_info()) == 2
    assert libcamera_cameras() == 1
    monkeypatch.setattr(fake_picamera2.Picamera2.fixture, "global_camera_info", [])
    assert libcamera_cameras() == 0


@pytest.mark.parametrize(("width", "stride"), [(1280, 1280), (1000, 1024), (642, 704)])
def test_pack_yuv420_drops_row_padding(width: int, stride: int) -> None:
    height = 6
    luma = b"".join(bytes([y]) * width + b"\xee" * (stride - width) for y in range(height))
    chroma = (bytes([200]) * (width // 2) + b"\xee" * ((stride - width) // 2)) * height
    packed = pack_yuv420(luma + chroma, width, height, stride)
    assert len(packed) == width * height * 3 // 2
    assert packed[:width] == bytes([0]) * width and packed[width : 2 * width] == bytes([1]) * width
    assert b"\xee" not in packed


async def test_a_refused_encoder_leaves_the_camera_ready_for_the_next_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A size the Pi 4 encoder refuses, as a hand-written config can ask for (config allows 4K).
    camera = await open_camera(monkeypatch, "pi4-imx477", (3840, 2160))
    with pytest.raises(CameraError, match="cannot start the camera: VIDIOC_S_FMT"):
        await camera.start_pusher(TARGET)
    assert not camera._camera.started
    await camera.apply({"width": 1920, "height": 1080}, restart=True)
    await camera.start_pusher(TARGET)  # configures again: the camera was left stopped
    assert camera._camera.encoder is not None


def sizes(*paths: str) -> list[int | None]:
    return [Path(p).stat().st_size if Path(p).exists() else None for p in paths]


async def test_pictures_at_once_each_get_a_frame_file_of_their_own_removed_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = await open_camera(monkeypatch)
    pusher = await camera.start_pusher(TARGET)
    first, second = await asyncio.gather(pusher.latest_frame(), pusher.latest_frame())
    # One shared file would be rewritten under the other picture's encoder.
    assert first.path != second.path
    assert sizes(first.path, second.path) == [1280 * 720 * 3 // 2] * 2
    first.release()
    # A frame is megabytes of RAM: gone once its JPEG is made, the other one's kept meanwhile.
    assert sizes(first.path, second.path) == [None, 1280 * 720 * 3 // 2]
    second.release()
    await pusher.stop()


async def test_colour_gains_travel_over_mqtt_through_the_real_broker(
    monkeypatch: pytest.MonkeyPatch, broker: Broker, operator: Probe, tmp_path: Path
) -> None:
    """The agent in this process (the fake picamera2 is in-process), the real broker between it
    and the operator: the JSON pair form of colour_gains is applied and reported in state."""
    fake_picamera2.install(monkeypatch)
    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_config_toml(broker.pki_dir, broker.port, tmp_path))
    app = AgentApp(load_config(config_path), Picamera2Camera(0, 1280, 720, 30), [])
    running = asyncio.create_task(app.run())
    try:
        await asyncio.to_thread(
            operator.wait_for,
            lambda m: m.topic == "camera/availability" and m.payload == b"online",
            20,
        )
        change = {"id": "gains", "set": {"auto_white_balance": False, "colour_gains": [1.5, 2.0]}}
        await asyncio.to_thread(operator.publish, "camera/control/settings", json.dumps(change))
        answer = await asyncio.to_thread(operator.wait_event, 10, id="gains")
        assert answer["ok"] is True, answer
        assert answer["data"]["applied"]["colour_gains"] == [1.5, 2.0]
        await asyncio.to_thread(
            operator.wait_for,
            lambda m: (
                m.topic == "camera/state" and m.json()["controls"]["colour_gains"] == [1.5, 2.0]
            ),
            10,
        )
    finally:
        app.request_stop()
        await asyncio.wait_for(running, 30)


async def test_a_timelapse_lock_freezes_ae_and_awb_at_the_metadata_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    camera = await open_camera(monkeypatch)
    values = camera.values()
    freeze_and_restore = camera.auto_lock_plan()
    assert freeze_and_restore is not None
    freeze, restore = freeze_and_restore
    assert freeze == {
        "auto_exposure": False,
        "exposure_time_us": values["exposure_time_us"],
        "analogue_gain": values["analogue_gain"],
        "auto_white_balance": False,
        "colour_gains": values["colour_gains"],
    }
    assert restore == {"auto_exposure": True, "auto_white_balance": True}
    controls = CameraControls(camera, ControlStore(tmp_path / "controls.json"), None, lambda: None)
    await controls.change(freeze)
    assert camera.values()["auto_exposure"] is False
    assert camera.auto_lock_plan() is None
    await controls.change(restore)
    assert camera.values()["auto_exposure"] is True


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_motion_reads_the_lores_streams_luma_at_the_analysis_rate(
    monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    fake_picamera2.install(monkeypatch, fixture)
    camera = Picamera2Camera(0, 1000, 562, 30, motion_fps=5)
    await camera.start()
    pusher = await camera.start_pusher(TARGET)
    lores = camera._camera.camera_config["lores"]
    # picamera2's create_video_configuration and libcamera's stride: 320 wide, the picture's
    # aspect, even sides; rows of 64-byte multiples.
    assert (lores["format"], lores["size"], lores["stride"]) == ("YUV420", (320, 180), 320)
    frames = pusher.motion_frames()
    assert frames is not None
    frame = await asyncio.to_thread(frames.read_new)
    assert frame is not None and (frame.width, frame.height) == (320, 180)
    # The Y plane without the row padding: the fake's luma is (x + y) % 200 + 16.
    assert frame.pixels[:3] == bytes([16, 17, 18]) and frame.pixels[320] == 17
    assert len(frame.pixels) == 320 * 180 and b"\xee" not in frame.pixels
    assert await asyncio.to_thread(frames.read_new) is None  # within the same fifth of a second
    assert not camera._camera.held_requests
    await pusher.stop()
    assert await asyncio.to_thread(frames.read_new) is None  # no stream, no frame


async def test_a_lores_stream_larger_than_main_is_refused_as_picamera2_refuses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch, "pi4-imx477")
    picam = sys.modules["picamera2"].Picamera2(0)
    config = picam.create_video_configuration(main={"size": (320, 240)}, lores={"size": (640, 480)})
    with pytest.raises(RuntimeError, match="lores stream dimensions may not exceed main stream"):
        picam.configure(config)
    config = picam.create_video_configuration(lores={"size": (321, 181), "format": "RGB888"})
    assert config["lores"]["size"] == (320, 180)  # align_stream(optimal=False)
    with pytest.raises(RuntimeError, match="lores stream must be YUV"):
        picam.configure(config)

"""The picamera2 backend against a fake picamera2 that follows the real API."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from agent.camera.base import StreamTarget
from agent.camera.picamera2_backend import Picamera2Camera
from agent.camera.settings import plan_change
from agent.errors import CameraError, ErrorCode, SettingsRejected
from tests import fake_picamera2

TARGET = StreamTarget("rtsp://127.0.0.1:8554/cam", "agent", "s3cret")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_picamera2.install(monkeypatch)
    monkeypatch.setattr(fake_picamera2.Picamera2, "cameras", list(fake_picamera2.Picamera2.cameras))


async def open_camera(model: str = "imx708") -> Picamera2Camera:
    fake_picamera2.Picamera2.cameras[0] = {**fake_picamera2.Picamera2.cameras[0], "Model": model}
    camera = Picamera2Camera(0, 1280, 720, 30)
    await camera.start()
    return camera


async def test_descriptors_from_camera_controls(fake: None) -> None:
    camera = await open_camera()
    by_name = {d.name: d for d in camera.descriptors()}
    assert by_name["brightness"].aliases == ("Brightness",)
    assert (by_name["contrast"].minimum, by_name["contrast"].maximum) == (0.0, 32.0)
    assert by_name["exposure_time_us"].unit == "us"
    assert [o.label for o in by_name["auto_focus"].options] == ["Manual", "Auto", "Continuous"]
    values = camera.values()
    assert by_name["focus_position"].inactive_reason({**values, "auto_focus": 2}) == (
        "turn auto_focus off first (auto_focus 0)"
    )
    assert by_name["exposure_time_us"].inactive_reason(values) == "turn auto_exposure off first"
    assert by_name["hflip"].restarts_stream
    assert camera.info()["model"] == "imx708"
    await camera.stop()


async def test_fixed_focus_sensor_has_no_focus_controls(fake: None) -> None:
    camera = await open_camera("imx219")
    names = {d.name for d in camera.descriptors()}
    assert "auto_focus" not in names and "focus_position" not in names
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"LensPosition": 2.0})
    assert refused.value.code == ErrorCode.UNKNOWN_CONTROL


async def test_stream_configures_encodes_and_applies_controls_live(fake: None) -> None:
    camera = await open_camera()
    await camera.apply({"hflip": True, "bitrate": 3000}, restart=True)
    pusher = await camera.start_pusher(TARGET)
    picam = camera._camera
    assert picam.config["main"] == {"size": (1280, 720), "format": "YUV420"}
    assert picam.config["controls"]["FrameRate"] == 30
    assert picam.config["transform"].hflip == 1
    assert picam.encoder.bitrate == 3_000_000 and picam.encoder.iperiod == 30
    assert (
        picam.output.output_filename
        == "-f rtsp -rtsp_transport tcp rtsp://agent:s3cret@127.0.0.1:8554/cam"
    )
    plan = plan_change(camera.descriptors(), camera.values(), {"brightness": 0.3, "Contrast": 2.0})
    await camera.apply(plan.values, restart=False)
    assert picam.controls == {"Brightness": 0.3, "Contrast": 2.0}
    # A broken pipe in the output ends the pusher's wait, as a crashed ffmpeg would.
    waiter = asyncio.create_task(pusher.wait())
    await asyncio.sleep(0)
    picam.output.error_callback(BrokenPipeError(32, "Broken pipe"))
    assert await asyncio.wait_for(waiter, 5) == 1
    assert "Broken pipe" in pusher.stderr_text()
    await pusher.stop()
    await camera.pusher_stopped()
    assert picam.encoder is None and not picam.started


async def test_picture_is_a_request_of_the_main_stream(fake: None) -> None:
    camera = await open_camera()
    await camera.start_pusher(TARGET)
    frame = await camera.latest_frame()
    assert (frame.width, frame.height, frame.pix_fmt) == (1280, 720, "yuv420p")
    size = await asyncio.to_thread(lambda: Path(frame.path).stat().st_size)
    assert size == 1280 * 720 * 3 // 2


async def test_missing_camera_or_library_is_a_clear_camera_error(
    fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CameraError, match="no libcamera camera 3"):
        await Picamera2Camera(3, 640, 480, 30).start()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # as on x86: not importable
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        await Picamera2Camera(0, 640, 480, 30).start()


async def test_colour_gains_are_a_pair_judged_with_white_balance(fake: None) -> None:
    camera = await open_camera()
    await camera.start_pusher(TARGET)
    by_name = {d.name: d for d in camera.descriptors()}
    gains = by_name["colour_gains"]
    assert (gains.type, gains.minimum, gains.maximum, gains.default) == (
        "pair",
        0.0,
        32.0,
        (1.0, 1.0),
    )
    assert gains.to_json(camera.values())["inactive"] == "turn auto_white_balance off first"
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"colour_gains": "1.5,2.0"})
    assert refused.value.code == ErrorCode.INACTIVE
    plan = plan_change(
        camera.descriptors(),
        camera.values(),
        {"auto_white_balance": False, "ColourGains": [1.5, 2]},
    )
    await camera.apply(plan.values, restart=False)
    assert camera._camera.controls == {"AwbEnable": False, "ColourGains": (1.5, 2.0)}
    for bad, code in (
        ([40, 1], ErrorCode.OUT_OF_RANGE),
        ([1.0], ErrorCode.INVALID_VALUE),
        ("red", ErrorCode.INVALID_VALUE),
    ):
        with pytest.raises(SettingsRejected) as refused:
            plan_change(camera.descriptors(), camera.values(), {"colour_gains": bad})
        assert refused.value.code == code, bad


async def test_zoom_pan_and_tilt_are_one_scaler_crop(fake: None) -> None:
    camera = await open_camera()
    by_name = {d.name: d for d in camera.descriptors()}
    assert (by_name["zoom"].minimum, by_name["zoom"].maximum, by_name["zoom"].default) == (
        1.0, 16.0, 1.0,
    )  # fmt: skip
    assert (by_name["pan"].minimum, by_name["pan"].maximum) == (-1.0, 1.0)
    await camera.start_pusher(TARGET)
    picam = camera._camera
    # At start the whole field of view of the imx708 (4608x2592) is read.
    assert picam.config["controls"]["ScalerCrop"] == (0, 0, 4608, 2592)
    plan = plan_change(camera.descriptors(), camera.values(), {"zoom": 2})
    await camera.apply(plan.values, restart=False)
    assert not plan.restart
    assert picam.controls["ScalerCrop"] == (1152, 648, 2304, 1296)  # the centre half
    plan = plan_change(camera.descriptors(), camera.values(), {"pan": 1, "tilt": -1})
    await camera.apply(plan.values, restart=False)
    assert picam.controls["ScalerCrop"] == (2304, 0, 2304, 1296)  # top right, still 2x
    with pytest.raises(SettingsRejected) as refused:
        plan_change(camera.descriptors(), camera.values(), {"zoom": 0.5})
    assert refused.value.code == ErrorCode.OUT_OF_RANGE


async def test_a_sensor_without_scaler_crop_has_no_zoom(
    fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(fake_picamera2.IMX219_CONTROLS, "ScalerCrop")
    camera = await open_camera("imx219")
    names = {d.name for d in camera.descriptors()}
    assert not names & {"zoom", "pan", "tilt"}
    await camera.start_pusher(TARGET)
    assert "ScalerCrop" not in camera._camera.config["controls"]

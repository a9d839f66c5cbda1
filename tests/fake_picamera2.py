"""A fake of the picamera2 / libcamera Python API, as far as the agent uses it.

Names, signatures and failure modes follow picamera2 (Picamera2, camera_controls as
{name: (min, max, default)}, set_controls raising RuntimeError for a control the sensor does not
advertise, create_video_configuration, start_encoder, capture_request/make_array/release,
outputs with `error_callback`) and libcamera.Transform. Control ranges are those an imx708
(Camera Module 3) and an imx219 (Camera Module 2, fixed focus) advertise.
"""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

IMX708_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AeEnable": (False, True, None),
    "AnalogueGain": (1.1228070259094238, 16.0, None),
    "AwbEnable": (False, True, None),
    "AwbMode": (0, 7, 0),
    "Brightness": (-1.0, 1.0, 0.0),
    "ColourGains": (0.0, 32.0, None),
    "Contrast": (0.0, 32.0, 1.0),
    "ExposureTime": (26, 112015443, None),
    "ExposureValue": (-8.0, 8.0, 0.0),
    "FrameDurationLimits": (17849, 112075593, None),
    "NoiseReductionMode": (0, 4, 0),
    "Saturation": (0.0, 32.0, 1.0),
    "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), (576, 0, 3456, 2592)),
    "Sharpness": (0.0, 16.0, 1.0),
    "AfMode": (0, 2, 0),
    "AfTrigger": (0, 1, 0),
    "LensPosition": (0.0, 15.0, 1.0),
}
IMX219_CONTROLS = {k: v for k, v in IMX708_CONTROLS.items() if not k.startswith(("Af", "Lens"))}
SENSORS = {"imx708": IMX708_CONTROLS, "imx219": IMX219_CONTROLS}


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip, self.vflip, self.transpose = hflip, vflip, transpose


class H264Encoder:
    def __init__(self, bitrate: int | None = None, repeat: bool = False,
                 iperiod: int | None = None, framerate: float | None = None,
                 enable_sps_framerate: bool = False, qp: int | None = None,
                 profile: str | None = None) -> None:  # fmt: skip
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod


class FfmpegOutput:
    def __init__(self, output_filename: str, audio: bool = False, pts: Any = None) -> None:
        self.output_filename = output_filename
        self.error_callback: Any = None
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False


class _Array:
    """What make_array("main") returns for YUV420: (height * 3 / 2) rows of stride bytes."""

    def __init__(self, width: int, height: int) -> None:
        self.shape = (height * 3 // 2, width)

    def tobytes(self) -> bytes:
        rows, width = self.shape
        return bytes(range(256)) * (rows * width // 256) + bytes(rows * width % 256)


class _Request:
    def __init__(self, camera: Picamera2) -> None:
        self._camera = camera
        self.released = False

    def make_array(self, name: str) -> _Array:
        width, height = self._camera.config["main"]["size"]
        return _Array(width, height)

    def release(self) -> None:
        self.released = True


class Picamera2:
    cameras: ClassVar[list[dict[str, Any]]] = [
        {
            "Model": "imx708",
            "Location": 2,
            "Rotation": 180,
            "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a",
            "Num": 0,
        }
    ]

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(Picamera2.cameras)

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        info = Picamera2.cameras[camera_num]  # IndexError, as picamera2's camera manager raises
        self.camera_properties = {"Model": info["Model"], "PixelArraySize": (4608, 2592)}
        self.camera_controls = dict(SENSORS[info["Model"]])
        self.config: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}
        self.started = False
        self.encoder: H264Encoder | None = None
        self.output: FfmpegOutput | None = None

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = None, transform: Transform | None = None,
                                   colour_space: Any = None, buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None, display: str = "main",
                                   encode: str = "main", queue: bool = True, sensor: Any = None,
                                   use_case: str = "video") -> dict[str, Any]:  # fmt: skip
        return {
            "use_case": use_case,
            "main": dict(main or {}),
            "transform": transform,
            "controls": dict(controls or {}),
        }

    def _check(self, controls: dict[str, Any]) -> None:
        for name in controls:
            if name not in self.camera_controls and name != "FrameRate":
                raise RuntimeError(f"Control {name} is not advertised by libcamera")

    def configure(self, camera_config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self._check(camera_config["controls"])
        self.config = camera_config

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if not self.config:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._check(controls)
        self.controls.update(controls)

    def start_encoder(self, encoder: H264Encoder, output: FfmpegOutput, pts: Any = None,
                      quality: Any = None, name: str = "main") -> None:  # fmt: skip
        self.encoder, self.output = encoder, output
        output.start()

    def stop_encoder(self, encoders: Any = None) -> None:
        if self.output is not None:
            self.output.stop()
        self.encoder = None

    def capture_request(self, flush: Any = None, wait: Any = None) -> _Request:
        if not self.started:
            raise RuntimeError("Camera is not running")
        return _Request(self)

    def close(self) -> None:
        self.started = False


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import picamera2` and `import libcamera` find this fake."""
    modules: dict[str, dict[str, object]] = {
        "picamera2": {"Picamera2": Picamera2},
        "picamera2.encoders": {"H264Encoder": H264Encoder},
        "picamera2.outputs": {"FfmpegOutput": FfmpegOutput},
        "libcamera": {"Transform": Transform},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)

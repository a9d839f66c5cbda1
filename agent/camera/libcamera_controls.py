"""libcamera's controls as the picamera2 backend publishes and sends them (pure code).

`Picamera2.camera_controls` is {name: (min, max, default)} from libcamera's ControlInfoMap. Two
facts about it shape this module (libcamera v0.7.1, src/ipa/rpi/common/ipa_base.cpp and
src/libcamera/pipeline/rpi/common/pipeline_base.cpp):

- Before the first `configure()` the Raspberry Pi IPA reports placeholders: ScalerCrop is
  ((0, 0, 0, 0), (65535, 65535, 65535, 65535), (0, 0, 0, 0)), ExposureTime (1, 66666, 20000).
  The real limits of the chosen sensor mode appear only after configure, and change with it.
- After configure, ScalerCrop is (smallest crop, the mode's analogue crop = the field of view,
  default crop = the field of view bounded to the stream's aspect ratio and centred).

And libcamera's manual modes: a non-zero ExposureTime or AnalogueGain switches that part of
auto exposure to manual (picamera2 adds ExposureTimeMode/AnalogueGainMode for it), ColourGains
switches white balance to manual, LensPosition only acts in AfMode 0. So only controls active
under the current values are ever sent; sending a default ExposureTime would fix the exposure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.camera.base import (
    ActiveCondition,
    ControlDescriptor,
    ControlType,
    ControlValue,
    MenuOption,
    as_number,
)

# libcamera control -> (canonical name, type, unit)
PICAMERA2_CANONICAL: dict[str, tuple[str, ControlType, str | None]] = {
    "Brightness": ("brightness", ControlType.FLOAT, None),
    "Contrast": ("contrast", ControlType.FLOAT, None),
    "Saturation": ("saturation", ControlType.FLOAT, None),
    "Sharpness": ("sharpness", ControlType.FLOAT, None),
    "AeEnable": ("auto_exposure", ControlType.BOOL, None),
    "ExposureTime": ("exposure_time_us", ControlType.INT, "us"),
    "AnalogueGain": ("analogue_gain", ControlType.FLOAT, None),
    "ExposureValue": ("exposure_value", ControlType.FLOAT, "EV"),
    "AwbEnable": ("auto_white_balance", ControlType.BOOL, None),
    "ColourGains": ("colour_gains", ControlType.PAIR, "red, blue"),
    "AfMode": ("auto_focus", ControlType.MENU, None),
    "LensPosition": ("focus_position", ControlType.FLOAT, "dioptres"),
}
_NUMERIC = (ControlType.INT, ControlType.FLOAT, ControlType.PAIR)
AF_MODES = (MenuOption(0, "Manual"), MenuOption(1, "Auto"), MenuOption(2, "Continuous"))
PICAMERA2_DEPENDENCIES = {
    "exposure_time_us": ActiveCondition("auto_exposure", False, "turn auto_exposure off first"),
    "analogue_gain": ActiveCondition("auto_exposure", False, "turn auto_exposure off first"),
    "focus_position": ActiveCondition("auto_focus", 0, "turn auto_focus off first (auto_focus 0)"),
    "colour_gains": ActiveCondition(
        "auto_white_balance", False, "turn auto_white_balance off first"
    ),
}
# Where a sensor does not say (ColourGains has no default), the neutral value.
_FALLBACK_DEFAULTS: dict[ControlType, ControlValue] = {
    ControlType.BOOL: True,
    ControlType.PAIR: (1.0, 1.0),
}

MIN_COLOUR_GAIN = 0.01

# Digital zoom, pan and tilt are one libcamera control, the ScalerCrop rectangle. A crop smaller
# than 1/16 of the field of view only magnifies noise.
MAX_ZOOM = 16.0
CROP_CONTROLS = ("zoom", "pan", "tilt")
_PLACEHOLDER = 65535

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropGeometry:
    """ScalerCrop's limits after configure, in sensor pixels."""

    smallest: Rect
    field_of_view: Rect  # the mode's analogue crop: what pan and tilt move within
    default: Rect  # the field of view at the stream's aspect ratio: zoom 1

    @classmethod
    def from_controls(
        cls, camera_controls: Mapping[str, tuple[Any, Any, Any]]
    ) -> CropGeometry | None:
        """None before configure (placeholder limits) or where the sensor has no ScalerCrop."""
        if "ScalerCrop" not in camera_controls:
            return None
        smallest, largest, default = (
            tuple(int(v) for v in r) for r in camera_controls["ScalerCrop"]
        )
        if smallest[2] <= 0 or smallest[3] <= 0 or largest[2] >= _PLACEHOLDER:
            return None
        if not default or default[2] <= 0 or default[3] <= 0:
            default = largest
        return cls(smallest, largest, default)  # type: ignore[arg-type]

    @property
    def deepest_zoom(self) -> float:
        depth = min(self.default[2] / self.smallest[2], self.default[3] / self.smallest[3])
        return round(max(1.0, min(depth, MAX_ZOOM)), 2)

    def position(self, crop: Rect) -> dict[str, ControlValue]:
        """zoom, pan and tilt that give ``crop`` (`crop`'s inverse); pan or tilt is left out
        where the crop fills that dimension, since any value gives the same crop there."""
        x0, y0, full_width, full_height = self.field_of_view
        x, y, width, height = crop
        spare_x, spare_y = full_width - width, full_height - height
        found: dict[str, ControlValue] = {"zoom": round(self.default[2] / width, 3)}
        if spare_x > 0:
            found["pan"] = round(2 * (x - x0) / spare_x - 1, 3)
        if spare_y > 0:
            found["tilt"] = round(2 * (y - y0) / spare_y - 1, 3)
        return found

    def crop(self, zoom: float, pan: float, tilt: float) -> Rect:
        """The rectangle for a zoom factor and a position (-1 = left/top edge, 0 = centre,
        1 = right/bottom edge) within the field of view, at the stream's aspect ratio."""
        x0, y0, full_width, full_height = self.field_of_view
        width = min(full_width, round(self.default[2] / zoom))
        height = min(full_height, round(self.default[3] / zoom))
        x = x0 + round((full_width - width) * (pan + 1) / 2)
        y = y0 + round((full_height - height) * (tilt + 1) / 2)
        return (x, y, width, height)


def crop_descriptors(geometry: CropGeometry | None) -> list[ControlDescriptor]:
    """zoom, pan and tilt, once the sensor's crop limits are known."""
    if geometry is None:
        return []
    zoom = ControlDescriptor(
        "zoom", ControlType.FLOAT, 1.0, "digital zoom: the sensor area read (libcamera ScalerCrop)",
        minimum=1.0, maximum=geometry.deepest_zoom, unit="x",
    )  # fmt: skip
    moves = [
        ControlDescriptor(
            name,
            ControlType.FLOAT,
            0.0,
            f"{direction} of the crop within the field of view, -1 to 1 (ScalerCrop)",
            minimum=-1.0,
            maximum=1.0,
        )
        for name, direction in (("pan", "left-right position"), ("tilt", "top-bottom position"))
    ]
    return [zoom, *moves]


def picamera2_descriptors(
    camera_controls: Mapping[str, tuple[Any, Any, Any]], fps: float | None = None
) -> list[ControlDescriptor]:
    """``fps``: the stream's frame rate. An exposure cannot outlast a frame: libcamera clamps
    ExposureTime to the frame duration, so the published maximum is the shorter of the two."""
    descriptors = []
    for native, (canonical, kind, unit) in PICAMERA2_CANONICAL.items():
        if native not in camera_controls:
            continue  # this sensor lacks it (a fixed-focus lens has no AfMode)
        low, high, default = camera_controls[native]
        if native == "ExposureTime" and fps and high is not None:
            high = min(high, int(1_000_000 / fps))
        if native == "ColourGains" and not low:
            # A gain of 0 puts white balance back to auto (IpaBase::applyControls), which a
            # manual setting must not do in passing: the smallest manual gain is above it.
            low = MIN_COLOUR_GAIN
        if default is None:
            default = _FALLBACK_DEFAULTS.get(kind, low)
        elif kind is ControlType.BOOL:
            default = bool(default)
        elif kind is ControlType.PAIR:
            default = (float(default[0]), float(default[1]))
        elif isinstance(default, int | float) and low is not None and high is not None:
            # libcamera keeps a fixed default that a mode's range may exclude (imx708's
            # AnalogueGain default 1.0 below its 1.12 minimum): show the value it clamps to.
            default = min(max(default, low), high)
        descriptors.append(
            ControlDescriptor(
                name=canonical,
                type=kind,
                default=default,
                description=f"libcamera {native}",
                minimum=low if kind in _NUMERIC else None,
                maximum=high if kind in _NUMERIC else None,
                unit=unit,
                options=AF_MODES if kind is ControlType.MENU else (),
                active_if=PICAMERA2_DEPENDENCIES.get(canonical),
                aliases=(native,),
            )
        )
    return [*descriptors, *crop_descriptors(CropGeometry.from_controls(camera_controls))]


def native_controls(
    descriptors: Sequence[ControlDescriptor],
    values: Mapping[str, ControlValue],
    names: Sequence[str],
    camera_controls: Mapping[str, tuple[Any, Any, Any]],
) -> dict[str, Any]:
    """The libcamera controls for ``names`` under ``values``, leaving out every control that is
    inactive there (a manual exposure while auto exposure is on would switch it off)."""
    by_name = {d.name: d for d in descriptors}
    native: dict[str, Any] = {}
    for name in names:
        descriptor = by_name.get(name)
        if descriptor is None or not descriptor.aliases:
            continue
        if descriptor.inactive_reason(values) is not None:
            continue
        value = values[name]
        native[descriptor.aliases[0]] = tuple(value) if isinstance(value, tuple) else value
    geometry = CropGeometry.from_controls(camera_controls)
    if geometry is not None and any(n in names for n in CROP_CONTROLS):
        rect = geometry.crop(
            *(as_number(values.get(n, 1.0 if n == "zoom" else 0.0)) for n in CROP_CONTROLS)
        )
        # On a Pi 5 picamera2 sets the per-stream rpi::ScalerCrops at every configure, and the
        # pipeline prefers it over ScalerCrop: a ScalerCrop alone would be ignored.
        if "ScalerCrops" in camera_controls:
            native["ScalerCrops"] = [rect]
        else:
            native["ScalerCrop"] = rect
    return native


def reported_values(
    metadata: Mapping[str, Any],
    descriptors: Sequence[ControlDescriptor],
    camera_controls: Mapping[str, tuple[Any, Any, Any]],
) -> dict[str, ControlValue]:
    """What a frame's metadata says the camera did, under canonical names.

    The Raspberry Pi IPA reports Brightness, Contrast, Saturation, Sharpness, ExposureValue,
    ExposureTime, AnalogueGain, ExposureTimeMode, AwbEnable, ColourGains, LensPosition and the
    ScalerCrop in effect (IpaBase::applyControls, PipelineBase; libcamera v0.7.1); zoom, pan and
    tilt are read back from the crop.
    """
    by_native = {d.aliases[0]: d for d in descriptors if d.aliases}
    reported: dict[str, ControlValue] = {}
    for native, value in metadata.items():
        descriptor = by_native.get(native)
        if descriptor is None:
            continue
        if descriptor.type is ControlType.PAIR:
            reported[descriptor.name] = (float(value[0]), float(value[1]))
        elif descriptor.type is ControlType.BOOL:
            reported[descriptor.name] = bool(value)
        elif isinstance(value, int | float):
            reported[descriptor.name] = value
    if "ExposureTimeMode" in metadata:
        reported["auto_exposure"] = metadata["ExposureTimeMode"] == 0
    geometry = CropGeometry.from_controls(camera_controls)
    if geometry is not None and "ScalerCrop" in metadata:
        reported.update(geometry.position(tuple(int(v) for v in metadata["ScalerCrop"])))  # type: ignore[arg-type]
    return reported


def pack_yuv420(data: bytes, width: int, height: int, stride: int) -> bytes:
    """Planar YUV 4:2:0 without row padding, from a buffer whose rows are ``stride`` bytes.

    picamera2's make_array("main") for YUV420 is (height * 3 / 2) rows of the stride, padding
    included (picamera2/request.py, _make_array_shared): the Y plane's rows are ``stride``
    bytes, the U and V planes' rows ``stride / 2``.
    """
    if stride == width:
        return data[: width * height * 3 // 2]
    view = memoryview(data)
    chroma_stride, chroma_width, chroma_rows = stride // 2, width // 2, height // 2
    parts = [view[row * stride : row * stride + width] for row in range(height)]
    for plane in range(2):
        base = height * stride + plane * chroma_rows * chroma_stride
        parts += [
            view[base + row * chroma_stride : base + row * chroma_stride + chroma_width]
            for row in range(chroma_rows)
        ]
    return b"".join(parts)

"""Motion in a small grey frame: what changed against a running-average background.

In the spirit of Frigate's improved motion detector (frigate/motion/improved_motion.py): the
frame is shrunk and blurred, compared with a slowly learnt background, and the pixels that
differ by more than a threshold inside the region of interest are the motion; a change over
most of the frame at once (the lights, an exposure jump, a restart) is not motion but a new
scene, so the background is learnt anew. NumPy only (no OpenCV in the image); a frame of
320x180 costs well under a millisecond.

Pure: frames in, analyses out (table-tested, no I/O, no clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Polygon = Sequence[
    tuple[float, float]
]  # vertices, normalised: (0, 0) top left, (1, 1) bottom right
Grey = npt.NDArray[np.uint8]

# The analysed frame is shrunk to at most this many rows (Frigate works at ~100): enough for a
# person at the far side of a yard, few enough to cost nothing.
ANALYSIS_ROWS = 90
# A changed pixel counts only with most of its 3x3 neighbourhood changed: single-pixel sensor
# noise never adds up to an area.
NEIGHBOURS = 5 / 9
# After a new scene (a start, a restart, the lights) the background is the per-pixel median of
# the frames of this long, and no motion is reported meanwhile: what moved in the first frame
# leaves no ghost behind (a moving thing covers a pixel in few of them; Frigate's detector
# calibrates for the same reason), and an exposure still settling is no motion.
CALIBRATION_S = 2.0


@dataclass(frozen=True)
class Zone:
    """A named region motion is looked for in."""

    name: str
    polygon: Polygon


@dataclass(frozen=True)
class DetectorSettings:
    threshold: int = 25  # grey levels (0-255) a pixel must differ from the background by
    min_area: float = 0.003  # share of the watched region that must change to be motion
    recalibrate_area: float = 0.6  # a change over this share of it at once is a new scene
    background_s: float = 10.0  # how long a still change takes to become background
    fps: float = 5.0  # analysis rate, for the background's learning rate
    mask: tuple[Polygon, ...] = ()  # never watched (a clock, a road, a neighbour's window)
    zones: tuple[Zone, ...] = ()  # when given, only these are watched


@dataclass(frozen=True)
class Box:
    """A bounding box, normalised like the polygons."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Analysis:
    moving: bool
    area: float  # share of the watched region that changed
    box: Box | None
    zone: str | None  # the zone holding most of the change; None without zones
    recalibrated: bool = False


def polygon_mask(polygon: Polygon, width: int, height: int) -> npt.NDArray[np.bool_]:
    """Pixels whose centres lie inside `polygon` (even-odd rule)."""
    ys, xs = np.mgrid[0:height, 0:width]
    px, py = (xs + 0.5) / width, (ys + 0.5) / height
    inside = np.zeros((height, width), dtype=bool)
    points = list(polygon)
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        if y1 == y2:
            continue  # a horizontal edge crosses no horizontal ray
        crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def shrink(frame: Grey, rows: int = ANALYSIS_ROWS) -> npt.NDArray[np.float32]:
    """Block-average the frame down to at most `rows` rows (whole factors, so no resampling
    artefacts), as float32."""
    factor = max(1, -(-frame.shape[0] // rows))
    height, width = frame.shape[0] // factor, frame.shape[1] // factor
    cropped = frame[: height * factor, : width * factor].astype(np.float32)
    shrunk: npt.NDArray[np.float32] = cropped.reshape(height, factor, width, factor).mean(
        axis=(1, 3), dtype=np.float32
    )
    return shrunk


def box_blur(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """3x3 mean, edges repeated."""
    padded = np.pad(image, 1, mode="edge")
    total = np.zeros_like(image)
    height, width = image.shape
    for dy in range(3):
        for dx in range(3):
            total += padded[dy : dy + height, dx : dx + width]
    return total / 9


class MotionDetector:
    """One camera's background and regions; `analyse` one frame after the other."""

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._background: npt.NDArray[np.float32] | None = None
        self._shape: tuple[int, int] | None = None
        self._watched: npt.NDArray[np.bool_] = np.zeros((0, 0), dtype=bool)
        self._zones: list[tuple[str, npt.NDArray[np.bool_]]] = []
        self._alpha = min(1.0, 1.0 / max(settings.background_s * settings.fps, 1.0))
        self._calibration_frames = max(1, round(CALIBRATION_S * settings.fps))
        self._calibration: list[npt.NDArray[np.float32]] = []  # frames seen while calibrating
        self._calibrating = False

    @property
    def settings(self) -> DetectorSettings:
        return self._settings

    @property
    def calibrating(self) -> bool:
        """Learning a new scene: no motion is reported until it has."""
        return self._calibrating or self._background is None

    def reset(self) -> None:
        """Forget the background (a new pipeline, another size): the next frame is the scene."""
        self._background = None

    def _regions(self, height: int, width: int) -> None:
        zones = [(z.name, polygon_mask(z.polygon, width, height)) for z in self._settings.zones]
        watched = np.ones((height, width), dtype=bool)
        if zones:
            watched = np.logical_or.reduce([region for _, region in zones])
        for polygon in self._settings.mask:
            watched &= ~polygon_mask(polygon, width, height)
        self._shape, self._watched = (height, width), watched
        self._zones = [(name, region & watched) for name, region in zones]

    def _calibrate(
        self, image: npt.NDArray[np.float32], restart: bool = False, area: float = 0.0
    ) -> Analysis:
        if restart:
            self._calibration, self._calibrating = [], True
        self._calibration.append(image)
        self._background = image
        if len(self._calibration) >= self._calibration_frames:
            self._background = np.median(np.stack(self._calibration), axis=0).astype(np.float32)
            self._calibration, self._calibrating = [], False
        return Analysis(False, area, None, None, recalibrated=True)

    def analyse(self, frame: Grey) -> Analysis:
        image = box_blur(shrink(frame))
        height, width = image.shape
        if self._shape != (height, width):
            self._regions(height, width)
            self._background = None
        watched_pixels = int(self._watched.sum())
        if self._background is None or watched_pixels == 0:
            return self._calibrate(image, restart=True)
        if self._calibrating:
            return self._calibrate(image)
        changed = np.abs(image - self._background) > self._settings.threshold
        changed &= self._watched
        # Keep pixels with most of their neighbourhood changed (drops isolated noise).
        changed &= box_blur(changed.astype(np.float32)) >= NEIGHBOURS - 1e-6
        area = float(changed.sum()) / watched_pixels
        if area >= self._settings.recalibrate_area:
            return self._calibrate(image, restart=True, area=area)
        self._background += self._alpha * (image - self._background)
        if area < self._settings.min_area:
            return Analysis(False, area, None, None)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = Box(
            x=round(cols[0] / width, 4),
            y=round(rows[0] / height, 4),
            w=round((cols[-1] + 1 - cols[0]) / width, 4),
            h=round((rows[-1] + 1 - rows[0]) / height, 4),
        )
        zone = None
        if self._zones:
            zone = max(self._zones, key=lambda item: int((changed & item[1]).sum()))[0]
        return Analysis(True, round(area, 5), box, zone)

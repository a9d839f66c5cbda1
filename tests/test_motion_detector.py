"""The motion detector and tracker on synthetic grey frames (pure: no ffmpeg, no clock).

The scenes are made here: a fixed scene with per-frame sensor-like noise (Gaussian, sigma 6
grey levels: what ffmpeg's `noise=alls=12:allf=t` adds, measured as a mean absolute frame
difference of 7.7), a box that moves, the lights switched on.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from agent.motion.detector import (
    Analysis,
    Box,
    DetectorSettings,
    MotionDetector,
    Zone,
    polygon_mask,
    shrink,
)
from agent.motion.tracker import MotionEnded, MotionStarted, MotionTracker

WIDTH, HEIGHT = 320, 180
RNG = np.random.default_rng(7)
SCENE = np.tile(np.linspace(40, 200, WIDTH, dtype=np.float32), (HEIGHT, 1))
SCENE[60:120, 100:140] = 90  # something still in the scene


def frame(
    box_at: tuple[int, int] | None = None, gain: float = 1.0, noise: float = 6.0
) -> npt.NDArray[np.uint8]:
    image = SCENE * gain + RNG.normal(0, noise, SCENE.shape)
    if box_at is not None:
        x, y = box_at
        image[y : y + 24, x : x + 24] = 250
    return np.clip(image, 0, 255).astype(np.uint8)


def settled(settings: DetectorSettings | None = None) -> MotionDetector:
    """Past its calibration (2 s at 5 fps)."""
    detector = MotionDetector(settings or DetectorSettings())
    for _ in range(12):
        detector.analyse(frame())
    return detector


def test_noise_alone_is_never_motion() -> None:
    detector = MotionDetector(DetectorSettings())
    analyses = [detector.analyse(frame()) for _ in range(500)]  # 100 s at 5 fps
    assert not any(a.moving for a in analyses)
    assert max(a.area for a in analyses) < DetectorSettings().min_area


def test_a_moving_box_is_motion_where_it_is() -> None:
    detector = settled()
    analyses = [detector.analyse(frame(box_at=(20 + 12 * i, 100))) for i in range(10)]
    assert all(a.moving for a in analyses)
    box = analyses[5].box
    assert box is not None
    # The box is at x 80-104, y 100-124 of 320x180; the analysis works at half size, blurred.
    assert box.x == pytest.approx(80 / WIDTH, abs=0.03) and box.y == pytest.approx(
        100 / HEIGHT, abs=0.03
    )
    assert box.w == pytest.approx(24 / WIDTH, abs=0.03) and box.h == pytest.approx(
        24 / HEIGHT, abs=0.04
    )
    assert analyses[5].zone is None
    # Gone: motion ends with it.
    assert not any(detector.analyse(frame()).moving for _ in range(3))


def test_the_lights_switched_on_recalibrate_instead_of_firing() -> None:
    detector = settled()
    jumped = detector.analyse(frame(gain=1.6))
    assert jumped == Analysis(False, jumped.area, None, None, recalibrated=True)
    assert jumped.area >= DetectorSettings().recalibrate_area
    assert not any(detector.analyse(frame(gain=1.6)).moving for _ in range(20))


def test_motion_inside_the_mask_is_not_seen_and_zones_name_where_it_was() -> None:
    right_half = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
    detector = settled(DetectorSettings(mask=(right_half,)))
    assert not any(detector.analyse(frame(box_at=(200 + 8 * i, 50))).moving for i in range(10))
    assert any(detector.analyse(frame(box_at=(20 + 8 * i, 50))).moving for i in range(10))

    zones = (Zone("left", [(0, 0), (0.5, 0), (0.5, 1), (0, 1)]), Zone("right", right_half))
    detector = settled(DetectorSettings(zones=zones))
    seen = [detector.analyse(frame(box_at=(200 + 8 * i, 50))) for i in range(5)]
    assert all(a.moving and a.zone == "right" for a in seen)

    only_left = settled(DetectorSettings(zones=zones[:1]))
    assert not any(only_left.analyse(frame(box_at=(200 + 8 * i, 50))).moving for i in range(5))


def test_a_thing_left_behind_becomes_background() -> None:
    detector = settled(DetectorSettings(background_s=2.0, fps=5.0))
    moving = [detector.analyse(frame(box_at=(60, 60))).moving for _ in range(60)]
    assert moving[0] and not moving[-1]  # a parked car is motion for a while, then scene


def test_polygon_mask_and_shrink() -> None:
    triangle = polygon_mask([(0, 0), (1, 0), (0, 1)], 4, 4)
    assert triangle.tolist() == [
        [True, True, True, False],
        [True, True, False, False],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert shrink(np.full((180, 320), 7, np.uint8)).shape == (90, 160)
    assert shrink(np.full((240, 320), 7, np.uint8)).shape == (80, 106)
    assert shrink(np.full((60, 80), 7, np.uint8)).shape == (60, 80)


BOX = Box(0.1, 0.1, 0.1, 0.1)
MOVING = Analysis(True, 0.02, BOX, None)
STILL = Analysis(False, 0.0, None, None)


def test_tracker_turns_on_at_the_first_moving_frame_and_off_after_the_delay() -> None:
    tracker = MotionTracker(off_delay_s=10)
    assert tracker.update(STILL, 100.0) == []
    assert tracker.update(MOVING, 100.2) == [MotionStarted(100.2, 0.02, BOX, None)]
    assert tracker.update(Analysis(True, 0.05, BOX, None), 103.0) == []  # still the same event
    assert tracker.update(STILL, 112.8) == []
    assert tracker.update(STILL, 113.0) == [MotionEnded(100.2, 103.0, 0.05)]
    assert MotionEnded(100.2, 103.0, 0.05).duration_s == 2.8
    assert tracker.active is None


def test_tracker_ends_on_idle_and_on_demand() -> None:
    tracker = MotionTracker(off_delay_s=5)
    tracker.update(MOVING, 10.0)
    assert tracker.idle(14.0) == []
    assert tracker.idle(15.0) == [MotionEnded(10.0, 10.0, 0.02)]
    tracker.update(MOVING, 20.0)
    assert tracker.end() == [MotionEnded(20.0, 20.0, 0.02)]
    assert tracker.end() == []


def test_what_moved_at_the_start_leaves_no_ghost() -> None:
    # The box is in the very first frame (a pipeline restarted while something moved), then
    # moves on and goes: once it has gone, nothing is left "moving" where it first was.
    detector = MotionDetector(DetectorSettings())
    seen = [detector.analyse(frame(box_at=(20 + 10 * i, 100))) for i in range(20)]
    assert not any(a.moving for a in seen[:10])  # calibrating
    assert all(a.moving for a in seen[11:])
    after = [detector.analyse(frame()) for _ in range(5)]
    assert not any(a.moving for a in after[1:]), [a.area for a in after]

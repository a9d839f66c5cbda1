"""From analysed frames to motion events: ON at the first moving frame, OFF once nothing has
moved for `off_delay_s` (Motion's `event_gap`, Frigate's `mqtt_off_delay`).

Pure: times are the frames' capture times, handed in (table-tested, no clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: NumPy comes with the detector, at the first frame
    from agent.motion.detector import Analysis, Box


@dataclass(frozen=True)
class MotionStarted:
    at: float  # capture time of the first moving frame (time.time() scale)
    area: float
    box: Box
    zone: str | None


@dataclass(frozen=True)
class MotionEnded:
    started_at: float
    last_motion_at: float  # capture time of the last moving frame
    peak_area: float

    @property
    def duration_s(self) -> float:
        return round(self.last_motion_at - self.started_at, 3)


MotionEvent = MotionStarted | MotionEnded


class MotionTracker:
    def __init__(self, off_delay_s: float) -> None:
        self.off_delay_s = off_delay_s
        self._started: MotionStarted | None = None
        self._last_motion_at = 0.0
        self._peak = 0.0

    @property
    def active(self) -> MotionStarted | None:
        """The event under way, if any."""
        return self._started

    @property
    def last_motion_at(self) -> float:
        return self._last_motion_at

    def update(self, analysis: Analysis, at: float) -> list[MotionEvent]:
        """One analysed frame captured at `at`."""
        events: list[MotionEvent] = []
        if self._started is not None and at - self._last_motion_at >= self.off_delay_s:
            events += self.end()
        if analysis.moving and analysis.box is not None:
            if self._started is None:
                self._started = MotionStarted(at, analysis.area, analysis.box, analysis.zone)
                self._peak = 0.0
                events.append(self._started)
            self._last_motion_at = at
            self._peak = max(self._peak, analysis.area)
        return events

    def idle(self, now: float) -> list[MotionEvent]:
        """No frame to analyse (the stream is down, or motion was switched off): the event
        ends once `off_delay_s` has passed since the last moving frame."""
        if self._started is not None and now - self._last_motion_at >= self.off_delay_s:
            return self.end()
        return []

    def end(self) -> list[MotionEvent]:
        """End the event under way now (detection switched off, the agent stopping)."""
        if self._started is None:
            return []
        ended = MotionEnded(self._started.at, self._last_motion_at, self._peak)
        self._started = None
        return [ended]

"""Motion detection in the running agent: reads the pipeline's grey frames at the analysis rate,
analyses them off the event loop, and announces what the tracker decides.

`BASE/motion` (retained) is `ON` or `OFF`; `motion.started` and `motion.ended` go out as events
carrying the capture time of the frames they are about, not the time they were sent, so they
say the truth after the broker was away. A start (or a restart after a kill) publishes `OFF`
first: a retained `ON` left by a run that died must not stay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.atomicfile import write_atomic
from agent.config import MotionRegions, MotionSettings
from agent.errors import CommandError, ErrorCode

if TYPE_CHECKING:  # NumPy comes with the first frame: an agent that streams nothing is lighter
    from agent.motion.detector import Analysis, MotionDetector, Polygon
from agent.motion.tracker import MotionEnded, MotionEvent, MotionStarted, MotionTracker
from agent.stream.motion_frames import GreyFrame, MotionFrameSource

log = logging.getLogger(__name__)

# Announces an event: name, message, data.
MotionReport = Callable[[str, str, dict[str, Any]], None]


def iso_time(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class MotionHooks:
    """What the service reports to (the app's status and broker link)."""

    frames: Callable[[], MotionFrameSource | None]  # the running pipeline's grey frames
    report: MotionReport
    retain: Callable[[bytes], Awaitable[None]]  # BASE/motion
    changed: Callable[[], None]  # BASE/state has `motion`
    # Takes a picture (motion.snapshot): {"job": id}, or {"error": why not}.
    snapshot: Callable[[], Awaitable[dict[str, Any]]] | None = None
    # Clips (motion.record): start a recording reaching back `preroll` seconds ({"job": id} or
    # {"error": why not}), stop one, and what a clip job is now ({"state", "path", "url"}).
    record_start: Callable[[float], Awaitable[dict[str, Any]]] | None = None
    record_stop: Callable[[str], None] | None = None
    clip_status: Callable[[str], dict[str, Any]] | None = None


@dataclass
class Clip:
    """The recording a motion event is being kept in."""

    job: str
    start: float  # time.time() the clip reaches back to
    stop_at: float  # the last moving frame + postroll_s (moves on while motion goes on)


class MotionService:
    def __init__(
        self,
        settings: MotionSettings,
        camera_mask: Callable[[], Sequence[Polygon]],
        hooks: MotionHooks,
        regions_file: Path | None = None,
    ) -> None:
        self._regions_file = regions_file
        self._settings = settings.model_copy(update=self._saved_regions())
        self._camera_mask = camera_mask
        self._hooks = hooks
        self.enabled = settings.enabled
        self._tracker = MotionTracker(settings.off_delay_s)
        self._detector: MotionDetector | None = None  # made with the first frame it looks at
        self._source: MotionFrameSource | None = None
        self._state = "OFF"
        self._since = time.time()
        self._last: dict[str, Any] | None = None  # the last event's data
        self._analysed = 0
        self._was_calibrating = False
        self._clip: Clip | None = None
        self._clip_of_event: str | None = None  # the clip the event under way is in

    def _saved_regions(self) -> dict[str, Any]:
        """The mask and zones last set over MQTT (they win over the config file's)."""
        if self._regions_file is None:
            return {}
        try:
            saved = MotionRegions.model_validate_json(self._regions_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable %s: %s", self._regions_file, err)
            return {}
        return {"mask": saved.mask, "zones": saved.zones}

    def regions(self) -> dict[str, Any]:
        s = self._settings
        return MotionRegions(mask=s.mask, zones=s.zones).model_dump()

    async def set_regions(self, params: dict[str, Any]) -> dict[str, Any]:
        """The `motion` action: new mask and/or zones, live (the detector learns the scene
        anew) and kept across restarts."""
        regions = MotionRegions.model_validate({**self.regions(), **params})
        if self._regions_file is not None:
            data = regions.model_dump_json(indent=1).encode()
            try:
                await asyncio.to_thread(write_atomic, self._regions_file, data)
            except OSError as err:
                raise CommandError(
                    ErrorCode.IO_ERROR, f"cannot save the motion regions: {err.strerror}"
                ) from err
        self._settings = self._settings.model_copy(
            update={"mask": regions.mask, "zones": regions.zones}
        )
        self._detector = None  # the next frame starts a detector with them
        self._hooks.changed()
        return regions.model_dump()

    def _new_detector(self) -> MotionDetector:
        from agent.motion.detector import DetectorSettings, MotionDetector, Zone  # noqa: PLC0415

        s = self._settings
        # The camera's own overlays (the test pattern's clock) are never the scene.
        mask = (*self._camera_mask(), *(tuple(p) for p in s.mask))
        zones = tuple(Zone(z.name, tuple(z.polygon)) for z in s.zones)
        return MotionDetector(
            DetectorSettings(
                threshold=s.threshold, min_area=s.min_area, fps=s.fps, mask=mask, zones=zones
            )
        )

    def snapshot(self) -> dict[str, Any]:
        """`motion` in BASE/state."""
        return {
            "enabled": self.enabled,
            "state": self._state,
            "since": iso_time(self._since),
            "last_event": self._last,
            "fps": self._settings.fps,
            "calibrating": self.enabled and (self._detector is None or self._detector.calibrating),
            **self.regions(),
        }

    async def set_enabled(self, enabled: bool) -> None:
        """The `motion` control: off ends an event under way (and says so)."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if not enabled:
            await self._announce(self._tracker.end())
        self._hooks.changed()

    async def run(self) -> None:
        await self._hooks.retain(b"OFF")
        # Four looks a frame interval: a new frame waits a quarter of one at most (a look is a
        # stat when there is nothing new).
        period = 1.0 / (4 * self._settings.fps)
        while True:
            events = await self._step()
            await self._keep_clip(events)
            await self._announce(events)
            await asyncio.sleep(period)

    async def stop(self) -> None:
        """A clean stop ends an event under way, so nothing is left `ON`; its clip ends with
        the agent's recordings (they are finished on the way out)."""
        await self._announce(self._tracker.end())

    async def _keep_clip(self, events: list[MotionEvent]) -> None:
        """motion.record: one clip from preroll_s before the first moving frame to postroll_s
        after the last, extended while motion goes on, up to max_clip_s."""
        s, hooks = self._settings, self._hooks
        if not s.record or hooks.record_start is None or hooks.record_stop is None:
            return
        now = time.time()
        clip = self._clip
        if clip is not None:
            if self._tracker.active is not None:
                clip.stop_at = max(clip.stop_at, self._tracker.last_motion_at + s.postroll_s)
            if now >= clip.stop_at or now - clip.start >= s.max_clip_s:
                hooks.record_stop(clip.job)
                self._clip = clip = None
        started = next((e for e in events if isinstance(e, MotionStarted)), None)
        moving_recently = (
            self._tracker.active is not None and now - self._tracker.last_motion_at < s.postroll_s
        )
        if clip is None and (started is not None or moving_recently):
            first = started.at if started is not None else self._tracker.last_motion_at
            reach_back = max(0.0, now - first) + s.preroll_s
            outcome = await hooks.record_start(reach_back)
            if "job" in outcome:
                self._clip = Clip(outcome["job"], now - reach_back, first + s.postroll_s)
                self._clip_of_event = outcome["job"]
            elif started is not None:
                log.warning("no motion clip: %s", outcome.get("error"))
                self._clip_of_event = None
        elif started is not None and clip is not None:
            self._clip_of_event = clip.job  # a new event inside the clip's postroll: the same

    def _clip_report(self) -> dict[str, Any] | None:
        job = self._clip_of_event
        if job is None or not self._settings.record or self._hooks.clip_status is None:
            return None
        return {"job": job, **self._hooks.clip_status(job)}

    async def _step(self) -> list[MotionEvent]:
        source = self._hooks.frames() if self.enabled else None
        if source is not self._source:
            # A new run of the pipeline (or none): its size, scene or overlays may differ.
            self._source = source
            self._detector = None
        if source is None or not source.has_new():
            return self._tracker.idle(time.time())
        analysed = await asyncio.to_thread(self._read_and_analyse, source)
        if analysed is None:
            return self._tracker.idle(time.time())
        frame, analysis = analysed
        self._analysed += 1
        if analysis.recalibrated != self._was_calibrating:
            self._was_calibrating = analysis.recalibrated
            self._hooks.changed()  # BASE/state says whether it is learning the scene
        return self._tracker.update(analysis, frame.captured_at)

    def _read_and_analyse(self, source: MotionFrameSource) -> tuple[GreyFrame, Analysis] | None:
        frame = source.read_new()
        if frame is None:
            return None
        import numpy as np  # noqa: PLC0415 - loaded with the first frame (see the imports)

        if self._detector is None:
            self._detector = self._new_detector()
        pixels = np.frombuffer(frame.pixels, np.uint8).reshape(frame.height, frame.width)
        return frame, self._detector.analyse(pixels)

    async def _announce(self, events: list[MotionEvent]) -> None:
        for event in events:
            if isinstance(event, MotionStarted):
                data: dict[str, Any] = {
                    "time": iso_time(event.at),
                    "area": event.area,
                    "box": {"x": event.box.x, "y": event.box.y, "w": event.box.w, "h": event.box.h},
                    "zone": event.zone,
                }
                if self._settings.record and self._clip_of_event is not None:
                    data["clip"] = {"job": self._clip_of_event}
                if self._settings.snapshot and self._hooks.snapshot is not None:
                    data["snapshot"] = await self._hooks.snapshot()
                where = f" in zone {event.zone}" if event.zone else ""
                log.info("motion started%s (%.1f %% of the picture)", where, 100 * event.area)
                self._set_state("ON", event.at, data)
                await self._hooks.retain(b"ON")
                self._hooks.report("motion.started", f"SUCCESS: motion{where}", data)
            elif isinstance(event, MotionEnded):
                data = {
                    "started": iso_time(event.started_at),
                    "time": iso_time(event.last_motion_at),
                    "duration_s": event.duration_s,
                    "peak_area": event.peak_area,
                }
                clip = self._clip_report()
                if clip is not None:
                    data["clip"] = clip
                log.info("motion ended after %.1f s", event.duration_s)
                self._set_state("OFF", time.time(), data)
                await self._hooks.retain(b"OFF")
                self._hooks.report(
                    "motion.ended", f"SUCCESS: motion ended after {event.duration_s:g} s", data
                )

    def _set_state(self, state: str, since: float, data: dict[str, Any]) -> None:
        self._state, self._since, self._last = state, since, data
        self._hooks.changed()

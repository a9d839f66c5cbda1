"""The stream's recent outages, so a recording can say why it has a gap.

The supervisor opens an outage when an online stream stops (its cause known then: the pusher
exited or stalled, a restart-class setting asked for a new pipeline, `stream stop`) and closes it
when MediaMTX has the stream again. The log is bounded: a camera runs for months.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

# Causes, as a recording's `gaps` name them.
STREAM_RESTART = "stream restart"
SETTINGS_CHANGE = "settings change"
STREAM_STOPPED = "stream stopped"
MEDIAMTX_UNREACHABLE = "MediaMTX unreachable"
AGENT_DOWN = "agent down"  # killed or restarted while recording: nothing was asked of MediaMTX
UNKNOWN = "outage"  # no outage of the stream explains it (the recorder itself lost time)

KEEP = 256


@dataclass
class Outage:
    start: float  # Unix time the stream stopped
    end: float | None  # Unix time it was back; None while it is down
    cause: str


class OutageLog:
    def __init__(self, keep: int = KEEP) -> None:
        self._outages: deque[Outage] = deque(maxlen=keep)

    @property
    def open(self) -> Outage | None:
        last = self._outages[-1] if self._outages else None
        return last if last is not None and last.end is None else None

    def begin(self, cause: str, at: float | None = None) -> None:
        """The stream went down; an outage already open keeps its first cause."""
        if self.open is None:
            self._outages.append(Outage(time.time() if at is None else at, None, cause))

    def explain(self, cause: str) -> None:
        """What kept an open outage going once it had begun (MediaMTX down, say)."""
        current = self.open
        if current is not None and current.cause == STREAM_RESTART:
            current.cause = cause

    def end(self, at: float | None = None) -> None:
        current = self.open
        if current is not None:
            current.end = time.time() if at is None else at

    def nearest(self, start: float, end: float, within: float = 1.0) -> Outage | None:
        """The outage that overlaps [start, end] the most, else the nearest one no further than
        `within` (the recorder places a session up to its pusher's start-up late, so a gap it
        shows can sit just beside the agent's record of the outage)."""
        now = time.time()
        best: Outage | None = None
        overlap, distance = 0.0, within
        for outage in self._outages:
            outage_end = outage.end or now
            shared = min(end, outage_end) - max(start, outage.start)
            if shared > overlap:
                best, overlap = outage, shared
            elif overlap == 0.0 and -shared <= distance:
                best, distance = outage, -shared
        return best

    def length_near(self, at: float) -> float:
        """How long the outage at or nearest `at` lasted; 0 if there is none near."""
        outage = self.nearest(at, at)
        if outage is None:
            return 0.0
        return (outage.end or time.time()) - outage.start

    def cause_of(self, start: float, end: float) -> str:
        """The cause of the outage that overlaps [start, end] the most, or is nearest it."""
        outage = self.nearest(start, end)
        return UNKNOWN if outage is None else outage.cause

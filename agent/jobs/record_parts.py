"""How a recording's time span maps onto what the recorder holds (pure code, table-tested).

MediaMTX's recorder keeps what reached it as spans (`/list`): one per publisher session, so a
pusher restart, a restart-class setting or a MediaMTX restart leaves a gap between two spans,
and the playback server's `/get` stops at a gap. A recording [start, end] is therefore the parts
of the spans inside it, each fetched on its own; consecutive parts with the same codec
parameters are joined into one file that keeps the gap as a jump in time, and parts that cannot
share a file (another size) become files of their own. The gaps are reported with their cause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.stream import outages

# A gap shorter than this is a frame interval, not lost video.
DEFAULT_FRAME_INTERVAL_S = 1 / 30


@dataclass(frozen=True)
class Span:
    start: float  # Unix time
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def parts_within(spans: Sequence[Span], start: float, end: float) -> list[Span]:
    """The recorded pieces of [start, end], in time order."""
    parts = []
    for span in sorted(spans, key=lambda s: s.start):
        low, high = max(span.start, start), min(span.end, end)
        if high - low > 0.001:
            parts.append(Span(low, high))
    return parts


def gaps_within(
    parts: Sequence[Span],
    start: float,
    end: float,
    shortest: float,
    lost_at: Callable[[float], float] | None = None,
) -> list[Span]:
    """What [start, end] lacks between and around ``parts``; gaps under ``shortest`` are none,
    except between two parts. Those are two publisher sessions (MediaMTX never joins them), so
    frames were lost there even when the spans touch or overlap: the recorder places a session
    by its first frame's arrival, late by its pusher's start-up, and a quick restart can look
    seamless. Such a gap lasts what ``lost_at(boundary)`` says (the agent's own record of the
    outage), at least ``shortest``."""
    gaps = []
    cursor = start
    for index, part in enumerate(parts):
        if part.start - cursor >= shortest:
            gaps.append(Span(cursor, part.start))
        elif index > 0:
            lost = max(shortest, lost_at(cursor) if lost_at is not None else 0.0)
            gaps.append(Span(cursor, min(end, cursor + lost)))
        cursor = max(cursor, part.end)
    if end - cursor >= shortest:
        gaps.append(Span(cursor, end))
    return gaps


def group_compatible(signatures: Sequence[object]) -> list[list[int]]:
    """Runs of consecutive parts with the same codec signature: one file each."""
    groups: list[list[int]] = []
    for index, signature in enumerate(signatures):
        if groups and signatures[groups[-1][-1]] == signature:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


_LOST_WHILE = {
    outages.STREAM_RESTART: "while the stream restarted",
    outages.SETTINGS_CHANGE: "while a settings change restarted the stream",
    outages.STREAM_STOPPED: "while the stream was stopped",
    outages.MEDIAMTX_UNREACHABLE: "while MediaMTX was unreachable",
    outages.AGENT_DOWN: "while the agent was down",
    outages.UNKNOWN: "in an outage of the recorder",
}


@dataclass(frozen=True)
class Gap:
    offset_s: float  # from the start of the recording
    length_s: float
    cause: str

    def to_json(self) -> dict[str, object]:
        return {
            "offset_s": round(self.offset_s, 3),
            "length_s": round(self.length_s, 3),
            "cause": self.cause,
        }


def explain_gaps(
    gaps: Sequence[Span], start: float, cause_of: Callable[[float, float], str]
) -> list[Gap]:
    return [Gap(g.start - start, g.duration, cause_of(g.start, g.end)) for g in gaps]


def summary(requested_s: float, kept_s: float, names: Sequence[str], gaps: Sequence[Gap]) -> str:
    """`recorded 7.4 of 8.0 s in record-X.mp4 (0.6 s lost while the stream restarted)`."""
    where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
    text = f"recorded {kept_s:.1f} of {requested_s:.1f} s in {where}"
    if gaps:
        lost: dict[str, float] = {}
        for gap in gaps:
            lost[gap.cause] = lost.get(gap.cause, 0.0) + gap.length_s
        reasons = "; ".join(
            f"{seconds:.1f} s lost {_LOST_WHILE.get(cause, cause)}"
            for cause, seconds in lost.items()
        )
        text += f" ({reasons})"
    return text

"""How a recording's span maps onto the recorder's spans: parts, gaps, files, the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.jobs.record_files import concat_list
from agent.jobs.record_parts import (
    Gap,
    Span,
    explain_gaps,
    gaps_within,
    group_compatible,
    parts_within,
    summary,
)
from agent.stream.outages import MEDIAMTX_UNREACHABLE, STREAM_RESTART, UNKNOWN, OutageLog

T = 1_000_000.0  # any Unix time


@pytest.mark.parametrize(
    ("spans", "parts"),
    [
        ([(T - 60, T + 60)], [(T, T + 8)]),  # one span covers it all
        ([(T - 60, T + 3.1), (T + 3.6, T + 60)], [(T, T + 3.1), (T + 3.6, T + 8)]),
        ([(T + 3.6, T + 60), (T - 60, T + 3.1)], [(T, T + 3.1), (T + 3.6, T + 8)]),  # any order
        ([(T - 60, T - 1)], []),  # recorded, but not then
        ([(T + 2, T + 5)], [(T + 2, T + 5)]),
    ],
)
def test_parts_are_the_spans_inside_the_recording(
    spans: list[tuple[float, float]], parts: list[tuple[float, float]]
) -> None:
    found = parts_within([Span(*s) for s in spans], T, T + 8)
    assert [(p.start, p.end) for p in found] == parts


def test_gaps_include_the_edges_and_ignore_a_frame_interval() -> None:
    parts = [Span(T + 0.5, T + 4), Span(T + 4.6, T + 7.5)]
    gaps = gaps_within(parts, T, T + 8, shortest=0.05)
    assert [(round(g.start - T, 2), round(g.end - T, 2)) for g in gaps] == [
        (0.0, 0.5), (4.0, 4.6), (7.5, 8.0),
    ]  # fmt: skip
    assert gaps_within([Span(T + 0.02, T + 7.99)], T, T + 8, shortest=0.05) == []


@pytest.mark.parametrize(
    "second_start", [3.12, 3.1, 2.9]
)  # apart by less than a frame, touching, overlapping
def test_two_sessions_always_have_a_gap_between_them(second_start: float) -> None:
    """A restart whose new session the recorder placed early (its old one late) still lost
    frames: the gap is as long as the agent's record of the outage says."""
    log = OutageLog()
    log.begin(STREAM_RESTART, at=T + 3.2)
    log.end(at=T + 3.45)
    parts = [Span(T, T + 3.1), Span(T + second_start, T + 8)]
    gaps = gaps_within(parts, T, T + 8, shortest=0.05, lost_at=log.length_near)
    assert [(round(g.start - T, 2), round(g.duration, 2)) for g in gaps] == [(3.1, 0.25)]
    assert [g.cause for g in explain_gaps(gaps, T, log.cause_of)] == [STREAM_RESTART]
    # Without any record of it, a frame interval's worth at least.
    assert [round(g.duration, 2) for g in gaps_within(parts, T, T + 8, shortest=0.05)] == [0.05]


def test_only_consecutive_parts_with_the_same_signature_share_a_file() -> None:
    assert group_compatible(["a", "a", "b", "a"]) == [[0, 1], [2], [3]]
    assert group_compatible([]) == []


def test_gaps_are_explained_by_the_outage_that_overlaps_them() -> None:
    log = OutageLog()
    log.begin(STREAM_RESTART, at=T + 3.0)
    log.end(at=T + 3.5)
    log.begin(STREAM_RESTART, at=T + 5.0)
    log.explain(MEDIAMTX_UNREACHABLE)
    log.end(at=T + 7.0)
    gaps = explain_gaps([Span(T + 3.1, T + 3.6), Span(T + 5.1, T + 7.2), Span(T + 9, T + 9.5)],
                        T, log.cause_of)  # fmt: skip
    assert [g.cause for g in gaps] == [STREAM_RESTART, MEDIAMTX_UNREACHABLE, UNKNOWN]
    assert gaps[0].to_json() == {"offset_s": 3.1, "length_s": 0.5, "cause": STREAM_RESTART}


def test_the_outage_log_is_bounded() -> None:
    log = OutageLog(keep=3)
    for i in range(10):
        log.begin(STREAM_RESTART, at=T + i)
        log.end(at=T + i + 0.5)
    assert log.cause_of(T, T + 0.4) == UNKNOWN  # forgotten
    assert log.cause_of(T + 9, T + 9.4) == STREAM_RESTART


def test_the_message_says_how_much_was_kept_and_why_the_rest_was_lost() -> None:
    assert summary(8.0, 8.0, ["record-A.mp4"], []) == "recorded 8.0 of 8.0 s in record-A.mp4"
    gaps = [Gap(3.1, 0.5, STREAM_RESTART), Gap(5.0, 0.1, STREAM_RESTART)]
    assert summary(8.0, 7.4, ["record-A.mp4"], gaps) == (
        "recorded 7.4 of 8.0 s in record-A.mp4 (0.6 s lost while the stream restarted)"
    )
    lost = [Gap(2, 0.8, MEDIAMTX_UNREACHABLE)]
    assert summary(6.0, 5.2, ["a.mp4", "b.mp4", "c.mp4"], lost) == (
        "recorded 5.2 of 6.0 s in a.mp4, b.mp4 and c.mp4"
        " (0.8 s lost while MediaMTX was unreachable)"
    )


def test_joined_parts_keep_their_true_offsets() -> None:
    script = concat_list(
        [
            (Span(T, T + 3.1), Path("/c/.a.part1.mp4")),
            (Span(T + 3.6, T + 8), Path("/c/.a.part2.mp4")),
        ]
    )
    assert script == (
        "ffconcat version 1.0\nfile '/c/.a.part1.mp4'\nduration 3.600000\nfile '/c/.a.part2.mp4'\n"
    )


def test_an_overlapping_session_follows_the_part_before_it() -> None:
    """Placed early by the recorder, the second part would start inside the first: it starts
    at the first's end instead, so the file's time never runs backwards."""
    script = concat_list(
        [
            (Span(T, T + 3.1), Path("/c/.a.part1.mp4")),
            (Span(T + 2.9, T + 8), Path("/c/.a.part2.mp4")),
        ]
    )
    assert "duration 3.100000\n" in script

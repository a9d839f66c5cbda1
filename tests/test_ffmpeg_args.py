"""The pure ffmpeg argument builders: table tests, plus the stamp they draw decoded back."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.jobs.trim import CutPlan, fast_trim_args, plan_exact_cut
from agent.stream.ffmpeg_args import (
    STAMP_BITS,
    STAMP_HEIGHT,
    TestPatternParams,
    decode_stamp,
    grey_frame_delay_s,
    jpeg_quality_scale,
    live_filter_commands,
    motion_rate_filter,
    pattern_filtergraph,
    pattern_pusher_args,
)
from agent.stream.motion_frames import GreyFrameFile
from agent.stream.target import StreamTarget

PARAMS = TestPatternParams(
    width=320, height=240, fps=25, bitrate_kbps=500, keyframe_interval_s=2.0, pattern="testsrc2",
    hflip=False, vflip=True, brightness=0.1, contrast=1.2, saturation=1.0, gamma=1.0, hue=30.0,
)  # fmt: skip


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("change", "flag", "value"),
    [
        ({}, "-g", "50"),
        ({"keyframe_interval_s": 0.5}, "-g", "12"),
        ({"keyframe_interval_s": 0.01}, "-g", "1"),
        ({}, "-b:v", "500k"),
        ({}, "-i", "testsrc2=size=320x240:rate=25"),
        ({"pattern": "smptebars", "width": 640}, "-i", "smptebars=size=640x240:rate=25"),
        ({}, "-profile:v", "baseline"),
        ({}, "-rtsp_transport", "tcp"),
    ],
)
def test_pusher_arguments(change: dict[str, object], flag: str, value: str) -> None:
    params = replace(PARAMS, **change)  # type: ignore[arg-type]
    argv = pattern_pusher_args(params, "ipc:///tmp/x.zmq", "rtsp://h:1/cam", "/run/x/latest.yuv")
    assert option(argv, flag) == value
    assert argv[0] == "ffmpeg"
    # Two outputs: the encoded stream, and the latest raw frame for pictures.
    assert option(argv, "-rtsp_transport") == "tcp"
    assert argv[argv.index("rtsp://h:1/cam") - 1] == "tcp"
    assert argv[-1] == "/run/x/latest.yuv"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["[encoded]", "[still]"]


def test_filtergraph_carries_live_values_flips_and_escaped_endpoint() -> None:
    graph = pattern_filtergraph(PARAMS, "ipc:///run/a/filters-1.zmq")
    assert "eq@eq=brightness=0.1:contrast=1.2:saturation=1.0:gamma=1.0" in graph
    assert "hue@hue=h=30.0" in graph
    assert "vflip," in graph and "hflip," not in graph
    assert r"bind_address=ipc\\:///run/a/filters-1.zmq" in graph
    with pytest.raises(ValueError, match="unsupported character"):
        pattern_filtergraph(PARAMS, "ipc:///tmp/a,b")


@pytest.mark.parametrize(("quality", "scale"), [(100, 2), (1, 31), (90, 5)])
def test_jpeg_quality_maps_onto_ffmpeg_scale(quality: int, scale: int) -> None:
    assert jpeg_quality_scale(quality) == scale


def test_live_commands_only_for_live_controls() -> None:
    commands = live_filter_commands({"brightness": 0.3, "hue": -20.0, "width": 640})
    assert commands == ["eq@eq brightness 0.3", "hue@hue h -20.0"]


def test_credentials_are_quoted_into_the_publish_url() -> None:
    target = StreamTarget("rtsp://127.0.0.1:8554/cam", "agent", "p@ss:w/rd")
    assert target.url_with_credentials() == "rtsp://agent:p%40ss%3Aw%2Frd@127.0.0.1:8554/cam"
    assert target.path == "cam"


def test_the_drawn_stamp_decodes_to_the_wall_clock() -> None:
    # The real filter graph through real ffmpeg, one frame, read back as gray.
    graph = pattern_filtergraph(PARAMS, "ipc:///tmp/camera-agent-test-stamp.zmq")
    before = time.time() * 1000
    frame = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-filter_complex", graph, "-map", "[encoded]", "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "gray", "-", "-map", "[still]", "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    after = time.time() * 1000
    row = frame[320 * (STAMP_HEIGHT // 2) :]
    stamp = decode_stamp(row, 320, int(after))
    assert before - 5 <= stamp <= after


@pytest.mark.parametrize("offset", [0, 1, 2**STAMP_BITS - 1])
def test_decode_stamp_resolves_the_modulo_near_now(offset: int) -> None:
    now = 1_800_000_000_000
    true_ms = now - offset % 5000
    bits = true_ms % 2**STAMP_BITS
    width = 64
    row = bytes(255 if bits >> (x * STAMP_BITS // width) & 1 else 0 for x in range(width))
    assert decode_stamp(row, width, now) == true_ms


FRAMES = [i / 25 for i in range(150)]
KEYS = [float(k) for k in range(6)]


@pytest.mark.parametrize(
    ("start", "end", "head", "keyframe"),
    [
        (1.48, 4.0, 13, 2.0),  # frames 1.48 .. 1.96 re-encoded, copy from 2.0
        (2.0, 4.0, 0, 2.0),  # on a keyframe: nothing re-encoded
        (2.2, 2.8, 15, None),  # no keyframe inside: all of it re-encoded
        (0.0, 6.0, 0, 0.0),
    ],
)
def test_exact_cut_reencodes_only_up_to_the_next_keyframe(
    start: float, end: float, head: int, keyframe: float | None
) -> None:
    assert plan_exact_cut(FRAMES, KEYS, start, end) == CutPlan(head, keyframe)


def test_fast_trim_copies_from_a_seek_before_the_input() -> None:
    argv = fast_trim_args(Path("/c/a.mp4"), 1.5, 4.0, Path("/c/.b.partial"))
    assert argv.index("-ss") < argv.index("-i")
    assert option(argv, "-c") == "copy"
    assert argv[-1] == "/c/.b.partial"


@pytest.mark.parametrize(
    ("fps", "motion_fps", "expected"),
    [(30, 5, "framestep=6,"), (25, 5, "framestep=5,"), (15, 5, "framestep=3,"), (5, 5, ""),
     (4, 5, ""), (30, 0.5, "framestep=60,")],
)  # fmt: skip
def test_motion_frames_are_every_nth_frame(fps: int, motion_fps: float, expected: str) -> None:
    assert motion_rate_filter(fps, motion_fps) == expected


def test_a_grey_frame_is_stamped_with_its_capture_not_its_write(tmp_path: Path) -> None:
    """ffmpeg writes the first frame of each group of 6 (30 fps to 5) when the group's last has
    arrived: its capture time is the write time less 5 frame intervals."""
    assert grey_frame_delay_s(30, 5) == pytest.approx(5 / 30)
    assert grey_frame_delay_s(5, 5) == 0.0
    grey = GreyFrameFile(tmp_path / "motion.gray", 4, 2, grey_frame_delay_s(30, 5))
    grey.path.write_bytes(bytes(8))
    os.utime(grey.path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    frame = grey.read_new()
    assert frame is not None and frame.captured_at == pytest.approx(1_700_000_000 - 5 / 30)
    assert grey.read_new() is None and not grey.has_new()  # the same frame is not read twice


def test_the_pattern_graph_adds_the_grey_output_and_the_box_only_as_asked() -> None:
    plain = pattern_filtergraph(PARAMS, "ipc:///run/a/f.zmq")
    assert "[motion]" not in plain and "split=2[encoded][still]" in plain
    assert "overlay@box" in plain and ":enable=0," in plain  # the box is there, off
    graph = pattern_filtergraph(replace(PARAMS, moving_box=True, pattern="still"),
                                "ipc:///run/a/f.zmq", (320, 240))  # fmt: skip
    assert "split=3[encoded][still][motionsrc]" in graph and ":enable=1," in graph
    assert graph.endswith(";[motionsrc]framestep=5,scale=320:240,format=gray[motion]")
    assert "noise=alls=10:allf=t" in graph

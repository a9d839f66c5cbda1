"""trim: cut a capture to [start, end], as a new file beside it (or replacing it, atomically).

`fast` copies the stream (no re-encode, seconds of CPU at most) and so starts on the keyframe
at or before `start`. `exact` is frame-accurate and re-encodes only what it must: the frames
from `start` to the next keyframe (a "smart cut"); from that keyframe on, the camera's own H.264
is copied. The two parts carry different parameter sets, so the MP4 stores them in-band
(`avc3`), which ffmpeg, VLC, browsers and Android's MediaCodec play.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file, probe_media
from agent.jobs.manager import JobContext, JobRunner
from agent.process import ManagedProcess

TS_ARGS = ["-bsf:v", "h264_mp4toannexb", "-f", "mpegts"]

# Frame times are not whole milliseconds (30 fps in a 90 kHz timebase: 1.0333333 s) and ffprobe
# prints them rounded; a seek to the printed time lands on the keyframe before. Half a
# millisecond is below any frame interval a camera makes and above the rounding.
SEEK_MARGIN_S = 0.0005


def seek_time(seconds: float) -> str:
    """An input -ss that lands on the keyframe at `seconds`, or the one before it."""
    return f"{seconds + SEEK_MARGIN_S:.6f}"


def fast_trim_args(source: Path, start: float, end: float, output: Path) -> list[str]:
    """A stream-copy trim (pure; table-tested)."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        # -ss before -i seeks to the keyframe at or before start: a copy must begin on one.
        "-ss", seek_time(start), "-to", f"{end:.6f}", "-i", str(source),
        "-map", "0:v", "-c", "copy", "-avoid_negative_ts", "make_zero",
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip


# A frame this close to `start` or `end` counts as on it (times are rounded to microseconds).
CUT_MARGIN_S = 1e-3


@dataclass(frozen=True)
class CutPlan:
    """How an exact trim is made: re-encode `head_frames` from start, copy from `keyframe`."""

    head_frames: int
    keyframe: float | None  # None: no keyframe inside the range, all of it is re-encoded


def plan_exact_cut(
    frame_times: list[float], keyframes: list[float], start: float, end: float
) -> CutPlan:
    """Pure: which frames an exact trim re-encodes (table-tested)."""
    eps = CUT_MARGIN_S
    following = [k for k in keyframes if k >= start - eps]
    keyframe = following[0] if following and following[0] < end - eps else None
    head_end = keyframe if keyframe is not None else end
    head = [t for t in frame_times if start - eps <= t < head_end - eps]
    return CutPlan(head_frames=len(head), keyframe=keyframe)


def _x264_profile(profile: str | None) -> str:
    name = (profile or "").lower()
    return "main" if "main" in name else "high" if "high" in name else "baseline"


class Trimmer:
    def __init__(self, captures: Captures) -> None:
        self._captures = captures

    async def _smart_cut(
        self, source: Path, start: float, end: float, facts: dict[str, Any], output: Path
    ) -> None:
        frame_times, keyframes = await asyncio.to_thread(_packet_times, source)
        plan = plan_exact_cut(frame_times, keyframes, start, end)
        head, body = (
            output.with_name(output.name + ".head.ts"),
            output.with_name(output.name + ".body.ts"),
        )
        try:
            parts = []
            if plan.head_frames:
                await _ffmpeg(
                    # The frames plan_exact_cut counted from `start` (within its margin), so
                    # -frames:v ends on the frame before the keyframe.
                    ["ffmpeg", "-v", "error", "-nostdin", "-y",
                     "-ss", f"{max(start - CUT_MARGIN_S, 0.0):.6f}",
                     "-i", str(source), "-map", "0:v", "-frames:v", str(plan.head_frames),
                     "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                     "-profile:v", _x264_profile(facts.get("profile")),
                     "-pix_fmt", "yuv420p", *TS_ARGS, str(head)]
                )  # fmt: skip
                parts.append(head)
            if plan.keyframe is not None:
                head_s = plan.keyframe - start
                await _ffmpeg(
                    ["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", seek_time(plan.keyframe),
                     "-to", f"{end:.6f}", "-i", str(source), "-map", "0:v", "-c", "copy",
                     # The seek's margin put the keyframe just before zero: back onto head_s.
                     "-output_ts_offset", f"{head_s + SEEK_MARGIN_S:.6f}", *TS_ARGS, str(body)]
                )  # fmt: skip
                parts.append(body)
            await _ffmpeg(
                ["ffmpeg", "-v", "error", "-nostdin", "-y",
                 "-i", "concat:" + "|".join(map(str, parts)), "-c", "copy", "-tag:v", "avc3",
                 "-movflags", "+faststart", "-f", "mp4", str(output)]
            )  # fmt: skip
        finally:
            for temporary in (head, body):
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()

    def runner(self, params: dict[str, Any]) -> JobRunner:
        """Check the file (answered at once when wrong) and make the job's runner."""
        source = self._captures.resolve_existing(params["file"])

        async def run(context: JobContext) -> dict[str, Any]:
            return await self._trim(source, params)

        return run

    async def _trim(self, source: Path, params: dict[str, Any]) -> dict[str, Any]:
        start, end, mode = params["start"], params["end"], params["mode"]
        facts = await asyncio.to_thread(probe_media, source)
        duration = facts.get("duration_s")
        if duration is None:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT, f"{params['file']} is not a video ffprobe can read"
            )
        if start >= duration:
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT,
                f"start {start:g} s is past the end of the file ({duration:g} s)",
            )
        if params["replace"]:
            final = source
        else:
            final = source.with_name(
                f"{source.stem}-trim-{start:g}-{min(end, duration):g}{source.suffix}"
            )
        async with self._captures.writing(final) as partial:
            if mode == "fast":
                await _ffmpeg(fast_trim_args(source, start, end, partial))
            else:
                await self._smart_cut(source, start, min(end, duration), facts, partial)
        result = await asyncio.to_thread(describe_file, self._captures, final)
        result.update(source=self._captures.relative(source), mode=mode, replaced=params["replace"])
        return result


async def _ffmpeg(argv: list[str]) -> None:
    cutter = ManagedProcess(argv, "trim")
    await cutter.start()
    try:
        code = await cutter.wait()
    finally:
        await cutter.stop()  # on cancellation: the whole group, and reaped
    if code != 0:
        raise CommandError(ErrorCode.IO_ERROR, f"ffmpeg could not trim: {cutter.stderr_text(5)}")


def _packet_times(source: Path) -> tuple[list[float], list[float]]:
    """Presentation times of all video frames and of the keyframes (from packets, no decode)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json",
         "-show_entries", "packet=pts_time,flags", str(source)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    packets = [p for p in json.loads(out)["packets"] if p.get("pts_time") not in (None, "N/A")]
    times = sorted(float(p["pts_time"]) for p in packets)
    keyframes = sorted(float(p["pts_time"]) for p in packets if "K" in p.get("flags", ""))
    return times, keyframes

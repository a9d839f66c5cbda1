"""The files of a recording: what a fetched part holds (ffprobe), and joining parts (ffmpeg).

Two parts can share one MP4 when their codec, size and parameter sets (the avcC extradata) are
the same; the concat demuxer then copies them into one file, each part at its true offset
(`duration` directives), so an outage stays a jump in time rather than being closed up.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from agent.errors import CommandError, ErrorCode
from agent.jobs.record_parts import DEFAULT_FRAME_INTERVAL_S, Span
from agent.process import run_command


@dataclass(frozen=True)
class PartMedia:
    codec: str | None
    width: int | None
    height: int | None
    extradata: str | None  # a hash of the parameter sets
    frame_interval_s: float

    @property
    def signature(self) -> tuple[object, ...]:
        """Parts with equal signatures can be one file."""
        return (self.codec, self.width, self.height, self.extradata)


def probe_part(path: Path) -> PartMedia:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_data_hash", "sha256",
         "-show_entries", "stream=codec_name,width,height,extradata_hash,r_frame_rate",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    streams = json.loads(result.stdout or "{}").get("streams") or [{}]
    stream = streams[0]
    rate = Fraction(stream.get("r_frame_rate") or "0/1")
    return PartMedia(
        codec=stream.get("codec_name"),
        width=stream.get("width"),
        height=stream.get("height"),
        extradata=stream.get("extradata_hash"),
        frame_interval_s=float(1 / rate) if rate > 0 else DEFAULT_FRAME_INTERVAL_S,
    )


def concat_list(pieces: list[tuple[Span, Path]]) -> str:
    """The concat demuxer's script: each part, and how far the next one starts after it."""
    lines = ["ffconcat version 1.0"]
    for index, (part, path) in enumerate(pieces):
        lines.append(f"file '{path}'")
        if index + 1 < len(pieces):
            # Never less than the part itself: spans can overlap where a restart's new session
            # was placed early (record_parts.gaps_within), and time must not run backwards.
            step = max(pieces[index + 1][0].start - part.start, part.duration)
            lines.append(f"duration {step:.6f}")
    return "\n".join(lines) + "\n"


async def join_parts(pieces: list[tuple[Span, Path]], dest: Path) -> None:
    """Copy the parts into ``dest`` (MP4), the gaps between them kept as gaps in time."""
    # Beside `dest` (a `.NAME.partial`), so a crash leaves it where start-up sweeps.
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"{dest.name}.", suffix=".ffconcat", dir=dest.parent
    ) as script:
        script.write(concat_list(pieces))
        script.flush()
        result = await run_command(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
             "-f", "concat", "-safe", "0", "-i", script.name,
             "-c", "copy", "-f", "mp4", str(dest)]
        )  # fmt: skip
    if result.returncode != 0:
        raise CommandError(
            ErrorCode.IO_ERROR if "No space left" in result.stderr else ErrorCode.STREAM_ERROR,
            f"joining the recording's parts failed: {result.stderr.strip()[-300:]}",
        )

"""trim: cut a capture to [start, end], as a new file beside it (or replacing it, atomically).

`fast` copies the stream (no re-encode, seconds of CPU at most) and so starts on the keyframe
at or before `start`; `exact` re-encodes the range with libx264 so the first frame is the one at
`start`, with the source's size and profile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.errors import CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file, probe_media
from agent.jobs.manager import JobContext, JobRunner
from agent.process import ManagedProcess


def trim_args(source: Path, start: float, end: float, mode: str, output: Path) -> list[str]:
    """ffmpeg arguments for one trim (pure; table-tested)."""
    common = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if mode == "fast":
        # -ss before -i seeks to the keyframe at or before start: a copy must begin on one.
        cut = ["-ss", f"{start:.3f}", "-to", f"{end:.3f}", "-i", str(source),
               "-map", "0:v", "-c", "copy", "-avoid_negative_ts", "make_zero"]  # fmt: skip
    else:
        cut = ["-ss", f"{start:.3f}", "-to", f"{end:.3f}", "-i", str(source),
               "-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
               "-profile:v", "baseline", "-pix_fmt", "yuv420p"]  # fmt: skip
    return [*common, *cut, "-movflags", "+faststart", "-f", "mp4", str(output)]


class Trimmer:
    def __init__(self, captures: Captures) -> None:
        self._captures = captures

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
        with self._captures.writing(final) as partial:
            cutter = ManagedProcess(trim_args(source, start, end, mode, partial), f"trim-{mode}")
            await cutter.start()
            try:
                code = await cutter.wait()
            finally:
                await cutter.stop()  # on cancellation: the whole group, and reaped
            if code != 0:
                raise CommandError(
                    ErrorCode.IO_ERROR, f"ffmpeg could not trim: {cutter.stderr_text(5)}"
                )
        result = await asyncio.to_thread(describe_file, self._captures, final)
        result.update(source=self._captures.relative(source), mode=mode, replaced=params["replace"])
        return result

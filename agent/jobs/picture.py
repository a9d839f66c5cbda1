"""picture: a full-resolution JPEG of the current frame, while the stream keeps running."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.camera.base import CameraBackend
from agent.errors import CameraError, CommandError, ErrorCode
from agent.jobs.captures import Captures, describe_file
from agent.jobs.jpegdata import ENCODABLE, Jpeg
from agent.jobs.manager import JobContext, JobRunner
from agent.memory import release_free_heap
from agent.process import ManagedProcess
from agent.stream.ffmpeg_args import still_to_jpeg_args
from agent.stream.still import RawFrame
from agent.stream.supervisor import StreamSupervisor

PictureShown = Callable[[Jpeg | None, dict[str, Any]], Awaitable[None]]


def picture_runner(
    backend: CameraBackend,
    stream: StreamSupervisor,
    captures: Captures,
    preview_limit: int,
    shown: PictureShown,
) -> Any:
    """Picture jobs; each finished picture is handed to ``shown`` with its preview (the JPEG
    itself, or a downscaled one within ``preview_limit`` bytes) for BASE/picture."""

    def factory(params: dict[str, Any]) -> JobRunner:
        async def run(context: JobContext) -> dict[str, Any]:
            result, small = await take_picture(
                backend, stream, captures, params["quality"], params["sidecar"], preview_limit
            )
            await shown(small, result)
            return result

        return run

    return factory


async def take_picture(
    backend: CameraBackend,
    stream: StreamSupervisor,
    captures: Captures,
    quality: int,
    sidecar: bool,
    preview_limit: int,
) -> tuple[dict[str, Any], Jpeg | None]:
    """The picture's result, and its preview (None when none fits ``preview_limit``)."""
    try:
        frame = await stream.latest_frame()  # the running pipeline's
    except CameraError as err:
        raise CommandError(ErrorCode.NOT_AVAILABLE, f"no picture: {err}") from err
    try:
        values = backend.values()  # the controls in effect for this frame
        final = captures.new_name("picture", ".jpg")
        small = await _encode(frame, final, captures, quality, preview_limit)
    finally:
        frame.release()
    media = {"width": frame.width, "height": frame.height, "codec": "mjpeg", "duration_s": None}
    result = await asyncio.to_thread(describe_file, captures, final, media)
    result["frame_time"] = frame.made_at
    if sidecar:
        side = final.with_suffix(".json")
        body = {"picture": result["path"], "frame_time": frame.made_at, "controls": values}
        await captures.write_file(side, (json.dumps(body, indent=1) + "\n").encode())
        result["sidecar"] = captures.relative(side)
        result["sidecar_url"] = captures.url(result["sidecar"])
    return result, small


async def save_frame(
    stream: StreamSupervisor, captures: Captures, final: Path, quality: int
) -> RawFrame:
    """The running pipeline's latest frame as a JPEG under ``final``, with no preview (a
    timelapse frame); returns the frame's facts (its pixels are released)."""
    try:
        frame = await stream.latest_frame()
    except CameraError as err:
        raise CommandError(ErrorCode.NOT_AVAILABLE, f"no frame: {err}") from err
    try:
        await _encode(frame, final, captures, quality, None)
    finally:
        frame.release()
    return frame


def load_encoder() -> None:
    """Import the in-process encoder (blocking: a worker thread). Done when the stream first
    comes online, so that the first picture is not late by the import; an agent that never
    streams never loads it (see jpegdata.py)."""
    from agent.jobs import jpeg  # noqa: F401, PLC0415

    release_free_heap()  # numpy's import leaves freed blocks behind: see memory.py


def _encode_with_preview(
    source: str, frame: RawFrame, quality: int, preview_limit: int | None
) -> tuple[Jpeg, Jpeg | None]:
    # Imported here, in the worker thread of the first picture: see jpegdata.py.
    from agent.jobs import jpeg  # noqa: PLC0415

    planes = jpeg.read_yuv420p(source, frame.width, frame.height)
    full = jpeg.encode(planes, quality)
    if preview_limit is None:
        return full, None
    return full, jpeg.preview(planes, full, quality, preview_limit)


async def _encode(
    frame: RawFrame, final: Path, captures: Captures, quality: int, preview_limit: int | None
) -> Jpeg | None:
    """The frame as a JPEG under ``final`` (atomically): in process when its layout allows,
    else by an ffmpeg of its own. Returns the preview for BASE/picture (none when
    ``preview_limit`` is None)."""
    async with captures.writing(final) as partial:
        if frame.pix_fmt in ENCODABLE:
            try:
                # Opened now, on the loop: the pusher replaces the file at every frame, and the
                # worker may start late (the encoder still loading); the open file is this
                # moment's frame whatever comes after.
                fd = os.open(frame.path, os.O_RDONLY)
                try:
                    full, shown = await asyncio.to_thread(
                        _encode_with_preview, f"/proc/self/fd/{fd}", frame, quality, preview_limit
                    )
                finally:
                    os.close(fd)
            except (OSError, ValueError) as err:
                raise CommandError(ErrorCode.CAMERA_ERROR, f"JPEG encoding failed: {err}") from err
            await asyncio.to_thread(partial.write_bytes, full.data)
            return shown
        encoder = ManagedProcess(
            still_to_jpeg_args(
                frame.path, frame.width, frame.height, frame.pix_fmt, quality, str(partial)
            ),
            "picture-encoder",
        )
        await encoder.start()
        try:
            code = await encoder.wait()
        except asyncio.CancelledError:
            await encoder.stop()  # a cancelled picture leaves no encoder behind
            raise
        if code != 0 or not partial.exists():
            raise CommandError(
                ErrorCode.CAMERA_ERROR, f"JPEG encoding failed: {encoder.stderr_text(5)}"
            )
        if preview_limit is None:
            return None
        # ffmpeg's JPEG is the preview when it fits; no downscaling without the raw planes.
        data = await asyncio.to_thread(partial.read_bytes)
        return Jpeg(data, frame.width, frame.height) if len(data) <= preview_limit else None

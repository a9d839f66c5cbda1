"""The small grey frames motion detection reads from the running pipeline (no second camera open).

ffmpeg pushers write one beside the still frame, shrunk to ANALYSIS_WIDTH and reduced to the
analysis rate, replaced atomically at every such frame (`-update 1 -atomic_writing 1`): a slow
reader never holds the encoder up, it only skips frames. picamera2 gives its `lores` stream's
Y plane instead (agent/camera/picamera2_backend.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ANALYSIS_WIDTH = 320


def analysis_size(width: int, height: int) -> tuple[int, int]:
    """The grey frame's size for a `width`x`height` picture: ANALYSIS_WIDTH wide (or the
    picture's own width when smaller), the picture's aspect, even sides."""
    target = min(ANALYSIS_WIDTH, width)
    return target - target % 2, max(2, round(height * target / width / 2) * 2)


@dataclass(frozen=True)
class GreyFrame:
    pixels: bytes  # width*height bytes, one per pixel, rows top to bottom
    width: int
    height: int
    captured_at: float  # time.time() the frame was made


class MotionFrameSource(Protocol):
    """Where a pusher's grey frames come from."""

    def has_new(self) -> bool:
        """Whether `read_new` would find a frame: cheap enough for the event loop (a stat of a
        file in RAM, or a clock), so that a look with nothing new costs no thread."""
        ...

    def read_new(self) -> GreyFrame | None:
        """The newest frame if it is one not read before, else None (blocking I/O: call it
        from a worker thread)."""
        ...


class GreyFrameFile:
    """The grey frame ffmpeg keeps replacing; a new file (inode or time) is a new frame."""

    def __init__(self, path: Path, width: int, height: int, written_after_s: float = 0.0) -> None:
        self.path = path
        self.width = width
        self.height = height
        # The frame's capture time is its write time less this (ffmpeg_args.grey_frame_delay_s).
        self.written_after_s = written_after_s
        self._last: tuple[int, int] | None = None

    def has_new(self) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_ino, stat.st_mtime_ns) != self._last

    def read_new(self) -> GreyFrame | None:
        try:
            with self.path.open("rb") as file:
                stat = os.fstat(file.fileno())
                identity = (stat.st_ino, stat.st_mtime_ns)
                if identity == self._last:
                    return None
                pixels = file.read(self.width * self.height + 1)
        except FileNotFoundError:
            return None  # before the pipeline's first frame
        if len(pixels) != self.width * self.height:
            return None  # not a frame of this size (never: the file is replaced whole)
        self._last = identity
        captured_at = stat.st_mtime_ns / 1e9 - self.written_after_s
        return GreyFrame(pixels, self.width, self.height, captured_at)


def grey_output_args(path: str) -> list[str]:
    """The pusher's grey output (after filters that shrink it and set its rate)."""
    return [
        "-fps_mode", "passthrough",
        "-pix_fmt", "gray", "-c:v", "rawvideo",
        "-f", "image2", "-update", "1", "-atomic_writing", "1", path,
    ]  # fmt: skip

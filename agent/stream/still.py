"""The latest raw frame a pusher keeps on disk (RAM), from which pictures are made."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import CameraError


@dataclass(frozen=True)
class RawFrame:
    """The camera's current frame, raw, in a file: what a picture is made from."""

    path: str
    width: int
    height: int
    pix_fmt: str
    made_at: float  # time.time() of the frame
    # True: a file made for this one caller, who removes it when done (see `release`); False:
    # the pusher's shared latest frame, replaced atomically and removed with its run.
    private: bool = False

    def release(self) -> None:
        """Done with the frame: a private file goes (it sits in RAM, and pictures are many)."""
        if self.private:
            Path(self.path).unlink(missing_ok=True)


STALE_FRAME_S = 1.0
FIRST_FRAME_WAIT_S = 2.0


class StillFile:
    """ffmpeg rewrites the file atomically at every frame (`-update 1 -atomic_writing 1`)."""

    def __init__(self, path: Path, width: int, height: int, pix_fmt: str = "yuv420p") -> None:
        self.path = path
        self.width = width
        self.height = height
        self.pix_fmt = pix_fmt

    async def frame(self) -> RawFrame:
        deadline = time.monotonic() + FIRST_FRAME_WAIT_S
        while True:
            try:
                made_at = self.path.stat().st_mtime
                break
            except FileNotFoundError:
                # A pusher that just started has not written its first frame yet.
                if time.monotonic() > deadline:
                    raise CameraError("no frame yet; the stream is starting") from None
                await asyncio.sleep(0.01)
        age = time.time() - made_at
        if age > STALE_FRAME_S:
            raise CameraError(f"the last frame is {age:.1f} s old; the stream is down")
        return RawFrame(str(self.path), self.width, self.height, self.pix_fmt, made_at)


def still_output_args(path: str) -> list[str]:
    """The pusher's second output: the current frame, raw, replaced atomically."""
    return [
        "-pix_fmt", "yuv420p", "-c:v", "rawvideo",
        "-f", "image2", "-update", "1", "-atomic_writing", "1", path,
    ]  # fmt: skip

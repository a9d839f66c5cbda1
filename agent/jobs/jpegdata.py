"""What an encoded picture is, apart from the encoder: the encoder (`jpeg.py`, numpy and
simplejpeg, some 30 MiB of resident memory) is imported by the first picture, so an agent that
takes none does not carry it."""

from __future__ import annotations

from dataclasses import dataclass

# Frame layouts the in-process encoder takes; others go to an ffmpeg process.
ENCODABLE = frozenset({"yuv420p"})


@dataclass(frozen=True)
class Jpeg:
    data: bytes
    width: int
    height: int

"""JPEG encoding in process (libjpeg-turbo through simplejpeg), straight from the raw frame.

A picture used to start an ffmpeg process to encode one frame: tens of milliseconds of process
start-up for a few milliseconds of work. Encoding here, in a worker thread, takes the frame file
(planar YUV 4:2:0, what every pusher keeps as its latest frame) and hands libjpeg-turbo its
three planes without converting them. Frames in another layout are left to ffmpeg (picture.py).

The same planes give the preview published on MQTT: the picture itself when it is small enough,
else the frame halved (a 2x2 box filter, plane by plane) until its JPEG fits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import simplejpeg

from agent.jobs.jpegdata import Jpeg

Plane = npt.NDArray[np.uint8]
Planes = tuple[Plane, Plane, Plane]


def read_yuv420p(path: str | Path, width: int, height: int) -> Planes:
    """The Y, U and V planes of the frame file ``path`` (blocking: a worker thread)."""
    raw = np.fromfile(path, dtype=np.uint8)
    luma = width * height
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    chroma = chroma_w * chroma_h
    expected = luma + 2 * chroma
    if raw.size < expected:
        raise ValueError(
            f"{path}: {raw.size} bytes, a {width}x{height} yuv420p frame has {expected}"
        )
    return (
        raw[:luma].reshape(height, width),
        raw[luma : luma + chroma].reshape(chroma_h, chroma_w),
        raw[luma + chroma : expected].reshape(chroma_h, chroma_w),
    )


def encode(planes: Planes, quality: int) -> Jpeg:
    y, u, v = planes
    data = bytes(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality))
    return Jpeg(data, y.shape[1], y.shape[0])


def _halve(planes: Planes) -> Planes:
    y, u, v = planes
    # Luma cropped to a multiple of 4, so that the halved luma is even and the chroma exactly
    # half of it, as 4:2:0 wants.
    height, width = (y.shape[0] // 4) * 4, (y.shape[1] // 4) * 4

    def box(plane: Plane, h: int, w: int) -> Plane:
        cropped = plane[:h, :w].astype(np.uint16)
        summed = cropped.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
        halved: Plane = ((summed + 2) // 4).astype(np.uint8)
        return halved

    return box(y, height, width), box(u, height // 2, width // 2), box(v, height // 2, width // 2)


def preview(planes: Planes, full: Jpeg, quality: int, limit: int) -> Jpeg | None:
    """A JPEG of at most ``limit`` bytes: ``full`` if it fits, else the frame halved until it
    does (None if not even a thumbnail of 80 pixels across fits)."""
    if len(full.data) <= limit:
        return full
    while planes[0].shape[1] >= 160:
        planes = _halve(planes)
        smaller = encode(planes, quality)
        if len(smaller.data) <= limit:
            return smaller
    return None

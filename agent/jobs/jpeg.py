"""JPEG encoding in process (libjpeg-turbo through simplejpeg), straight from the raw frame.

A picture used to start an ffmpeg process to encode one frame: tens of milliseconds of process
start-up for a few milliseconds of work. Encoding here, in a worker thread, takes the frame file
(planar YUV 4:2:0, what every pusher keeps as its latest frame) and hands libjpeg-turbo its
three planes without converting them. Frames in another layout are left to ffmpeg (picture.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import simplejpeg

ENCODABLE = frozenset({"yuv420p"})


def encode_yuv420p(path: str | Path, width: int, height: int, quality: int) -> bytes:
    """The frame file ``path`` (yuv420p, width x height) as JPEG bytes (blocking: a thread)."""
    raw = np.fromfile(path, dtype=np.uint8)
    luma = width * height
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    expected = luma + 2 * chroma_w * chroma_h
    if raw.size < expected:
        raise ValueError(
            f"{path}: {raw.size} bytes, a {width}x{height} yuv420p frame has {expected}"
        )
    y = raw[:luma].reshape(height, width)
    u = raw[luma : luma + chroma_w * chroma_h].reshape(chroma_h, chroma_w)
    v = raw[luma + chroma_w * chroma_h : expected].reshape(chroma_h, chroma_w)
    return bytes(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality))

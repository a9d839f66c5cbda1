"""The in-process JPEG encoder against what ffmpeg and a decoder make of its output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from agent.jobs.jpeg import encode, read_yuv420p


def yuv_frame(path: Path, width: int, height: int) -> None:
    """A luma ramp left to right and flat chroma: easy to check after a lossy round trip."""
    ramp = np.tile(np.linspace(16, 235, width, dtype=np.uint8), (height, 1))
    chroma = np.full(((height + 1) // 2) * ((width + 1) // 2), 128, dtype=np.uint8)
    path.write_bytes(ramp.tobytes() + chroma.tobytes() + chroma.tobytes())


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080), (4056, 3040), (17, 9)])
def test_the_jpeg_has_the_frames_size_and_content(tmp_path: Path, width: int, height: int) -> None:
    raw = tmp_path / "frame.yuv"
    yuv_frame(raw, width, height)
    data = encode(read_yuv420p(raw, width, height), quality=90).data
    jpeg = tmp_path / "frame.jpg"
    jpeg.write_bytes(data)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries", "stream=width,height,codec_name",
         str(jpeg)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(probe.stdout)["streams"][0] == {
        "codec_name": "mjpeg", "width": width, "height": height,
    }  # fmt: skip
    decoded = simplejpeg.decode_jpeg(data, colorspace="GRAY")[:, :, 0].astype(int)
    expected = np.tile(np.linspace(16, 235, width), (height, 1))
    assert np.abs(decoded - expected).mean() < 3  # the ramp survives, left dark, right bright


def test_a_short_frame_file_is_an_error_not_a_garbled_picture(tmp_path: Path) -> None:
    raw = tmp_path / "frame.yuv"
    raw.write_bytes(bytes(100))
    with pytest.raises(ValueError, match="yuv420p frame has"):
        read_yuv420p(raw, 64, 64)

"""Pure builders of ffmpeg argument lists and filter commands (table-tested, no I/O).

Arguments are always lists handed to exec, never a shell string; every value placed in them has
been validated against a control descriptor before it gets here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.stream.motion_frames import grey_output_args
from agent.stream.still import still_output_args

# The machine-readable timestamp: a strip of STAMP_BITS black/white blocks across the top of the
# frame, bit k (from the left) being bit k of the wall-clock milliseconds modulo 2**STAMP_BITS.
# Readers (tests, benchmarks) recover the time without OCR; see `decode_stamp`.
STAMP_BITS = 32
STAMP_HEIGHT = 24

# Controls the `eq` and `hue` filters change while ffmpeg runs (through the zmq filter).
EQ_CONTROLS = ("brightness", "contrast", "saturation", "gamma")
HUE_CONTROLS = {"hue": "h"}


@dataclass(frozen=True)
class TestPatternParams:
    """Everything the test-pattern pipeline is built from."""

    __test__ = False  # a pytest collection hint, not a test

    width: int
    height: int
    fps: int
    bitrate_kbps: int
    keyframe_interval_s: float
    pattern: str
    hflip: bool
    vflip: bool
    brightness: float
    contrast: float
    saturation: float
    gamma: float
    hue: float
    moving_box: bool = False
    motion_fps: float = 5.0  # rate of the grey frames motion detection reads

    @property
    def gop(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval_s))

    @property
    def source(self) -> str:
        """The lavfi source: `still` is SMPTE bars, which have no moving part."""
        return "smptebars" if self.pattern == "still" else self.pattern


def _escape_option(value: str) -> str:
    # Inside a filter option ':' separates options, and the graph parser takes one more level
    # of backslashes: ':' becomes '\\:' (ffmpeg-filters(1), "Notes on filtergraph escaping").
    if any(c in value for c in "\\',;[]"):
        raise ValueError(f"unsupported character in filter option {value!r}")
    return value.replace(":", "\\\\:")


# The `still` pattern's sensor noise: temporal, like a real sensor's (a mean absolute difference
# of about 6 grey levels between frames).
STILL_NOISE = "noise=alls=10:allf=t"
# The box `moving_box` draws: a sixth of the picture's height, across the picture in 3 s.
BOX_CROSSING_S = 3.0


def motion_rate_filter(fps: float, motion_fps: float) -> str:
    """Every n-th frame for motion detection (`framestep`, with a trailing comma; empty for all
    of them): exactly the analysis rate, without the `fps` filter's duplicates and drops when a
    webcam's timing wanders. ffmpeg hands each such frame to its output at the end of its group
    (measured: 45 ms + n-1 frame intervals after it was made, with `fps` or `select` alike);
    writing every frame instead would cost the pusher 4.6 % of a core at 720p30 for 170 ms."""
    step = motion_step(fps, motion_fps)
    return f"framestep={step}," if step > 1 else ""


def motion_step(fps: float, motion_fps: float) -> int:
    """Every how many frames the grey output takes one."""
    return max(1, round(fps / motion_fps))


def grey_frame_delay_s(fps: float, motion_fps: float) -> float:
    """How long after its capture a grey frame is written, beyond processing: the rest of its
    group's frames (motion_rate_filter), which its capture time is taken back by."""
    return (motion_step(fps, motion_fps) - 1) / fps


def moving_box_chain(p: TestPatternParams) -> tuple[str, str]:
    """The box source (a chain of its own) and the overlay that moves it, on while
    `moving_box` is (`overlay@box enable` through zmq). Placed before the wall-clock pts, where
    the box's frames and the scene's share one timeline from zero. `shortest` because the box
    source never ends: without it the graph outlives a scene that does (a `-t` input)."""
    side = max(8, p.height // 6)
    travel = max(1, p.width - side)
    speed = round(travel / BOX_CROSSING_S, 3)
    source = f"color=c=white:s={side}x{side}:r={p.fps}[box];"
    overlay = (
        f"[box]overlay@box=x='abs(mod(t*{speed},{2 * travel})-{travel})':y=(H-h)/2"
        f":eval=frame:repeatlast=1:shortest=1:enable={int(p.moving_box)},"
    )
    return source, overlay


def pattern_filtergraph(
    p: TestPatternParams, zmq_endpoint: str, motion_size: tuple[int, int] | None = None
) -> str:
    """Filter graph: the moving box, wall-clock pts, live eq/hue, flips, the bit strip and a
    readable clock; outputs [encoded] and [still], and [motion] (grey, `motion_size`, at the
    motion rate) when asked."""
    flips = ("hflip," if p.hflip else "") + ("vflip," if p.vflip else "")
    stamp = f"255*mod(floor(floor(T*1000)/pow(2,floor(X*{STAMP_BITS}/W))),2)"  # bit k of the ms
    clock = r"%{pts\:gmtime\:0\:%H\\\:%M\\\:%S}.%{eif\:mod(t*1000\,1000)\:d\:3}"
    box_source, box_overlay = moving_box_chain(p)
    noise = f",{STILL_NOISE}" if p.pattern == "still" else ""
    motion = ""
    if motion_size is not None:
        rate = motion_rate_filter(p.fps, p.motion_fps)
        motion = f";[motionsrc]{rate}scale={motion_size[0]}:{motion_size[1]},format=gray[motion]"
    return (
        box_source + f"[0:v]format=yuv420p{noise}[scene];[scene]" + box_overlay +
        # Frames carry the wall clock (in microseconds) as pts from here on, so the stamp and
        # the clock show when the frame was made, not when ffmpeg started.
        "settb=AVTB,setpts=RTCTIME,"
        f"zmq=bind_address={_escape_option(zmq_endpoint)},"
        f"eq@eq=brightness={p.brightness}:contrast={p.contrast}"
        f":saturation={p.saturation}:gamma={p.gamma},"
        f"hue@hue=h={p.hue},"
        f"{flips}split[picture][strip];"
        f"[strip]crop=iw:{STAMP_HEIGHT}:0:0,geq=lum='{stamp}':cb=128:cr=128[stamp];"
        "[picture][stamp]overlay=0:0,"
        f"drawtext=font=Mono:fontsize={max(12, p.height // 24)}:fontcolor=white:box=1"
        f":boxcolor=black@0.6:x=8:y={STAMP_HEIGHT + 8}:text='{clock}',"
        # The encoder gets timestamps from zero on a regular grid, one frame interval apart
        # (-re paces them in real time). The wall-clock ones above can repeat or jitter by a few
        # microseconds, which became duplicate RTP timestamps ("Non-monotonous DTS") and
        # irregular HLS parts; the picture keeps the wall clock it was stamped with.
        "setpts=N/FRAME_RATE/TB,"
        + ("split=3[encoded][still][motionsrc]" if motion else "split=2[encoded][still]")
        + motion
    )


def x264_live_args(gop: int, bitrate_kbps: int) -> list[str]:
    """libx264 for live viewing: low latency, baseline profile, a keyframe exactly every GOP."""
    return [
        "-c:v", "libx264",
        "-preset", "ultrafast",
        "-tune", "zerolatency",
        "-profile:v", "baseline",
        "-pix_fmt", "yuv420p",
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",  # keyframes exactly every GOP, so recordings cut predictably
        "-b:v", f"{bitrate_kbps}k",
        "-maxrate", f"{bitrate_kbps}k",
        "-bufsize", f"{bitrate_kbps}k",
    ]  # fmt: skip


def publish_args(publish_urls: str | Sequence[str], rtsp_transport: str = "tcp") -> list[str]:
    """The RTSP output: one URL, or several fed by ffmpeg's tee muxer from one encode (the
    viewers' path and the recorded path; see mediamtx/mediamtx.yml). URLs come with their
    credentials percent-encoded, so they hold none of tee's separators ('|', '[', ']')."""
    urls = [publish_urls] if isinstance(publish_urls, str) else list(publish_urls)
    if len(urls) == 1:
        return ["-f", "rtsp", "-rtsp_transport", rtsp_transport, urls[0]]
    if any(c in url for url in urls for c in "|[]\\' "):
        raise ValueError("a publish URL holds a character the tee muxer cannot take")
    slaves = "|".join(f"[f=rtsp:rtsp_transport={rtsp_transport}]{url}" for url in urls)
    return ["-f", "tee", slaves]


def pattern_pusher_args(
    p: TestPatternParams,
    zmq_endpoint: str,
    publish_url: str | Sequence[str],
    still_path: str,
    rtsp_transport: str = "tcp",
    motion: tuple[str, int, int] | None = None,
) -> list[str]:
    """ffmpeg generating the test pattern and publishing H.264 to MediaMTX over RTSP.

    A second output keeps the latest frame, raw, at ``still_path`` (replaced atomically at
    every frame): a picture is then one JPEG encode of the current frame, with no second RTSP
    connection and no wait for a keyframe. Raw costs the pusher ~2 % of a core; a JPEG per
    frame would cost ~10 %. `motion` (path, width, height) adds the grey frames motion
    detection reads.
    """
    motion_size = (motion[1], motion[2]) if motion else None
    motion_output = ["-map", "[motion]", *grey_output_args(motion[0])] if motion else []
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostats",
        "-nostdin",
        "-y",  # the still file of the previous pusher is replaced, not asked about
        "-loglevel", "warning",
        "-re",  # pace the synthetic source at real time, like a sensor
        "-f", "lavfi",
        "-i", f"{p.source}=size={p.width}x{p.height}:rate={p.fps}",
        "-filter_complex", pattern_filtergraph(p, zmq_endpoint, motion_size),
        "-map", "[encoded]",
        "-fps_mode", "passthrough",
        *x264_live_args(p.gop, p.bitrate_kbps),
        *publish_args(publish_url, rtsp_transport),
        "-map", "[still]",
        *still_output_args(still_path),
        *motion_output,
    ]  # fmt: skip


def v4l2_pusher_args(
    device: str,
    input_format: str,
    width: int,
    height: int,
    fps: int,
    bitrate_kbps: int,
    keyframe_interval_s: float,
    publish_url: str | Sequence[str],
    still_path: str,
    rtsp_transport: str = "tcp",
    motion: tuple[str, int, int] | None = None,
    motion_fps: float = 5.0,
) -> list[str]:
    """ffmpeg reading a V4L2 camera: its own H.264 copied, or MJPEG/raw encoded with libx264;
    `motion` (path, width, height) adds the grey frames motion detection reads."""
    gop = max(1, round(fps * keyframe_interval_s))
    motion_output: list[str] = []
    if motion is not None:
        rate = motion_rate_filter(fps, motion_fps)
        motion_output = ["-map", "0:v", "-vf", f"{rate}scale={motion[1]}:{motion[2]}",
                         *grey_output_args(motion[0])]  # fmt: skip
    # H.264 from the camera's own encoder is copied, never transcoded.
    copy = ["-c:v", "copy"]
    video = copy if input_format == "h264" else x264_live_args(gop, bitrate_kbps)
    return [
        "ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-y", "-loglevel", "warning",
        "-f", "v4l2", "-input_format", input_format,
        "-video_size", f"{width}x{height}", "-framerate", str(fps), "-i", device,
        "-map", "0:v", *video, *publish_args(publish_url, rtsp_transport),
        "-map", "0:v", *still_output_args(still_path),
        *motion_output,
    ]  # fmt: skip


def jpeg_quality_scale(quality: int) -> int:
    """JPEG quality 1-100 (100 best) as ffmpeg's mjpeg -q:v 2-31 (2 best)."""
    return round(2 + (100 - quality) * 29 / 99)


def still_to_jpeg_args(
    raw_path: str, width: int, height: int, pix_fmt: str, quality: int, output: str
) -> list[str]:
    """One raw frame to a JPEG file (the output name may have any extension)."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", pix_fmt, "-video_size", f"{width}x{height}",
        "-i", raw_path,
        "-frames:v", "1",
        "-c:v", "mjpeg", "-q:v", str(jpeg_quality_scale(quality)),
        "-f", "mjpeg", "-y", output,
    ]  # fmt: skip


def live_filter_commands(values: Mapping[str, object]) -> list[str]:
    """zmq filter commands (`target command argument`) for the live controls in ``values``."""
    commands = [f"eq@eq {name} {values[name]}" for name in EQ_CONTROLS if name in values]
    commands += [
        f"hue@hue {option} {values[name]}"
        for name, option in HUE_CONTROLS.items()
        if name in values
    ]
    if "moving_box" in values:
        commands.append(f"overlay@box enable {int(bool(values['moving_box']))}")
    return commands


def decode_stamp(row: bytes, width: int, now_ms: int) -> int:
    """Wall-clock milliseconds from one row of luma through the bit strip.

    ``now_ms`` resolves the modulo: the stamp is taken as the value nearest to it.
    """
    bits = 0
    block = width / STAMP_BITS
    for k in range(STAMP_BITS):
        centre = int((k + 0.5) * block)
        if row[centre] > 127:
            bits |= 1 << k
    period = 1 << STAMP_BITS
    base = now_ms - (now_ms % period)
    candidates = (base - period + bits, base + bits, base + period + bits)
    return min(candidates, key=lambda c: abs(c - now_ms))

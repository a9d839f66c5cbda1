"""`camera-agent doctor`: what is there and what answers, in one report.

It replaces the usual hand checks (`v4l2-ctl --list-devices`, `rpicam-hello`, `mosquitto_sub`,
`curl` on MediaMTX's API). It never connects to the broker over MQTT as the agent: the broker
uses the certificate's CN as client id, so that would take the running agent's session. It
checks the mutual-TLS handshake instead, which is where misconfigurations show.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.camera.detect import info_args, libcamera_cameras, parse_info, video_nodes
from agent.camera.v4l2_ctl import (
    list_controls_args,
    list_formats_args,
    parse_controls,
    parse_formats,
)
from agent.checks import Finding
from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.mqtt.tls import certificate_identity, client_context
from agent.process import CommandRunner, ProcessStartError, run_command
from agent.stream.mediamtx import MediaMtxApi


async def check_cameras(dev: Path, run: CommandRunner) -> list[Finding]:
    findings = []
    count = libcamera_cameras()
    findings.append(
        Finding(
            "libcamera",
            True,
            f"{count} camera(s)" if count else "none (or picamera2 not installed)",
        )
    )
    nodes = await video_nodes(dev)
    if not nodes:
        findings.append(Finding("v4l2", True, f"no {dev}/video* nodes"))
    for node in nodes:
        try:
            info = await run(info_args(str(node)))
        except ProcessStartError:
            findings.append(Finding("v4l2", False, "v4l2-ctl missing (Debian: v4l-utils)"))
            break
        if info.returncode != 0:
            findings.append(Finding(f"v4l2 {node}", False, info.stderr.strip() or "cannot open"))
            continue
        node_info = parse_info(info.stdout)
        card = node_info.card
        reason = node_info.unusable_reason()
        if reason is not None:
            findings.append(Finding(f"v4l2 {node}", True, f"{card}: {reason}"))
            continue
        formats = parse_formats((await run(list_formats_args(str(node)))).stdout)
        controls = parse_controls((await run(list_controls_args(str(node)))).stdout)
        summary = ", ".join(
            f"{f} up to {max(s)[0]}x{max(s)[1]}" if s else f for f, s in formats.items()
        )
        detail = f"{card}: {summary or 'no formats'}; {len(controls)} controls"
        findings.append(Finding(f"v4l2 {node}", True, detail))
    return findings


async def check_encoder(run: CommandRunner) -> Finding:
    try:
        result = await run(["ffmpeg", "-hide_banner", "-encoders"])
    except ProcessStartError:
        return Finding("encoder", False, "ffmpeg is not installed")
    names = [n for n in ("libx264", "h264_v4l2m2m") if f" {n} " in result.stdout]
    if "libx264" not in names:
        return Finding("encoder", False, "ffmpeg has no libx264")
    return Finding("encoder", True, "ffmpeg with " + ", ".join(names))


def _tls_handshake(host: str, port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.settimeout(0.5)
        # With TLS 1.3 the broker's verdict on our certificate arrives after the handshake.
        with contextlib.suppress(TimeoutError):
            tls.recv(1)
        return str(tls.version())


async def check_broker(config: AgentConfig) -> Finding:
    m = config.mqtt
    try:
        context = client_context(m.ca, m.cert, m.key)
        identity = certificate_identity(m.cert)
        version = await asyncio.to_thread(_tls_handshake, m.host, m.port, context)
    except ConfigError as err:
        return Finding("broker", False, str(err))
    except (OSError, ssl.SSLError) as err:
        return Finding("broker", False, f"{m.host}:{m.port}: {err}")
    return Finding("broker", True, f"{m.host}:{m.port} accepts {identity} over {version}")


async def check_mediamtx(config: AgentConfig) -> Finding:
    s = config.stream
    api = MediaMtxApi(s.api_url, s.username, s.password.get_secret_value())
    status = await api.path(s.url.rsplit("/", 1)[-1])
    if status is None:
        return Finding("mediamtx", False, api.last_error or "unreachable")
    state = "live" if status.online else "reachable, no stream yet"
    return Finding("mediamtx", True, f"{s.api_url}: {state}")


async def diagnose(
    config: AgentConfig, dev: Path = Path("/dev"), run: CommandRunner = run_command
) -> list[Finding]:
    checks: list[Callable[[], Awaitable[list[Finding]]]] = [
        lambda: check_cameras(dev, run),
        lambda: _one(check_encoder(run)),
        lambda: _one(check_broker(config)),
        lambda: _one(check_mediamtx(config)),
    ]
    findings: list[Finding] = []
    for check in checks:
        findings += await check()
    return findings


async def _one(finding: Awaitable[Finding]) -> list[Finding]:
    return [await finding]

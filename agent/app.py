"""Builds the agent's components, runs them in one TaskGroup, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from agent.camera.base import CameraBackend, StreamTarget
from agent.camera.testsrc import TestPatternCamera
from agent.config import AgentConfig
from agent.controls import CameraControls, ControlStore
from agent.errors import CommandError, ConfigError, ErrorCode
from agent.mqtt.client import BrokerLink, InboundMessage
from agent.mqtt.tls import certificate_identity, client_context
from agent.mqtt.topics import Topics
from agent.protocol import ActionCommand
from agent.router import Answer, CommandRouter
from agent.status import AgentStatus
from agent.stream.mediamtx import MediaMtxApi
from agent.stream.supervisor import (
    StreamReport,
    StreamState,
    StreamSupervisor,
    SupervisorSettings,
)

log = logging.getLogger(__name__)


def select_backend(config: AgentConfig) -> tuple[CameraBackend, list[str]]:
    """The configured camera backend, and warnings for `state` when it is a fallback."""
    cam = config.camera
    if cam.backend == "testsrc":
        return TestPatternCamera(cam.width, cam.height, cam.fps), []
    if cam.backend == "auto":
        warning = "no camera backend detected in this release; using the test pattern"
        return TestPatternCamera(cam.width, cam.height, cam.fps), [warning]
    raise ConfigError(
        f"camera.backend = {cam.backend!r} is not available in this release;"
        " use 'testsrc' or 'auto'"
    )


class AgentApp:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        config = self._config
        topics = Topics(config.mqtt.base_topic)
        tls = client_context(config.mqtt.ca, config.mqtt.cert, config.mqtt.key)
        identity = certificate_identity(config.mqtt.cert)
        backend, warnings = select_backend(config)
        for warning in warnings:
            log.warning("%s", warning)

        link = BrokerLink(
            config.mqtt,
            tls,
            identity,
            subscriptions=(topics.settings, topics.action, topics.state),
            will_topic=topics.availability,
        )
        status = AgentStatus(config.camera.id, identity, topics, link, backend)
        status.warnings.extend(warnings)
        background: set[asyncio.Task[None]] = set()

        def report(name: str, ok: bool, message: str, data: dict[str, Any]) -> None:
            task = asyncio.create_task(status.emit(name, ok, message, data))
            background.add(task)
            task.add_done_callback(background.discard)
            status.mark_changed()

        stream = build_supervisor(config, backend, report, status.mark_changed)
        status.stream_snapshot = stream.snapshot
        store = ControlStore(config.storage.state_dir / "controls.json")
        controls = CameraControls(backend, store, stream, on_change=status.mark_changed)
        router = CommandRouter(
            config.camera.id,
            topics,
            link,
            controls,
            # picture, record, stop and trim arrive with the jobs release
            actions={"stream": StreamActions(stream, config.stream.start_timeout_s).handle},
            max_payload_bytes=config.mqtt.max_payload_bytes,
        )

        async def on_message(message: InboundMessage) -> None:
            if message.topic == topics.state:
                if status.is_twin_state(message.payload):
                    link.report_twin()
                return
            await router.handle(message)

        await backend.start()
        await controls.restore()
        try:
            async with asyncio.TaskGroup() as tasks:
                link_task = tasks.create_task(
                    link.run(status.publish_connected, on_message), name="mqtt"
                )
                status_task = tasks.create_task(status.run(), name="status")
                stream_task = tasks.create_task(stream.run(), name="stream")
                if config.stream.autostart:
                    stream.start()
                await self._stop.wait()
                log.info("stopping")
                stream_task.cancel()  # its cleanup stops the pusher's process group
                status_task.cancel()
                if link.connected.is_set():
                    await status.flush()
                    await status.publish_offline()
                    await link.drain()
                link_task.cancel()
        finally:
            await backend.stop()


def build_supervisor(
    config: AgentConfig,
    backend: CameraBackend,
    report: StreamReport,
    changed: Callable[[], None],
) -> StreamSupervisor:
    s = config.stream
    password = s.password.get_secret_value()
    return StreamSupervisor(
        backend,
        MediaMtxApi(s.api_url, s.username, password),
        StreamTarget(s.url, s.username, password, s.rtsp_transport),
        SupervisorSettings(
            restart_min_s=s.restart_min_s,
            restart_max_s=s.restart_max_s,
            start_timeout_s=s.start_timeout_s,
            stall_timeout_s=s.stall_timeout_s,
        ),
        report,
        changed,
    )


class StreamActions:
    """`stream start|stop|restart`: on-demand streaming saves CPU when nobody watches."""

    def __init__(self, stream: StreamSupervisor, timeout_s: float) -> None:
        self._stream = stream
        self._timeout_s = timeout_s

    async def handle(self, command: ActionCommand) -> Answer:
        op = command.params["op"]
        url = self._stream.snapshot()["url"]
        if op == "stop":
            self._stream.stop()
            return Answer("stream.stopped", "SUCCESS: stream stopped", {"url": url})
        began = time.monotonic()
        if op == "restart" and self._stream.state is StreamState.ONLINE:
            downtime = await self._stream.restart()
        else:
            self._stream.start()
            try:
                await self._stream.wait_online(self._timeout_s + 5)
            except TimeoutError:
                raise CommandError(
                    ErrorCode.STREAM_ERROR,
                    f"stream did not come online: {self._stream.last_error or 'timeout'}",
                ) from None
            downtime = time.monotonic() - began
        verb = "restarted" if op == "restart" else "started"
        return Answer(
            f"stream.{verb}",
            f"SUCCESS: stream {verb} at {url} in {downtime:.2f} s",
            {"url": url, "downtime_s": round(downtime, 3)},
        )


async def run_agent(config: AgentConfig) -> None:
    app = AgentApp(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, app.request_stop)
    await app.run()

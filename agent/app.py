"""Builds the agent's components, runs them in one TaskGroup, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from agent.camera.base import CameraBackend
from agent.camera.testsrc import TestPatternCamera
from agent.config import AgentConfig
from agent.controls import CameraControls
from agent.errors import ConfigError
from agent.mqtt.client import BrokerLink, InboundMessage
from agent.mqtt.tls import certificate_identity, client_context
from agent.mqtt.topics import Topics
from agent.router import CommandRouter
from agent.status import AgentStatus

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
        controls = CameraControls(backend, on_change=status.mark_changed)
        router = CommandRouter(
            config.camera.id,
            topics,
            link,
            controls,
            actions={},  # picture, record, stop, trim and stream arrive with later releases
            max_payload_bytes=config.mqtt.max_payload_bytes,
        )

        async def on_message(message: InboundMessage) -> None:
            if message.topic == topics.state:
                if status.is_twin_state(message.payload):
                    link.report_twin()
                return
            await router.handle(message)

        await backend.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                link_task = tasks.create_task(
                    link.run(status.publish_connected, on_message), name="mqtt"
                )
                status_task = tasks.create_task(status.run(), name="status")
                await self._stop.wait()
                log.info("stopping")
                status_task.cancel()
                if link.connected.is_set():
                    await status.flush()
                    await status.publish_offline()
                    await link.drain()
                link_task.cancel()
        finally:
            await backend.stop()


async def run_agent(config: AgentConfig) -> None:
    app = AgentApp(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, app.request_stop)
    await app.run()

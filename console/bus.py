"""The console's one MQTT connection: every camera's reports in, people's commands out.

It is the agent's own `BrokerLink` (reconnects with backoff, a persistent session, an outbox that
keeps what was published while the broker was away and sends it after the reconnect), with the
console's certificate and no will. So a command a person sends while the broker restarts waits
in the outbox, reaches the camera when the broker is back, and its answer comes back by id; if no
answer comes within `answer_timeout_s` the person is told the outcome is unknown, never that it
failed or succeeded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.messaging import InboundMessage
from agent.mqtt.client import BrokerLink
from agent.mqtt.tls import certificate_identity, client_context
from console.config import ConsoleConfig
from console.fleet import Camera, Fleet, split_topic, subscriptions

log = logging.getLogger(__name__)

# Events that report a job's course rather than answer a command; they carry the request's id
# too, and may even arrive before the `job.queued` answer.
JOB_COURSE = frozenset({"job.running", "job.progress", "job.succeeded", "job.failed"})
CHANNELS = frozenset({"settings", "action"})

ChangeHandler = Callable[[Camera, str, dict[str, Any] | None], Awaitable[None]]
ConnectionHandler = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True)
class Unanswered:
    """No answer within the timeout: the command may or may not have run."""

    waited_s: float


class Bus:
    def __init__(self, config: ConsoleConfig, fleet: Fleet) -> None:
        self._config = config
        self._fleet = fleet
        self.identity = certificate_identity(config.mqtt.cert)
        self.link = BrokerLink(
            config.mqtt,
            client_context(config.mqtt.ca, config.mqtt.cert, config.mqtt.key),
            self.identity,
            subscriptions(),
            will_topic=None,
        )
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    async def run(self, on_change: ChangeHandler, on_connection: ConnectionHandler) -> None:
        """Stay connected until cancelled; ``on_change`` hears of every camera change,
        ``on_connection`` of the broker going and coming back."""
        watcher = asyncio.create_task(self._watch_connection(on_connection))

        async def message(inbound: InboundMessage) -> None:
            await self._message(inbound, on_change)

        try:
            await self.link.run(self._connected, message)
        finally:
            watcher.cancel()

    async def _connected(self) -> None:
        log.info("console %s connected; %d cameras known", self.identity, len(self._fleet.cameras))

    async def _watch_connection(self, on_connection: ConnectionHandler) -> None:
        while True:
            await self.link.connected.wait()
            await on_connection(True)
            await self.link.disconnected.wait()
            await on_connection(False)

    async def _message(self, message: InboundMessage, on_change: ChangeHandler) -> None:
        try:
            change = self._fleet.apply(message.topic, message.payload)
            if change is not None:
                camera, what, event = change
                if event is not None:
                    self._match_answer(event)
                await on_change(camera, what, event)
        finally:
            message.done()

    def _match_answer(self, event: dict[str, Any]) -> None:
        command_id = event.get("id")
        if not isinstance(command_id, str) or event.get("event") in JOB_COURSE:
            return
        waiter = self._pending.get(command_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    async def command(
        self, base: str, channel: str, body: dict[str, Any], by: str
    ) -> dict[str, Any] | Unanswered:
        """Send one command for ``by`` and wait for the camera's answer."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        if split_topic(f"{base}/state") != (base, "state"):
            raise ValueError(f"not a camera topic base: {base!r}")
        command_id = f"console-{uuid.uuid4().hex[:16]}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = waiter
        payload = json.dumps({**body, "id": command_id, "by": by}).encode()
        timeout = self._config.console.answer_timeout_s
        try:
            await self.link.publish(f"{base}/control/{channel}", payload)
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return Unanswered(timeout)
        finally:
            del self._pending[command_id]

"""In-memory fakes of the agent's boundaries, for unit tests of the logic behind them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agent.messaging import Delivery
from agent.protocol import ACTION_PARSERS, ActionCommand
from agent.router import ActionHandler, Answer
from tests.support import Received


@dataclass
class InMemoryBus:
    """Stands in for `BrokerLink.publish`: records what the agent would publish."""

    published: list[Received] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        delivery: Delivery = Delivery.ESSENTIAL,
    ) -> None:
        self.published.append(Received(topic, payload, retain, correlation_data))
        self._arrived.set()

    async def answer(self, command_id: str, topic: str) -> Any:
        """The first message on ``topic`` for ``command_id``, waiting (5 s) for it."""
        async with asyncio.timeout(5):
            while not (found := [a for a in self.on(topic) if a["id"] == command_id]):
                self._arrived.clear()
                await self._arrived.wait()
        return found[0]

    def on(self, topic: str) -> list[Any]:
        return [m.json() for m in self.published if m.topic == topic]


def every_action(**handlers: ActionHandler) -> dict[str, ActionHandler]:
    """A handler for every action the protocol knows (the router insists): the given ones, and
    for the rest one that answers with the parameters it got."""

    async def echo(command: ActionCommand) -> Answer:
        return Answer(f"{command.action}.done", "SUCCESS", {"params": command.params})

    return {name: handlers.get(name, echo) for name in ACTION_PARSERS}

"""In-memory fakes of the agent's boundaries, for unit tests of the logic behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.messaging import Delivery
from tests.support import Received


@dataclass
class InMemoryBus:
    """Stands in for `BrokerLink.publish`: records what the agent would publish."""

    published: list[Received] = field(default_factory=list)

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

    def on(self, topic: str) -> list[Any]:
        return [m.json() for m in self.published if m.topic == topic]

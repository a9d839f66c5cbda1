"""The seam between the transport and the rest of the agent.

Router, status and jobs speak to the broker only through these types, so none of them imports
the MQTT client (and tests drive them with an in-memory publisher).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class InboundMessage:
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    # Called once the message is handled (its answer queued): only then is it acknowledged to
    # the broker, so a command the agent dies in the middle of is delivered again at restart.
    done: Callable[[], None] = _nothing


class Delivery(enum.IntEnum):
    """How hard an outbound message is kept while the broker is away; the lowest goes first.

    A retained message needs no class: a newer one for the same topic replaces it, and the
    agent republishes its retained topics on every connect.
    """

    PROGRESS = 0  # job.progress: the next one, or the job's end, tells more
    EVENT = 1  # stream.* and job.running: the retained state tells the same after a reconnect
    ESSENTIAL = 2  # answers and terminal job events: never dropped


class Publisher(Protocol):
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        delivery: Delivery = Delivery.ESSENTIAL,
    ) -> None: ...

"""Outbound messages kept across reconnects, in order, within a bound.

aiomqtt makes a new paho client on every connect, so whatever paho held when a connection
died is gone with it. The outbox keeps each message until the broker acknowledged it (PUBACK):
what was handed to a connection that died is sent again first, in its original order, on the
next one. QoS 1 is at-least-once, so a message whose PUBACK was lost arrives twice; answers
carry the command id and job events the job id, which is what clients deduplicate on.

Bounded: a retained message replaces a pending one for the same topic, and past `limit`
messages the oldest `job.progress` goes first, then the oldest other droppable event. Answers
and terminal job events are never dropped; they are bounded by what produces them (a command
answered needs the broker to have delivered it, and jobs are limited per kind).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass

from agent.messaging import Delivery

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Outgoing:
    seq: int
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None
    delivery: Delivery

    def label(self) -> str:
        """What the message is, for the log: its event name, else its topic."""
        try:
            body = json.loads(self.payload)
        except ValueError:
            return self.topic
        name = body.get("event") if isinstance(body, dict) else None
        return str(name) if name else self.topic


class Outbox:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._seq = 0
        self._waiting: deque[Outgoing] = deque()  # not yet handed to the current connection
        self._unacked: dict[int, Outgoing] = {}  # handed over, no PUBACK yet
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._unacked)

    def put(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        correlation_data: bytes | None,
        delivery: Delivery,
    ) -> None:
        if retain:
            # Only the newest value of a retained topic matters to anyone who reads it later.
            self._waiting = deque(m for m in self._waiting if not (m.retain and m.topic == topic))
        self._seq += 1
        message = Outgoing(self._seq, topic, payload, retain, correlation_data, delivery)
        self._waiting.append(message)
        if len(self) > self._limit:
            self._shed()
        self._ready.set()
        self._settled.clear()

    def _shed(self) -> None:
        for delivery in (Delivery.PROGRESS, Delivery.EVENT):
            victim = next((m for m in self._waiting if m.delivery is delivery), None)
            if victim is not None:
                self._waiting.remove(victim)
                if not self._dropped:
                    log.warning(
                        "outbox full (%d messages waiting for the broker): dropping the oldest "
                        "job.progress first, then other events; answers and job ends are kept",
                        self._limit,
                    )
                self._dropped[victim.label()] += 1
                return
        # Only answers and job ends left: kept, over the limit (see the module docstring).

    async def take(self) -> Outgoing:
        """The next message to send; it counts as unacknowledged until `acked`."""
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        message = self._waiting.popleft()
        self._unacked[message.seq] = message
        return message

    def acked(self, seq: int) -> None:
        self._unacked.pop(seq, None)
        if not self:
            self._settled.set()

    def rewind(self) -> None:
        """A new connection: what the last one did not acknowledge goes first, in order."""
        if self._unacked:
            resend = sorted(self._unacked.values(), key=lambda m: m.seq)
            self._unacked.clear()
            self._waiting.extendleft(reversed(resend))
            self._ready.set()
        if self._dropped:
            summary = ", ".join(f"{n} {label}" for label, n in sorted(self._dropped.items()))
            log.warning("dropped while the broker was away (outbox full): %s", summary)
            self._dropped.clear()

    async def settled(self) -> None:
        """Return once the broker acknowledged everything put so far."""
        await self._settled.wait()

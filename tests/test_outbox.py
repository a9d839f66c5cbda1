"""The outbox's order and bounds (unit level; the broker restart itself is in test_resilience)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from agent.messaging import Delivery
from agent.mqtt.outbox import Outbox


def event(name: str, n: int = 0) -> bytes:
    return json.dumps({"event": name, "n": n}).encode()


def put(box: Outbox, name: str, n: int = 0, delivery: Delivery = Delivery.ESSENTIAL) -> None:
    box.put("camera/status", event(name, n), retain=False, correlation_data=None, delivery=delivery)


async def take_all(box: Outbox) -> list[tuple[str, int]]:
    taken = []
    while len(box) and (message := await asyncio.wait_for(box.take(), 1)):
        body = json.loads(message.payload) if message.topic == "camera/status" else {}
        taken.append((body.get("event", message.topic), body.get("n", 0)))
        box.acked(message.seq)
    return taken


async def test_unacknowledged_messages_go_first_in_their_order_on_the_next_connection() -> None:
    box = Outbox()
    for n in range(3):
        put(box, "settings.applied", n)
    first, _second = await box.take(), await box.take()
    box.acked(first.seq)  # the second's PUBACK was lost with the connection
    put(box, "job.succeeded", 9)
    box.rewind()
    assert await take_all(box) == [("settings.applied", 1), ("settings.applied", 2),
                                   ("job.succeeded", 9)]  # fmt: skip


async def test_a_newer_retained_message_replaces_the_waiting_one() -> None:
    box = Outbox()
    box.put("camera/state", b"old", retain=True, correlation_data=None, delivery=Delivery.EVENT)
    put(box, "stream.down")
    box.put("camera/state", b"new", retain=True, correlation_data=None, delivery=Delivery.EVENT)
    taken = [await box.take() for _ in range(2)]
    assert [(m.topic, m.payload) for m in taken][1] == ("camera/state", b"new")
    assert len(box) == 2  # both unacknowledged, nothing else waiting


async def test_past_the_limit_progress_goes_first_then_events_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = Outbox(limit=10)
    caplog.set_level(logging.WARNING)
    for n in range(5):
        put(box, "job.progress", n, Delivery.PROGRESS)
        put(box, "stream.down", n, Delivery.EVENT)
    for n in range(8):
        put(box, "settings.applied", n)
    # 18 put, 10 kept: the five progress reports went first, then the three oldest events.
    assert len(box) == 10
    box.rewind()
    assert "5 job.progress" in caplog.text and "3 stream.down" in caplog.text
    kept = await take_all(box)
    assert kept[:2] == [("stream.down", 3), ("stream.down", 4)]
    assert [n for name, n in kept if name == "settings.applied"] == list(range(8))
    for n in range(20):  # answers alone: over the limit, all kept
        put(box, "settings.applied", n)
    assert len(box) == 20


async def test_settled_waits_for_every_acknowledgement() -> None:
    box = Outbox()
    put(box, "job.succeeded")
    message = await box.take()
    waiter = asyncio.create_task(box.settled())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.acked(message.seq)
    await asyncio.wait_for(waiter, 1)

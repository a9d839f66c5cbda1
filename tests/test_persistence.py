"""Control values reach the disk behind the answer: no sync on the event loop, coalesced, and
flushed on a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

from agent.camera.testsrc import TestPatternCamera
from agent.controls import CameraControls, ControlStore
from agent.messaging import InboundMessage
from agent.mqtt.topics import Topics
from agent.router import CommandRouter
from tests.conftest import start_agent
from tests.fakes import InMemoryBus, every_action
from tests.support import AgentProcess, Probe

TOPICS = Topics("camera")


def router_with_store(
    path: Path, delay_s: float
) -> tuple[CommandRouter, InMemoryBus, ControlStore]:
    bus = InMemoryBus()
    store = ControlStore(path, delay_s=delay_s)
    controls = CameraControls(TestPatternCamera(640, 480, 25), store, None, lambda: None)
    router = CommandRouter(
        "cam", TOPICS, bus, controls, actions=every_action(), max_payload_bytes=1024
    )
    return router, bus, store


async def test_no_sync_on_the_event_loop_and_a_burst_is_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    syncs: list[bool] = []  # one entry per fsync: was it on the loop's thread?
    real_fsync = os.fsync

    def watched_fsync(fd: int) -> None:
        syncs.append(threading.get_ident() == loop_thread)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    path = tmp_path / "controls.json"
    router, bus, store = router_with_store(path, delay_s=0.2)
    for n in range(20):  # a slider dragged in a UI
        payload = json.dumps({"id": f"h{n}", "set": {"hue": n}}).encode()
        await router.handle(InboundMessage(TOPICS.settings, payload))
    assert len(bus.on("camera/status")) == 20
    assert not path.exists()  # every answer left before the disk was touched
    async with asyncio.timeout(5):
        # A file another thread writes: there is no event to wait on.
        while not path.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert json.loads(path.read_text())["hue"] == 19
    assert syncs and not any(syncs), "an fsync ran on the event loop"
    assert len(syncs) == 2  # one write: the file, then its directory
    await store.close()


async def test_close_writes_what_is_pending_at_once(tmp_path: Path) -> None:
    path = tmp_path / "controls.json"
    router, _, store = router_with_store(path, delay_s=3600)
    await router.handle(InboundMessage(TOPICS.settings, b"saturation 1.5"))
    await store.close()
    assert json.loads(path.read_text())["saturation"] == 1.5


async def test_a_disk_that_refuses_the_write_keeps_the_change_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    router, bus, store = router_with_store(blocker / "controls.json", delay_s=0)
    await router.handle(InboundMessage(TOPICS.settings, b"gamma 2"))
    await store.close()
    (answer,) = bus.on("camera/status")
    assert answer["ok"] is True
    assert "could not save control values" in caplog.text


def test_a_change_answered_just_before_a_clean_stop_survives_the_restart(
    agent: AgentProcess, operator: Probe
) -> None:
    operator.publish("camera/control/settings", json.dumps({"id": "g", "set": {"gamma": 2.5}}))
    assert operator.wait_event(id="g")["ok"] is True
    assert agent.stop() == 0  # at once: within the write-behind delay
    operator.wait_for(lambda m: m.topic == "camera/availability" and m.payload == b"offline")
    operator.history.clear()  # only the restarted agent's state may answer below
    start_agent(agent, operator)
    state = operator.wait_for(
        lambda m: m.topic == "camera/state" and m.json()["controls"]["gamma"] == 2.5,
        what="gamma restored",
    )
    assert state.json()["controls"]["gamma"] == 2.5

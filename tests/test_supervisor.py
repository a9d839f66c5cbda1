"""StreamSupervisor's state machine with fake pushers: backoff and its reset, stalls, a pipeline
that cannot start, and a refused restart-class change rolled back.

The pushers and MediaMTX's API are fakes here (the state machine's timing is the subject); the
same supervisor runs against the real MediaMTX and ffmpeg in tests/test_stream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.camera.testsrc import TestPatternCamera
from agent.controls import CameraControls, ControlStore
from agent.errors import CameraError, CommandError, ErrorCode
from agent.stream.mediamtx import PathStatus
from agent.stream.outages import SETTINGS_CHANGE, STREAM_RESTART
from agent.stream.still import RawFrame
from agent.stream.supervisor import StreamState, StreamSupervisor, SupervisorSettings
from agent.stream.target import StreamTarget

TARGET = StreamTarget("rtsp://127.0.0.1:8554/cam", "agent", "pw")


class FakePusher:
    """A pusher that is 'publishing' until told to crash, stall or stop."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started_at = time.monotonic()
        self.publishing = True
        self.sent = 0
        self.stopped = False
        self._exit = asyncio.Event()
        self.code = 0

    @property
    def pid(self) -> int | None:
        return 1000 + self.number

    def crash(self) -> None:
        self.publishing = False
        self.code = -9
        self._exit.set()

    async def wait(self) -> int:
        await self._exit.wait()
        return self.code

    async def stop(self, grace_s: float = 3.0) -> int | None:
        self.stopped = True
        self.publishing = False
        self._exit.set()
        return 0

    def stderr_text(self, lines: int = 20) -> str:
        return f"pusher {self.number} ended"

    async def latest_frame(self) -> RawFrame:
        raise CameraError("no frames in a fake")

    def motion_frames(self) -> None:
        return None  # no grey frames: motion detection is tested with real pipelines

    async def apply_live(self, values: Mapping[str, object]) -> None:
        return None


@dataclass
class Factory:
    """Makes FakePushers; `plan` says what each new one does (by start order)."""

    # number -> "crash" | "stall" | "fail" | "bug"
    plan: dict[int, str] = field(default_factory=dict)
    pushers: list[FakePusher] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    happened: asyncio.Event = field(default_factory=asyncio.Event)  # a start, a state change

    async def __call__(self, target: StreamTarget) -> FakePusher:
        number = len(self.starts)
        self.starts.append(time.monotonic())
        self.happened.set()
        if self.plan.get(number) == "fail":
            raise CameraError("the camera is gone")
        if self.plan.get(number) == "bug":  # what nobody foresaw (a bug, an odd OS error)
            raise RuntimeError("something nobody foresaw")
        pusher = FakePusher(number)
        self.pushers.append(pusher)
        if self.plan.get(number) == "crash":  # dies before MediaMTX has its stream
            pusher.publishing = False
            asyncio.get_running_loop().call_later(0.02, pusher.crash)
        if self.plan.get(number) == "stall":
            pusher.publishing = False  # connected, but no bytes flow any more
            pusher.sent = 1
        return pusher


class FakeApi:
    """MediaMTX's path status as the current fake pusher makes it."""

    def __init__(self, factory: Factory) -> None:
        self._factory = factory
        self.last_error: str | None = None

    async def path(self, name: str) -> PathStatus:
        current = self._factory.pushers[-1] if self._factory.pushers else None
        online = (current is not None and current.publishing) or bool(current and current.sent)
        online = online and current is not None and not current._exit.is_set()
        if current is not None and current.publishing:
            current.sent += 1000
        return PathStatus(
            online, current.sent if current else 0, 0, "rtspSession" if online else None
        )


@dataclass
class Harness:
    factory: Factory
    supervisor: StreamSupervisor
    events: list[tuple[str, bool, str, dict[str, Any]]]


def harness(plan: dict[int, str], **settings: float) -> Harness:
    factory = Factory(plan)
    events: list[tuple[str, bool, str, dict[str, Any]]] = []
    defaults = {"restart_min_s": 0.05, "restart_max_s": 0.2, "start_timeout_s": 1.0,
                "stall_timeout_s": 0.3}  # fmt: skip

    def report(*event: Any) -> None:
        events.append(event)
        factory.happened.set()

    supervisor = StreamSupervisor(
        factory,
        FakeApi(factory),  # type: ignore[arg-type]
        TARGET,
        SupervisorSettings(**{**defaults, **settings}),
        report,
        factory.happened.set,  # every state change
    )
    return Harness(factory, supervisor, events)


async def until(h: Harness, condition: Any) -> None:
    """Until ``condition()`` holds, checked at every start and state change; 10 s at most."""
    async with asyncio.timeout(10):
        while not condition():
            h.factory.happened.clear()
            await h.factory.happened.wait()


@contextlib.asynccontextmanager
async def streaming(h: Harness) -> AsyncIterator[None]:
    """The supervisor running with the stream wanted; stopped and its loop ended after."""
    task = asyncio.create_task(h.supervisor.run())
    h.supervisor.start()
    try:
        yield
    finally:
        h.supervisor.stop()
        await h.supervisor.stopped()
        task.cancel()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.stream.supervisor.WATCH_POLL_S", 0.05)
    monkeypatch.setattr("agent.stream.supervisor.STABLE_AFTER_S", 0.5)


async def test_restarts_back_off_doubling_up_to_the_cap() -> None:
    h = harness(dict.fromkeys(range(6), "crash"))
    async with streaming(h):
        await until(h, lambda: len(h.factory.starts) >= 6)
        gaps = [b - a for a, b in zip(h.factory.starts, h.factory.starts[1:], strict=False)]
        # Each gap: the crash (~0.02 s after start) plus the backoff 0.05, 0.1, 0.2, 0.2 (capped);
        # the upper bounds leave room for a busy machine.
        for gap, delay in zip(gaps, (0.05, 0.1, 0.2, 0.2, 0.2), strict=False):
            assert delay <= gap < delay + 0.4, (gaps, delay)
        assert max(gaps) < 0.2 + 0.4  # capped: never 0.4, 0.8...
        downs = [e for e in h.events if e[0] == "stream.down"]
        assert len(downs) == 1  # once per outage, however many attempts


async def test_the_backoff_starts_over_after_a_run_that_stayed_up() -> None:
    h = harness({0: "crash", 1: "crash", 2: "crash", 4: "crash"}, restart_max_s=2.0)
    async with streaming(h):
        await until(h, lambda: len(h.factory.pushers) >= 4)
        stable = h.factory.pushers[3]
        await asyncio.sleep(0.6)  # longer than STABLE_AFTER_S online
        stable.crash()
        await until(h, lambda: len(h.factory.starts) >= 6)
        after_stable = h.factory.starts[4] - stable.started_at - 0.6
        after_one_more = h.factory.starts[5] - h.factory.starts[4]
        assert h.factory.starts[2] - h.factory.starts[1] >= 0.1  # it had grown before
        assert after_stable < 0.3  # the minimum (0.05) again, not 0.4 (a fourth failure)
        assert 0.05 <= after_one_more < 0.3  # one failure since: still the minimum


async def test_a_stalled_pusher_is_restarted_and_the_outage_logged() -> None:
    h = harness({1: "stall"})
    async with streaming(h):
        await until(h, lambda: h.supervisor.state is StreamState.ONLINE)
        h.factory.pushers[0].crash()
        await until(
            h, lambda: len(h.factory.pushers) >= 3 and h.supervisor.state is StreamState.ONLINE
        )
        assert h.factory.pushers[1].stopped  # killed for the stall, not left running
        reasons = [e[3]["reason"] for e in h.events if e[0] == "stream.down"]
        assert reasons[0] == "exited"
        assert any(e[0] == "stream.online" and "downtime_s" in e[3] for e in h.events)
        assert h.supervisor.outages.open is None  # closed when the stream came back
        assert h.supervisor.outages.cause_of(time.time() - 5, time.time()) == STREAM_RESTART


async def test_a_pipeline_that_cannot_start_is_failed_not_retried() -> None:
    h = harness({0: "fail"})
    async with streaming(h):
        await until(h, lambda: h.supervisor.state is StreamState.FAILED)
        failed = [e for e in h.events if e[0] == "stream.failed"]
        assert failed and "the camera is gone" in failed[0][2]
        assert not h.supervisor.wanted
        await asyncio.sleep(0.3)
        assert len(h.factory.starts) == 1  # no crash loop against a missing camera
        h.supervisor.start()  # `stream start` tries again
        await until(h, lambda: h.supervisor.state is StreamState.ONLINE)


async def test_an_unexpected_error_restarts_the_pipeline_instead_of_ending_the_agent() -> None:
    h = harness({0: "bug"})
    async with streaming(h):
        await until(h, lambda: h.supervisor.state is StreamState.ONLINE)
        (down,) = [e for e in h.events if e[0] == "stream.down"]
        assert down[3]["reason"] == "unexpected error"
        assert "something nobody foresaw" in down[2]
        assert len(h.factory.starts) == 2  # after the backoff, as after a crash


async def test_a_refused_restart_class_change_is_rolled_back_and_streams_again(
    tmp_path: Path,
) -> None:
    h = harness({1: "fail"})  # the pipeline with the new size cannot start
    backend = TestPatternCamera(1280, 720, 30)
    controls = CameraControls(
        backend, ControlStore(tmp_path / "c.json"), h.supervisor, lambda: None
    )
    async with streaming(h):
        await until(h, lambda: h.supervisor.state is StreamState.ONLINE)
        started = time.monotonic()
        with pytest.raises(CommandError) as refused:
            await controls.change({"width": 640})
        assert refused.value.code == ErrorCode.CAMERA_ERROR
        assert (
            "values restored" in refused.value.detail
            and "the camera is gone" in refused.value.detail
        )
        assert time.monotonic() - started < 3  # answered when the start failed, not after a timeout
        assert backend.values()["width"] == 1280
        await until(h, lambda: h.supervisor.state is StreamState.ONLINE)  # back with the old size
        assert len(h.factory.pushers) == 2
        assert h.supervisor.outages.cause_of(time.time() - 5, time.time()) == SETTINGS_CHANGE

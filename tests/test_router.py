"""The command router and the settings rules, through the in-memory bus (no broker)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.camera.base import AppliedChange, ControlValue
from agent.camera.picamera2_backend import Picamera2Camera
from agent.camera.testsrc import TestPatternCamera
from agent.controls import CameraControls, ControlStore
from agent.errors import CameraError, CommandError, ErrorCode
from agent.messaging import InboundMessage
from agent.mqtt.topics import Topics
from agent.protocol import ActionCommand
from agent.router import ActionHandler, Answer, AnswerCache, CommandRouter
from tests import fake_picamera2
from tests.fakes import InMemoryBus, every_action

TOPICS = Topics("site/cam1")


def make_router(
    actions: dict[str, ActionHandler] | None = None,
) -> tuple[CommandRouter, InMemoryBus, list[int]]:
    bus = InMemoryBus()
    changes: list[int] = []
    store = ControlStore(Path(tempfile.mkdtemp()) / "controls.json")
    camera = TestPatternCamera(640, 480, 25)
    controls = CameraControls(camera, store, None, on_change=lambda: changes.append(1))
    router = CommandRouter(
        "cam1",
        TOPICS,
        bus,
        controls,
        actions=every_action(**(actions or {})),
        max_payload_bytes=1024,
    )
    return router, bus, changes


async def send(router: CommandRouter, topic: str, payload: str | bytes, **kw: Any) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    await router.handle(InboundMessage(topic, data, **kw))


async def test_answers_on_the_configured_base_topic() -> None:
    router, bus, changes = make_router()
    await send(router, TOPICS.settings, "width 800")
    (answer,) = bus.on("site/cam1/status")
    assert answer["camera"] == "cam1"
    assert answer["data"] == {
        "applied": {"width": 800},
        "restarted": True,
        "downtime_s": 0.0,
        "recording_split": False,
    }
    assert "stream restarted" in answer["message"]
    assert changes == [1]


async def test_rejected_change_announces_nothing() -> None:
    router, bus, changes = make_router()
    await send(router, TOPICS.settings, json.dumps({"set": {"width": 800, "height": 7}}))
    (answer,) = bus.on("site/cam1/status")
    assert answer["error"]["code"] == "out_of_range"
    assert changes == []


async def test_menu_accepts_label_bool_accepts_words_and_int_checks_step() -> None:
    router, bus, _ = make_router()
    await send(
        router,
        TOPICS.settings,
        json.dumps({"id": "a", "set": {"pattern": "SMPTEBARS", "hflip": "on"}}),
    )
    await send(router, TOPICS.settings, "height 481")
    ok, bad = bus.on("site/cam1/status")
    assert ok["data"]["applied"] == {"pattern": "smptebars", "hflip": True}
    assert bad["error"]["code"] == "invalid_value"
    assert "steps of 2" in bad["error"]["detail"]


async def test_reply_goes_to_response_topic_only_under_base() -> None:
    router, bus, _ = make_router()
    await send(
        router,
        TOPICS.action,
        "picture",
        response_topic="site/cam1/response/app",
        correlation_data=b"7",
    )
    replies = [m for m in bus.published if m.topic == "site/cam1/response/app"]
    assert len(replies) == 1
    assert replies[0].correlation_data == b"7"
    await send(router, TOPICS.action, "picture", response_topic="site/cam1/response/#")
    assert bus.on("site/cam1/status")[-1]["error"]["code"] == "invalid_response_topic"
    assert not [m for m in bus.published if m.topic == "site/cam1/response/#"]


async def test_handler_crash_becomes_internal_error() -> None:
    async def broken(command: ActionCommand) -> Answer:
        raise RuntimeError("boom")

    router, bus, _ = make_router({"picture": broken})
    await send(router, TOPICS.action, json.dumps({"id": "x", "action": "picture"}))
    (answer,) = bus.on("site/cam1/status")
    assert answer["error"]["code"] == "internal_error"
    assert answer["id"] == "x"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ('{"id": true, "set": {"hue": 1}}', "bad_request"),
        ('{"id": "", "set": {"hue": 1}}', "bad_request"),
        ('{"set": {"hue": NaN}}', "bad_request"),
        ('{"set": {"hue": 1e999}}', "invalid_value"),
        ('{"set": {"hue": 1}, "extra": 1}', "bad_request"),
        ("hue one", "invalid_value"),
        ("auto_exposure maybe", "invalid_value"),
        ("fps 2.5", "invalid_value"),
        ('{"set": {"hue": [1, "x"]}}', "invalid_value"),
        ('{"set": {"hue": [1, 2]}}', "invalid_value"),  # a pair where a number belongs
    ],
)
async def test_settings_edge_cases(payload: str, code: str) -> None:
    router, bus, _ = make_router()
    await send(router, TOPICS.settings, payload)
    assert bus.on("site/cam1/status")[0]["error"]["code"] == code


@pytest.mark.parametrize(
    ("payload", "code", "detail"),
    [
        ("record 1:02:03.5 extra", "invalid_argument", "usage: record"),
        ("trim a.mp4 00:00:02 00:00:01", "invalid_argument", "must be after start"),
        (
            '{"action": "trim", "file": "a.mp4", "start": 0, "end": 3, "mode": "slow"}',
            "invalid_argument",
            "mode",
        ),
        ('{"action": "picture", "quality": 101}', "invalid_argument", "quality"),
        ('{"action": "stop", "job": "a b"}', "invalid_argument", "job id"),
        ('{"action": 3}', "bad_request", "'action' string"),
    ],
)
async def test_action_parsing(payload: str, code: str, detail: str) -> None:
    router, bus, _ = make_router()
    await send(router, TOPICS.action, payload)
    answer = bus.on("site/cam1/status")[0]
    assert answer["error"]["code"] == code
    assert detail in answer["error"]["detail"]


@pytest.mark.parametrize(
    ("payload", "action", "params"),
    [
        # The path is the trimmer's to judge (invalid_path, tests/test_jobs.py), not the parser's.
        ("trim ../etc/passwd 1 2", "trim", {"file": "../etc/passwd", "start": 1.0, "end": 2.0}),
        ("STREAM restart", "stream", {"op": "restart"}),
    ],
)
async def test_well_formed_actions_reach_their_handler_parsed(
    payload: str, action: str, params: dict[str, Any]
) -> None:
    router, bus, _ = make_router()
    await send(router, TOPICS.action, payload)
    (answer,) = bus.on("site/cam1/status")
    assert answer["event"] == f"{action}.done"
    assert params.items() <= answer["data"]["params"].items()


def test_an_action_without_a_handler_is_a_wiring_error_at_start() -> None:
    bus = InMemoryBus()
    store = ControlStore(Path(tempfile.mkdtemp()) / "c.json")
    controls = CameraControls(TestPatternCamera(640, 480, 25), store, None, lambda: None)
    handlers = every_action()
    del handlers["trim"]
    with pytest.raises(ValueError, match="trim"):
        CommandRouter("cam1", TOPICS, bus, controls, actions=handlers, max_payload_bytes=1024)


async def test_a_camera_failure_is_answered_with_camera_error_not_internal_error() -> None:
    async def failing(command: ActionCommand) -> Answer:
        raise CameraError("the camera is gone")

    router, bus, _ = make_router({"picture": failing})
    await send(router, TOPICS.action, json.dumps({"id": "p1", "action": "picture"}))
    (answer,) = bus.on("site/cam1/status")
    assert answer["ok"] is False
    assert answer["error"] == {"code": "camera_error", "detail": "the camera is gone"}


async def test_a_transient_refusal_is_not_deduped_so_a_retry_runs() -> None:
    calls: list[str] = []

    async def busy_once(command: ActionCommand) -> Answer:
        calls.append(command.action)
        if len(calls) == 1:
            raise CommandError(ErrorCode.BUSY, "a recording is running")
        return Answer("job.queued", "SUCCESS: queued", {})

    router, bus, _ = make_router({"record": busy_once})
    for _ in range(3):
        await send(router, TOPICS.action, json.dumps({"id": "r1", "action": "record"}))
    answers = bus.on("site/cam1/status")
    assert [a["ok"] for a in answers] == [False, True, True]
    assert len(calls) == 2  # the retry ran; the third, after a success, is the cached answer
    assert answers[2].get("duplicate") is True
    # A refusal that will always be the same is deduped like an answer.
    await send(router, TOPICS.settings, json.dumps({"id": "s1", "set": {"width": 7}}))
    await send(router, TOPICS.settings, json.dumps({"id": "s1", "set": {"width": 7}}))
    assert bus.on("site/cam1/status")[-1].get("duplicate") is True


async def test_colour_gains_take_the_json_pair_the_readme_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_picamera2.install(monkeypatch)
    camera = Picamera2Camera(0, 1280, 720, 30)
    await camera.start()
    bus = InMemoryBus()
    controls = CameraControls(
        camera, ControlStore(Path(tempfile.mkdtemp()) / "c.json"), None, lambda: None
    )
    router = CommandRouter(
        "cam1", TOPICS, bus, controls, actions=every_action(), max_payload_bytes=1024
    )
    change = {"id": "g", "set": {"auto_white_balance": False, "colour_gains": [1.5, 2.0]}}
    await send(router, TOPICS.settings, json.dumps(change))
    (answer,) = bus.on("site/cam1/status")
    assert answer["ok"] is True, answer
    assert answer["data"]["applied"]["colour_gains"] == [1.5, 2.0]
    assert camera.values()["colour_gains"] == (1.5, 2.0)


class GatedCamera(TestPatternCamera):
    """The test pattern, with every change held until the test opens the gate (a slow camera:
    a restart-class change on a Pi takes seconds)."""

    def __init__(self) -> None:
        super().__init__(640, 480, 25)
        self.gate = asyncio.Event()
        self.applied: list[dict[str, ControlValue]] = []

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        await self.gate.wait()
        self.applied.append(dict(values))
        return await super().apply(values, restart)


async def until_answered(bus: InMemoryBus, command_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = await bus.answer(command_id, "site/cam1/status")
    return answer


async def test_a_stop_is_answered_while_a_slow_change_runs_and_changes_keep_their_order() -> None:
    bus = InMemoryBus()
    camera = GatedCamera()
    store = ControlStore(Path(tempfile.mkdtemp()) / "c.json")
    controls = CameraControls(camera, store, None, lambda: None)

    async def stop(command: ActionCommand) -> Answer:
        return Answer("job.stopping", "SUCCESS: stopping", {})

    router = CommandRouter(
        "cam1", TOPICS, bus, controls, actions=every_action(stop=stop), max_payload_bytes=1024
    )
    for n, change in enumerate(({"width": 800}, {"hue": 10}, {"hue": 20})):
        payload = json.dumps({"id": f"s{n}", "set": change}).encode()
        await router.submit(InboundMessage(TOPICS.settings, payload))
    await router.submit(InboundMessage(TOPICS.action, b'{"id": "halt", "action": "stop"}'))
    # A copy of the first change, sent again while it runs: it waits for the one answer.
    await router.submit(InboundMessage(TOPICS.settings, b'{"id": "s0", "set": {"width": 800}}'))
    await until_answered(bus, "halt")
    assert [a["id"] for a in bus.on("site/cam1/status")] == ["halt"]  # the changes still wait
    camera.gate.set()
    await until_answered(bus, "s2")
    await router.close(1)
    answers = bus.on("site/cam1/status")
    firsts = [a["id"] for a in answers if not a.get("duplicate")]
    assert firsts == ["halt", "s0", "s1", "s2"]
    (copy,) = [a for a in answers if a.get("duplicate")]
    assert copy["id"] == "s0" and copy["data"] == answers[1]["data"]
    assert camera.applied == [{"width": 800}, {"hue": 10}, {"hue": 20}]  # arrival order, once each
    assert camera.values()["hue"] == 20


async def test_commands_still_running_at_a_stop_are_answered_not_dropped() -> None:
    bus = InMemoryBus()
    camera = GatedCamera()  # never opened
    controls = CameraControls(camera, ControlStore(Path(tempfile.mkdtemp()) / "c.json"), None,
                              lambda: None)  # fmt: skip
    router = CommandRouter(
        "cam1", TOPICS, bus, controls, actions=every_action(), max_payload_bytes=1024
    )
    await router.submit(InboundMessage(TOPICS.settings, b'{"id": "slow", "set": {"hue": 5}}'))
    await router.close(0.05)
    (answer,) = bus.on("site/cam1/status")
    assert answer["id"] == "slow"
    assert answer["error"]["code"] == "not_available"
    assert "stopping" in answer["error"]["detail"]


async def test_a_command_arriving_while_the_agent_stops_is_left_for_the_next_start() -> None:
    router, bus, _ = make_router()
    await router.close(1)
    acknowledged: list[bool] = []
    message = InboundMessage(TOPICS.settings, b"hue 5", done=lambda: acknowledged.append(True))
    await router.submit(message)
    # Neither run nor answered nor acknowledged: the broker delivers it again after the restart
    # (a job started now could not report its end).
    assert bus.on("site/cam1/status") == []
    assert acknowledged == []


def test_the_answer_cache_forgets_after_its_ttl_and_keeps_only_the_newest() -> None:
    now = [0.0]
    cache = AnswerCache(size=3, ttl_s=3600, clock=lambda: now[0])
    for n in range(4):
        cache.put("settings", f"s{n}", {"n": n})
    assert cache.get("settings", "s0") is None  # the oldest made room
    assert [cache.get("settings", f"s{n}") for n in (1, 2, 3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert cache.get("action", "s1") is None  # per kind: an action may reuse a settings id
    now[0] = 3600.5
    assert cache.get("settings", "s3") is None  # an hour on, a retry runs again


async def test_by_is_logged_and_echoed_in_the_answer_and_refused_when_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router, bus, _ = make_router()
    with caplog.at_level("INFO"):
        await send(router, TOPICS.settings, '{"id": "c1", "by": "CN=alice", "set": {"hue": 10}}')
    (answer,) = bus.on("site/cam1/status")
    assert (answer["ok"], answer["by"]) == (True, "CN=alice")
    assert "on behalf of CN=alice" in caplog.text
    # A refusal still says for whom.
    await send(router, TOPICS.settings, '{"id": "c2", "by": "CN=alice", "set": {"hue": 999}}')
    assert bus.on("site/cam1/status")[1]["by"] == "CN=alice"
    # Without `by`, the answer carries none (the original contract, unchanged).
    await send(router, TOPICS.settings, "hue 5")
    assert "by" not in bus.on("site/cam1/status")[2]
    for bad in ('"by": 3', '"by": ""', '"by": "a\\nb"', f'"by": "{"x" * 129}"'):
        await send(router, TOPICS.settings, f'{{"id": "b", {bad}, "set": {{"hue": 1}}}}')
        assert bus.on("site/cam1/status")[-1]["error"]["code"] == "bad_request", bad

"""Maps inbound topics to handlers and turns every outcome into exactly one answer.

Commands run concurrently (`submit`), so a slow one (a stream that takes seconds to come up, a
restart-class change) never holds up the next: a `stop` for a recording is answered at once.
What must stay ordered orders itself: control changes and stream operations share one lock,
which asyncio hands out first come, first served, i.e. in arrival order.

As in Zigbee2MQTT's bridge, a handler's exception becomes an error answer and never ends the
agent. Answers go to `BASE/status`, and also to the MQTT 5 Response Topic with its Correlation
Data when the command carried one. A command that comes again with an `id` already answered
(a QoS 1 redelivery, or a client retrying) is not executed again: the first answer is repeated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.camera.base import ControlValue
from agent.controls import CameraControls
from agent.errors import CameraError, CommandError, ErrorCode
from agent.messaging import InboundMessage, Publisher
from agent.mqtt.topics import Topics
from agent.protocol import (
    ACTION_PARSERS,
    ActionCommand,
    StatusFormat,
    decode_payload,
    event,
    parse_action,
    parse_settings,
    peek_origin,
    status_messages,
)

log = logging.getLogger(__name__)

ANSWER_CACHE_SIZE = 512
ANSWER_CACHE_TTL_S = 3600.0
# Commands running at once; the next waits for a slot (and the broker holds the rest), so a
# flood cannot grow the agent without bound.
MAX_CONCURRENT_COMMANDS = 64


@dataclass(frozen=True)
class Answer:
    event: str
    message: str
    data: dict[str, Any]
    job: str | None = None


ActionHandler = Callable[[ActionCommand], Awaitable[Answer]]


class AnswerCache:
    """The last answers by command id, so that a redelivered command is answered, not re-run."""

    def __init__(
        self,
        size: int = ANSWER_CACHE_SIZE,
        ttl_s: float = ANSWER_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, kind: str, command_id: str) -> dict[str, Any] | None:
        entry = self._entries.get((kind, command_id))
        if entry is None or self._clock() - entry[0] > self._ttl_s:
            return None
        return entry[1]

    def put(self, kind: str, command_id: str, answer: dict[str, Any]) -> None:
        self._entries[(kind, command_id)] = (self._clock(), answer)
        self._entries.move_to_end((kind, command_id))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _fmt(value: ControlValue) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


TRANSIENT_ERRORS = frozenset({
    ErrorCode.BUSY, ErrorCode.NOT_AVAILABLE, ErrorCode.STREAM_ERROR, ErrorCode.CAMERA_ERROR,
    ErrorCode.IO_ERROR, ErrorCode.INTERNAL_ERROR,
})  # fmt: skip


class CommandRouter:
    def __init__(
        self,
        camera_id: str,
        topics: Topics,
        publisher: Publisher,
        controls: CameraControls,
        actions: dict[str, ActionHandler],
        max_payload_bytes: int,
        recording: Callable[[], bool] = lambda: False,
        status_format: StatusFormat = "json",
    ) -> None:
        self._camera_id = camera_id
        self._status_format = status_format
        self._recording = recording  # whether a record job is running now
        self._topics = topics
        self._publisher = publisher
        self._controls = controls
        missing = set(ACTION_PARSERS) - set(actions)
        if missing:  # a parsed action with nowhere to go would be a bug found only in the field
            raise ValueError(f"no handler for the actions {sorted(missing)}")
        self._actions = actions
        self._max_payload_bytes = max_payload_bytes
        self._answers = AnswerCache()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_COMMANDS)
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        # Commands by id while they run: a copy arriving meanwhile waits for the one answer.
        self._in_progress: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._routes: dict[
            str, tuple[str, Callable[[str], Awaitable[tuple[str | None, Answer]]]]
        ] = {
            topics.settings: ("settings", self._settings),
            topics.action: ("action", self._action),
        }

    async def submit(self, message: InboundMessage) -> None:
        """Start handling ``message`` beside the commands already running; returns at once
        unless MAX_CONCURRENT_COMMANDS are running."""
        if self._closing:
            # Not run and not acknowledged: the broker keeps it in the agent's session and
            # delivers it again when the agent is back (a job started now could not finish).
            log.info("stopping: a command on %s is left for the next start", message.topic)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self.handle(message), name=f"command {message.topic}")
        self._running.add(task)
        task.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def close(self, grace_s: float) -> None:
        """Before a stop: let running commands finish for ``grace_s``, then cancel the rest
        (each is still answered, with not_available). Commands arriving from now on are left
        to the broker, for the next start."""
        self._closing = True
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def handle(self, message: InboundMessage) -> None:
        """Run one command and answer it; then it is acknowledged to the broker."""
        try:
            await self._handle(message)
        finally:
            message.done()

    async def _handle(self, message: InboundMessage) -> None:
        route = self._routes.get(message.topic)
        if route is None:
            log.warning("message on unexpected topic %s ignored", message.topic)
            return
        kind, handler = route
        command_id: str | None = None
        by: str | None = None
        owned: tuple[str, str] | None = None  # the id this call runs (and answers for)
        try:
            text = decode_payload(message.payload, self._max_payload_bytes)
            command_id, by = peek_origin(text)
            if by is not None:
                # The broker saw only the front end's certificate; this names the person.
                log.info("%s command %s on behalf of %s", kind, command_id or "", by)
            if message.response_topic is not None:
                self._topics.check_response_topic(message.response_topic)
            if command_id is not None:
                cached = self._answers.get(kind, command_id)
                running = self._in_progress.get((kind, command_id))
                if cached is None and running is not None:
                    cached = await asyncio.shield(running)
                if cached is not None:
                    log.info("%s %s answered again (duplicate id)", kind, command_id)
                    await self._send({**cached, "duplicate": True}, message)
                    return
                owned = (kind, command_id)
                self._in_progress[owned] = asyncio.get_running_loop().create_future()
            command_id, answer = await handler(text)
            body = event(
                self._camera_id,
                answer.event,
                message=answer.message,
                command_id=command_id,
                job=answer.job,
                data=answer.data,
                by=by,
            )
        except CommandError as err:
            body = self._rejection(kind, command_id, err, by)
        except asyncio.CancelledError:
            stopping = CommandError(
                ErrorCode.NOT_AVAILABLE, "the agent is stopping; the command did not complete"
            )
            await self._finish(owned, self._rejection(kind, command_id, stopping, by), message)
            raise
        except CameraError as err:  # the camera refused or failed: a code clients know
            camera_error = CommandError(ErrorCode.CAMERA_ERROR, str(err))
            body = self._rejection(kind, command_id, camera_error, by)
        except Exception:
            log.exception("%s command failed unexpectedly", kind)
            internal = CommandError(ErrorCode.INTERNAL_ERROR, "internal error; see the agent's log")
            body = self._rejection(kind, command_id, internal, by)
        await self._finish(owned, body, message)

    async def _finish(
        self, owned: tuple[str, str] | None, body: dict[str, Any], message: InboundMessage
    ) -> None:
        if owned is not None:
            # Dedupe what ran; a transient refusal (busy, the stream down, the disk full) must
            # let a retry with the same id run. A copy waiting meanwhile gets this answer.
            if body.get("error", {}).get("code") not in TRANSIENT_ERRORS:
                self._answers.put(*owned, body)
            running = self._in_progress.pop(owned)
            if not running.done():
                running.set_result(body)
        await self._send(body, message)

    def _rejection(
        self, kind: str, command_id: str | None, err: CommandError, by: str | None = None
    ) -> dict[str, Any]:
        log.info("%s rejected: %s (%s)", kind, err.detail, err.code)
        return event(
            self._camera_id,
            f"{kind}.rejected",
            ok=False,
            message=f"ERROR: {err.detail}",
            command_id=command_id,
            error=err,
            by=by,
        )

    async def _send(self, body: dict[str, Any], message: InboundMessage) -> None:
        topics = self._topics
        for topic, data in status_messages(body, topics.status, topics.events, self._status_format):
            await self._publisher.publish(topic, data)
        payload = json.dumps(body).encode()
        if (
            message.response_topic is not None
            and body.get("error", {}).get("code") != ErrorCode.INVALID_RESPONSE_TOPIC
        ):
            await self._publisher.publish(
                message.response_topic, payload, correlation_data=message.correlation_data
            )

    async def _settings(self, text: str) -> tuple[str | None, Answer]:
        command = parse_settings(text)
        change = await self._controls.change(command.values)
        parts = [f"{name} set to {_fmt(value)}" for name, value in change.values.items()]
        message = "SUCCESS: " + ", ".join(parts)
        split = change.restarted and self._recording()
        if change.restarted:
            message += f" (stream restarted, down {change.downtime_s:.2f} s"
            # The recorder gets a new session: the recording goes on after a gap, in a file of
            # its own if the picture's size changed.
            message += "; the running recording continues after the gap)" if split else ")"
        data = {
            "applied": change.values,
            "restarted": change.restarted,
            "downtime_s": round(change.downtime_s, 3),
            "recording_split": split,
        }
        return command.id, Answer("settings.applied", message, data)

    async def _action(self, text: str) -> tuple[str | None, Answer]:
        command = parse_action(text)
        return command.id, await self._actions[command.action](command)

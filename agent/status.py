"""The retained picture of the agent: `BASE/state`, `BASE/controls` and `BASE/availability`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.camera.base import CameraBackend
from agent.errors import CommandError
from agent.health import HEARTBEAT_S, HealthReport, write_health
from agent.jobs.jpegdata import Jpeg
from agent.messaging import Delivery, Publisher
from agent.mqtt.topics import Topics
from agent.protocol import StatusFormat, event, status_messages, utc_now

log = logging.getLogger(__name__)

STATE_DEBOUNCE_S = 0.005
# The events a client waits for to learn how a job ended; kept while the broker is away.
TERMINAL_JOB_EVENTS = frozenset({"job.succeeded", "job.failed", "job.cancelled"})
# How an upload ended: kept too (an operator waits for them to know a capture left the device).
TERMINAL_UPLOAD_EVENTS = frozenset({"upload.done", "upload.failed", "upload.dropped"})


def delivery_of(name: str) -> Delivery:
    if name == "job.progress":
        return Delivery.PROGRESS
    essential = name in TERMINAL_JOB_EVENTS or name in TERMINAL_UPLOAD_EVENTS
    return Delivery.ESSENTIAL if essential else Delivery.EVENT


def describe_controls(backend: CameraBackend) -> list[dict[str, Any]]:
    values = backend.values()
    return [d.to_json(values) for d in backend.descriptors()]


@dataclass(frozen=True)
class HealthSource:
    """Where the health file goes, and how to take the current report."""

    path: Path
    report: Callable[[], HealthReport]


class AgentStatus:
    def __init__(
        self,
        camera_id: str,
        identity: str,
        topics: Topics,
        publisher: Publisher,
        backend: CameraBackend,
        changes: asyncio.Event,
        *,
        stream_snapshot: Callable[[], dict[str, Any]],
        jobs_snapshot: Callable[[], list[dict[str, Any]]],
        storage_snapshot: Callable[[], dict[str, Any]] | None = None,
        motion_snapshot: Callable[[], dict[str, Any]] | None = None,
        upload_snapshot: Callable[[], dict[str, Any]] | None = None,
        health: HealthSource | None,
        warnings: list[str],
        status_format: StatusFormat = "json",
    ) -> None:
        self._camera_id = camera_id
        self._identity = identity
        self._topics = topics
        self._publisher = publisher
        self._backend = backend
        self._changed = changes
        self._stream_snapshot = stream_snapshot
        self._jobs_snapshot = jobs_snapshot
        self._storage_snapshot = storage_snapshot
        self._motion_snapshot = motion_snapshot
        self._upload_snapshot = upload_snapshot
        self._health = health
        self.warnings = warnings
        self._status_format = status_format
        self._started_at = utc_now()
        # Tells this process's retained state apart from another agent's with the same identity.
        self.instance = uuid.uuid4().hex
        self._health_facts: tuple[bool, bool, str] | None = None  # as last written
        self._health_at = 0.0

    def state(self) -> dict[str, Any]:
        storage = self._storage_snapshot() if self._storage_snapshot is not None else None
        warnings = list(self.warnings)
        if storage is not None and storage["low"]:
            warnings.append(
                f"disk nearly full: {storage['free_bytes'] >> 20} MiB free on the captures"
                f" filesystem (storage.min_free_bytes {storage['min_free_bytes'] >> 20} MiB);"
                " jobs that write are refused"
            )
        return {
            "ts": utc_now(),
            "camera": self._camera_id,
            "version": __version__,
            "started_at": self._started_at,
            "identity": self._identity,
            "instance": self.instance,
            "backend": self._backend.info(),
            "controls": self._backend.values(),
            "stream": self._stream_snapshot(),
            "jobs": self._jobs_snapshot(),
            "storage": storage,
            "motion": self._motion_snapshot() if self._motion_snapshot is not None else None,
            "upload": self._upload_snapshot() if self._upload_snapshot is not None else None,
            "warnings": warnings,
        }

    def is_twin_state(self, payload: bytes) -> bool:
        """True if ``payload`` is a state published by another agent under our identity."""
        try:
            body = json.loads(payload)
        except ValueError:
            return False
        other = body.get("instance") if isinstance(body, dict) else None
        if other is None or other == self.instance or str(body.get("ts", "")) < self._started_at:
            # Our own, or the retained state of an agent that stopped before this one started.
            return False
        log.error(
            "another agent (instance %s, started %s) publishes as camera %s with identity %s; "
            "the broker will keep taking the session from one of them",
            other,
            body.get("started_at"),
            self._camera_id,
            self._identity,
        )
        return True

    def controls(self) -> dict[str, Any]:
        return {
            "ts": utc_now(),
            "camera": self._camera_id,
            "controls": describe_controls(self._backend),
        }

    async def _retain(self, topic: str, body: dict[str, Any] | str) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        await self._publisher.publish(topic, payload, retain=True)

    async def emit(
        self,
        name: str,
        ok: bool,
        message: str,
        data: dict[str, Any],
        *,
        command_id: str | None = None,
        job: str | None = None,
        error: CommandError | None = None,
        by: str | None = None,
    ) -> None:
        """A happening on `BASE/status`: stream down/up, job transitions."""
        body = event(
            self._camera_id, name, ok=ok, message=message, data=data,
            command_id=command_id, job=job, error=error, by=by,
        )  # fmt: skip
        topics = self._topics
        for topic, payload in status_messages(
            body, topics.status, topics.events, self._status_format
        ):
            await self._publisher.publish(topic, payload, delivery=delivery_of(name))

    async def show_picture(self, preview: Jpeg | None, result: dict[str, Any]) -> None:
        """The latest picture on `BASE/picture` (its JPEG, retained: what MQTT image and camera
        entities show) and what it is on `BASE/picture/info`, the JPEG first."""
        shown = None
        if preview is not None:
            await self._publisher.publish(
                self._topics.picture, preview.data, retain=True, delivery=Delivery.EVENT
            )
            shown = {
                "resolution": f"{preview.width}x{preview.height}",
                "bytes": len(preview.data),
                "downscaled": f"{preview.width}x{preview.height}" != result.get("resolution"),
            }
        info = {
            "ts": utc_now(),
            "camera": self._camera_id,
            "file": result["path"],
            "url": result.get("url"),
            "time": result.get("frame_time"),
            "size": result["size"],
            "sha256": result["sha256"],
            "resolution": result.get("resolution"),
            # None: not even a thumbnail fitted mqtt.max_picture_bytes; the file is the picture.
            "preview": shown,
        }
        await self._publisher.publish(
            self._topics.picture_info, json.dumps(info).encode(), retain=True,
            delivery=Delivery.EVENT,
        )  # fmt: skip

    def mark_changed(self) -> None:
        """Schedule a republish of state and controls (see `run`)."""
        self._changed.set()

    async def run(self) -> None:
        """Republish state and controls after changes, coalescing bursts into one message.

        Running apart from the command handler lets a command's answer leave before the
        (larger) retained documents, which keeps command latency at one broker round trip.
        """
        while True:
            await self._write_health()
            try:
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
            except TimeoutError:
                continue  # nothing changed: only the health heartbeat
            # A short pause lets the answer that caused the change reach the socket first and
            # folds a burst (a slider dragged in a UI) into one retained update.
            await asyncio.sleep(STATE_DEBOUNCE_S)
            self._changed.clear()
            await self.publish_changed()

    async def _write_health(self) -> None:
        """In a worker thread: the write syncs to disk, which must not stall the loop. Only
        when the verdict's inputs changed or the heartbeat is due: a burst of settings would
        otherwise sync the file dozens of times a second (wearing an SD card for nothing)."""
        if self._health is None:
            return
        report = self._health.report()
        facts = (report.mqtt_connected, report.stream_wanted, report.stream_state)
        if facts == self._health_facts and report.ts - self._health_at < HEARTBEAT_S:
            return
        try:
            await asyncio.to_thread(write_health, self._health.path, report)
        except OSError as err:
            log.warning("cannot write %s: %s", self._health.path, err)
            return
        self._health_facts, self._health_at = facts, report.ts

    async def flush(self) -> None:
        """Publish a change still waiting in `run`'s pause (before a clean stop)."""
        if self._changed.is_set():
            self._changed.clear()
            await self.publish_changed()

    async def publish_changed(self) -> None:
        await self._retain(self._topics.controls, self.controls())
        await self._retain(self._topics.state, self.state())

    async def publish_connected(self) -> None:
        """After every (re)connect: state first, then `online`, so `online` means readable state."""
        await self._write_health()  # healthy again now, not at the next heartbeat
        await self.publish_changed()
        await self._retain(self._topics.availability, "online")

    def write_stopped_health(self) -> None:
        """A clean stop is unhealthy at once, not only once the last report goes stale."""
        if self._health is None:
            return
        try:
            # On the way out, nothing else waits on the loop any more.
            write_health(self._health.path, HealthReport(time.time(), False, False, "stopped"))
        except OSError as err:
            log.warning("cannot write %s: %s", self._health.path, err)

    async def publish_offline(self) -> None:
        await self._retain(self._topics.availability, "offline")

"""The cameras on the broker, as their agents describe themselves.

Everything the console shows comes from what agents already publish: the retained availability,
state, controls, latest picture and its info, and the events on `BASE/status` (or `BASE/events`
for an agent with `status_format = "text"`). Nothing here knows a control or a job kind by name,
so a new control or a new camera needs no console code.

A camera's topic base is `camera` (one camera) or `camera/<id>` (a fleet); any base of one or two
levels is found the same way.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The agent's report topics under its base, the longest first so that `picture/info` is not
# taken for a camera whose base ends in `picture`.
REPORTS = ("picture/info", "availability", "controls", "picture", "status", "events", "state")
BASE_DEPTHS = (1, 2)


def subscriptions() -> list[str]:
    """Every report of every camera whose base has one or two levels."""
    return ["/".join(["+"] * depth + [report]) for report in REPORTS for depth in BASE_DEPTHS]


def split_topic(topic: str) -> tuple[str, str] | None:
    """(base, report) of a report topic, or None."""
    for report in REPORTS:
        base = topic.removesuffix("/" + report)
        if base != topic and base and base.count("/") + 1 in BASE_DEPTHS:
            return base, report
    return None


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


@dataclass
class Camera:
    base: str
    events_kept: int = 100
    availability: str | None = None  # "online", "offline", or None before the agent said
    state: dict[str, Any] | None = None
    controls: list[dict[str, Any]] | None = None
    picture: bytes | None = None
    picture_info: dict[str, Any] | None = None
    picture_version: int = 0
    events: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def id(self) -> str:
        if self.state is not None and isinstance(self.state.get("camera"), str):
            return str(self.state["camera"])
        return self.base.rsplit("/", 1)[-1]

    @property
    def stream_path(self) -> str | None:
        """The MediaMTX path the agent publishes for viewers (from `state.stream.url`)."""
        stream = (self.state or {}).get("stream")
        url = stream.get("url") if isinstance(stream, dict) else None
        if not isinstance(url, str):
            return None
        path = urlsplit(url).path.strip("/")
        return path or None

    @property
    def forgotten(self) -> bool:
        """Its retained messages were cleared: nothing left to show."""
        return self.availability is None and self.state is None and self.controls is None

    def view(self) -> dict[str, Any]:
        """What a page gets: everything but the JPEG (fetched by URL)."""
        return {
            "base": self.base,
            "id": self.id,
            "online": self.availability == "online",
            "availability": self.availability,
            "state": self.state,
            "controls": self.controls,
            "picture": (
                {"version": self.picture_version, "info": self.picture_info}
                if self.picture is not None
                else None
            ),
            "stream_path": self.stream_path,
        }


class Fleet:
    """Cameras by topic base, updated from MQTT messages."""

    def __init__(self, events_kept: int = 100) -> None:
        self.cameras: dict[str, Camera] = {}
        self._events_kept = events_kept

    def by_stream_path(self, path: str) -> Camera | None:
        return next((c for c in self.cameras.values() if c.stream_path == path), None)

    def apply(self, topic: str, payload: bytes) -> tuple[Camera, str, dict[str, Any] | None] | None:
        """Take one message. Returns (camera, what changed, the event for "event"), or None when
        it changes nothing a page shows. "camera" means the camera's view changed; "event" a
        new event; "removed" that its retained messages were cleared."""
        parts = split_topic(topic)
        if parts is None:
            return None
        base, report = parts
        camera = self.cameras.get(base)
        if camera is None:
            if not payload or report in ("status", "events"):
                return None  # only a retained report makes a camera; an event alone does not
            camera = self.cameras[base] = Camera(base, self._events_kept)
        if report in ("status", "events"):
            body = _json(payload)
            if body is None or "event" not in body:
                return None  # the plain-text status of status_format text; JSON is on events
            body.setdefault("received", time.time())
            camera.events.append(body)
            while len(camera.events) > self._events_kept:
                camera.events.popleft()
            self._absorb_event(camera, body)
            return camera, "event", body
        changed = self._absorb_report(camera, report, payload)
        if camera.forgotten:
            del self.cameras[base]
            return camera, "removed", None
        return (camera, "camera", None) if changed else None

    @staticmethod
    def _absorb_report(camera: Camera, report: str, payload: bytes) -> bool:
        if report == "availability":
            camera.availability = payload.decode("utf-8", "replace").strip() or None
        elif report == "state":
            camera.state = _json(payload)
        elif report == "controls":
            body = _json(payload)
            controls = body.get("controls") if body else None
            camera.controls = controls if isinstance(controls, list) else None
        elif report == "picture":
            camera.picture = payload or None
            camera.picture_version += 1
        elif report == "picture/info":
            camera.picture_info = _json(payload)
            # The JPEG comes first; its info names it. A page reloads the thumbnail on either.
            camera.picture_version += 1
        return True

    @staticmethod
    def _absorb_event(camera: Camera, body: dict[str, Any]) -> None:
        """A job's progress also lives in the retained state, which the agent republishes only
        at transitions: fold progress into the state's job list so that a page opened now
        shows the bar where it is."""
        if body.get("event") != "job.progress" or camera.state is None:
            return
        data = body.get("data")
        jobs = camera.state.get("jobs")
        if not isinstance(data, dict) or not isinstance(jobs, list):
            return
        for job in jobs:
            if isinstance(job, dict) and job.get("id") == body.get("job"):
                job["progress"] = data.get("progress", job.get("progress"))

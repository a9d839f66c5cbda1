"""The browser side: one WebSocket per open page, and three small GET endpoints, on a Unix
socket that only nginx opens.

nginx does the mutual TLS with the browser and passes what it verified in two headers it sets
itself (a browser cannot smuggle them: `proxy_set_header` replaces whatever came in):
`X-Client-Verify` (`SUCCESS`) and `X-Client-Subject` (the certificate's subject, RFC 2253). A
request without them did not come through nginx's check and is refused. What the person may do
is then decided by `pki.access`, the rule the broker's ACL and nginx's captures follow.

- `GET /console/ws`: the page's WebSocket (JSON messages, see `ConsoleServer` below);
- `GET /console/picture?camera=BASE`: a camera's latest picture (the retained `BASE/picture`);
- `GET /console/auth/media`: nginx's `auth_request` for the live video under `/media/PATH/`
  (204 when the person may watch the camera that publishes PATH, else 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from console.bus import CHANNELS, Bus, Unanswered
from console.fleet import Camera, Fleet
from pki.access import Access, Subject, parse_subject

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024  # the agent refuses larger commands anyway
VERIFIED = "SUCCESS"
# Actions that only list what a reader may see anyway (nginx serves viewers the captures'
# listing): a viewer's gallery and job history go through these. Everything else changes the
# camera and needs Access.COMMAND.
QUERIES = frozenset({"files", "jobs"})


def subject_of(headers: Headers) -> Subject | None:
    """The person nginx verified, or None."""
    if headers.get("X-Client-Verify") != VERIFIED:
        return None
    dn = headers.get("X-Client-Subject")
    return parse_subject(dn) if dn else None


class Page:
    """One open page: who it is, and a bounded queue of what it has yet to receive."""

    def __init__(self, connection: ServerConnection, subject: Subject, limit: int) -> None:
        self.connection = connection
        self.subject = subject
        self.queue: asyncio.Queue[str] = asyncio.Queue(limit)
        self.dropped = False

    def may_read(self, camera: Camera) -> bool:
        return self.subject.permits(camera.base, Access.READ)

    def send(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message))

    def send_text(self, text: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            # A page that does not read (a phone asleep) must not make the console hold an
            # ever-growing backlog; it reconnects and starts from a fresh snapshot.
            log.warning("page of %s too slow; disconnecting it", self.subject.dn)
            self.dropped = True
            self.queue = asyncio.Queue(1)  # what it held is of no use to it any more
            closing = asyncio.ensure_future(self.connection.close(1013, "too slow; reconnect"))
            closing.add_done_callback(lambda _: None)


class ConsoleServer:
    """WebSocket messages, page to console: `{"type": "command", "ref", "camera": BASE,
    "channel": "settings"|"action", "body": {...}}` and `{"type": "history", "camera": BASE}`.
    Console to page: `hello` (who you are, whether the broker is connected), `cameras` (the
    snapshot), `camera` (one camera's view changed), `removed`, `event` (a camera's event),
    `history` (a camera's recent events, asked for), `broker` (connected or not), `answer` (to a
    command: the camera's event, or `refused`/`unknown` with a message in words)."""

    def __init__(self, fleet: Fleet, bus: Bus, queue_limit: int) -> None:
        self._fleet = fleet
        self._bus = bus
        self._queue_limit = queue_limit
        self.pages: set[Page] = set()
        self._commands: set[asyncio.Task[None]] = set()

    # -- HTTP ------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        subject = subject_of(request.headers)
        if subject is None:
            return connection.respond(HTTPStatus.FORBIDDEN, "no verified client certificate\n")
        url = urlsplit(request.path)
        if url.path == "/console/ws":
            return None  # the WebSocket handshake goes on
        if url.path == "/console/picture":
            return self._picture(connection, subject, parse_qs(url.query).get("camera", [""])[0])
        if url.path == "/console/auth/media":
            return self._media_allowed(connection, subject, request.headers)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    def _picture(self, connection: ServerConnection, subject: Subject, base: str) -> Response:
        camera = self._fleet.cameras.get(base)
        if camera is None or not subject.permits(base, Access.READ):
            return connection.respond(HTTPStatus.NOT_FOUND, "no such camera\n")
        if camera.picture is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no picture yet\n")
        headers = Headers(
            [
                ("Content-Type", "image/jpeg"),
                ("Content-Length", str(len(camera.picture))),
                ("Cache-Control", "private, max-age=3600"),
                ("Connection", "close"),
            ]
        )
        return Response(HTTPStatus.OK, "OK", headers, camera.picture)

    def _media_allowed(
        self, connection: ServerConnection, subject: Subject, headers: Headers
    ) -> Response:
        """`/media/PATH/...`: allowed when PATH is the stream of a camera the person may read."""
        uri = urlsplit(headers.get("X-Original-URI", "")).path
        parts = uri.split("/")
        path = parts[2] if len(parts) > 2 and parts[1] == "media" else ""
        camera = self._fleet.by_stream_path(path) if path else None
        if camera is not None and subject.permits(camera.base, Access.READ):
            return connection.respond(HTTPStatus.NO_CONTENT, "")
        log.info("%s may not watch %r", subject.dn, uri)
        return connection.respond(HTTPStatus.FORBIDDEN, "not your camera\n")

    # -- WebSocket -------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        subject = subject_of(connection.request.headers) if connection.request else None
        if subject is None:  # process_request refused it already; never reached
            return
        page = Page(connection, subject, self._queue_limit)
        self.pages.add(page)
        log.info("page opened by %s (%s, scope %s)", subject.dn, subject.role, subject.scope)
        sender = asyncio.create_task(self._send_loop(page))
        try:
            page.send(self._hello(subject))
            page.send(self._snapshot(page))
            async for raw in connection:
                self._receive(page, raw)
        except ConnectionClosed:
            pass
        finally:
            self.pages.discard(page)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_loop(self, page: Page) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await page.connection.send(await page.queue.get())

    def _hello(self, subject: Subject) -> dict[str, Any]:
        return {
            "type": "hello",
            "user": {
                "name": subject.name,
                "role": subject.role,
                "scope": subject.scope,
                "may_command": subject.may_command_any(),
            },
            "broker": self._bus.connected,
        }

    def _snapshot(self, page: Page) -> dict[str, Any]:
        visible = [c for c in self._fleet.cameras.values() if page.may_read(c)]
        # Events are not in it: a camera's page asks for its own (`history`), so that a fleet
        # page of many cameras loads only what it shows.
        return {
            "type": "cameras",
            "cameras": [c.view() for c in sorted(visible, key=lambda c: c.base)],
        }

    def _history(self, page: Page, base: object) -> None:
        camera = self._fleet.cameras.get(base) if isinstance(base, str) else None
        events = list(camera.events) if camera is not None and page.may_read(camera) else []
        page.send({"type": "history", "base": base, "events": events})

    def _receive(self, page: Page, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError as err:
            message = f"not JSON: {err}"
        if isinstance(message, dict) and message.get("type") == "history":
            self._history(page, message.get("camera"))
            return
        if not isinstance(message, dict) or message.get("type") != "command":
            why = (
                message
                if isinstance(message, str)
                else "expected {'type': 'command', ...} or {'type': 'history', 'camera': ...}"
            )
            page.send({"type": "answer", "ref": None, "refused": True, "message": why})
            return
        task = asyncio.create_task(self._command(page, message))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _command(self, page: Page, message: dict[str, Any]) -> None:
        ref = message.get("ref")
        base, channel, body = message.get("camera"), message.get("channel"), message.get("body")

        def refuse(why: str) -> None:
            page.send({"type": "answer", "ref": ref, "refused": True, "message": why})

        if not isinstance(base, str) or base not in self._fleet.cameras:
            return refuse(f"no camera {base!r} on the broker")
        if not page.subject.permits(base, Access.READ):
            return refuse(f"no camera {base!r} on the broker")  # absent, not forbidden
        if channel not in CHANNELS or not isinstance(body, dict):
            return refuse("a command needs a channel (settings or action) and a body object")
        query = channel == "action" and body.get("action") in QUERIES
        if not query and not page.subject.permits(base, Access.COMMAND):
            log.info("%s (%s) may not command %s", page.subject.dn, page.subject.role, base)
            return refuse(f"{page.subject.role} {page.subject.name} may not change {base}")
        log.info("%s %s on %s for %s", channel, _brief(body), base, page.subject.dn)
        answer = await self._bus.command(base, channel, body, page.subject.dn)
        if isinstance(answer, Unanswered):
            page.send({
                "type": "answer", "ref": ref, "unknown": True,
                "message": f"no answer from {base} within {answer.waited_s:g} s (the broker or"
                " the camera is away): the command may still run when they are back",
            })  # fmt: skip
            return None
        page.send({"type": "answer", "ref": ref, "event": answer})
        return None

    # -- fan-out ---------------------------------------------------------------------------

    async def changed(self, camera: Camera, what: str, event: dict[str, Any] | None) -> None:
        if what == "event":
            message = {"type": "event", "base": camera.base, "event": event}
        elif what == "removed":
            message = {"type": "removed", "base": camera.base}
        else:
            message = {"type": "camera", "camera": camera.view()}
        text = json.dumps(message)  # once, however many pages show this camera
        for page in self._readers(camera):
            page.send_text(text)

    async def broker_changed(self, connected: bool) -> None:
        text = json.dumps({"type": "broker", "connected": connected})
        for page in list(self.pages):
            page.send_text(text)

    def _readers(self, camera: Camera) -> Iterable[Page]:
        return [page for page in self.pages if page.may_read(camera)]


def _brief(body: dict[str, Any]) -> str:
    return json.dumps(body)[:200]

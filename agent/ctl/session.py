"""camera-ctl's MQTT side: one mutual-TLS connection, commands sent with an id and a response
topic, answers and job events routed back to the command they belong to.

Answers are matched by command id on `BASE/status` (or `BASE/events` when the camera runs with
`mqtt.status_format = "text"`) as well as on the response topic: MQTT 5 properties do not cross a
site's bridge (pki/bridge.py), the id does. Job events are matched by job id.

A connection that blinks while a command waits loses nothing the agent said (a clean session
would): commands not yet answered are sent again with the same id, which the agent answers from
its cache instead of running them twice, and a job whose end may have gone by is looked up with a
`jobs` query.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.ctl.config import CtlConfig

CONNECT_TIMEOUT_S = 10.0
# A camera that goes offline while its job runs gets this long to come back (a restarted agent
# reports the job it was running as interrupted) before the wait ends without the job's end.
OFFLINE_GRACE_S = 30.0
JOB_END_EVENTS = {"job.succeeded", "job.failed", "job.cancelled"}
JOB_EVENTS = {"job.running", "job.progress", *JOB_END_EVENTS}


class CtlError(Exception):
    """camera-ctl cannot go on (no broker, refused certificate); the message says why."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.payload)
        except ValueError:
            return None  # the plain-text status form; its JSON twin is on BASE/events
        return body if isinstance(body, dict) else None


@dataclass
class Request:
    """One command to one camera, and what came back for it."""

    camera: str | None  # for the output: the id given or discovered; None for the single camera
    base: str
    channel: str  # "settings" or "action"
    body: dict[str, Any]
    wait_job: bool = False
    id: str = field(default_factory=lambda: f"ctl-{uuid.uuid4().hex[:12]}")
    answer: dict[str, Any] | None = None
    job_id: str | None = None
    end: dict[str, Any] | None = None  # the job's last event (job.succeeded, ...)
    offline_since: float | None = None  # the camera's will said offline while this waited
    gave_up_offline: bool = False

    @property
    def done(self) -> bool:
        if self.answer is None:
            return False
        if self.gave_up_offline:
            return True
        return not (self.wait_job and self.job_id is not None and self.end is None)


class Session:
    """A paho MQTT 5 client on its own network thread; messages wait in a queue for the caller."""

    def __init__(self, config: CtlConfig) -> None:
        self.config = config
        self.messages: queue.Queue[Message] = queue.Queue()
        self.reconnects = 0
        self._connected = threading.Event()
        self._connect_result: Any = None
        self._subscriptions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(config.cert), str(config.key))
        except (ssl.SSLError, OSError) as err:
            raise CtlError(f"cannot load {config.cert} with key {config.key}: {err}") from err
        self.client.tls_set_context(context)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        try:
            self.client.connect(config.host, config.port, keepalive=30)
        except (OSError, ssl.SSLError) as err:
            raise CtlError(
                f"cannot reach the broker at {config.host}:{config.port}: {err}"
            ) from err
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            # Each packet out at once: with Nagle's algorithm a SUBSCRIBE or PUBLISH written
            # behind another waits for the broker's delayed ACK (40 ms on Linux).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            self.close()
            raise CtlError(
                f"the broker at {config.host}:{config.port} did not accept the connection within"
                f" {CONNECT_TIMEOUT_S:g} s (is {config.cert} issued by its CA, and not revoked?)"
            )
        result = self._connect_result
        if result is not None and result.is_failure:
            self.close()
            raise CtlError(f"the broker refused the connection: {result}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connect_result = rc
        if self._connected.is_set():
            self.reconnects += 1
            # A clean session: the broker forgot the subscriptions with the connection.
            with self._lock:
                topics = list(self._subscriptions.items())
            if topics:
                client.subscribe(topics)
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(Message(message.topic, bytes(message.payload), bool(message.retain)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        with self._lock:
            event = self._acks.pop(mid, None)
        if event is not None:
            event.set()

    def subscribe(self, topics: Iterable[str], qos: int = 1) -> None:
        """Subscribe and wait for the broker's SUBACK."""
        pairs = [(topic, qos) for topic in topics if topic not in self._subscriptions]
        if not pairs:
            return
        with self._lock:
            self._subscriptions.update(pairs)
            done = threading.Event()
            result, mid = self.client.subscribe(pairs)
            if mid is not None:
                self._acks[mid] = done
        if result != mqtt.MQTT_ERR_SUCCESS or not done.wait(CONNECT_TIMEOUT_S):
            raise CtlError(f"the broker did not confirm the subscription to {pairs[0][0]}")

    def retained(self, topics: Iterable[str]) -> list[Message]:
        """The retained messages of ``topics`` (wildcards allowed), without a guessed wait.

        Mosquitto sends a subscription's retained messages right after its SUBACK and keeps
        its packets in order, so once a second subscription's SUBACK is back every retained
        message of the first has arrived (at QoS 0, no in-flight window holds any back)."""
        self.subscribe(topics, qos=0)
        self.subscribe([f"{self.config.base_topic}/ctl-barrier/{uuid.uuid4().hex}"], qos=0)
        found: list[Message] = []
        while True:
            try:
                found.append(self.messages.get_nowait())
            except queue.Empty:
                return [m for m in found if m.retain]

    def publish(self, topic: str, body: dict[str, Any], response_topic: str | None) -> None:
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            properties.CorrelationData = str(body.get("id", "")).encode()
        self.client.publish(topic, json.dumps(body), qos=1, properties=properties)

    def close(self) -> None:
        # DISCONNECT first: it wakes the network thread, which then ends at once. Stopping the
        # loop first waited out its select (up to a second: one call in five or six).
        self.client.disconnect()
        self.client.loop_stop()


def response_topic(base: str) -> str:
    # Under the camera's own base: the ACL lets an operator read it and the agent write it.
    return f"{base}/response/ctl-{uuid.uuid4().hex[:12]}"


def report_topics(base: str) -> list[str]:
    return [f"{base}/status", f"{base}/events"]


ProgressHandler = Callable[[Request, dict[str, Any]], None]


class Exchange:
    """Sends requests concurrently and routes what comes back until each is done or the time
    given runs out."""

    def __init__(self, session: Session, requests: list[Request]) -> None:
        self.session = session
        self.requests = requests
        self._by_id = {r.id: r for r in requests}
        self._recoveries: dict[str, list[Request]] = {}
        self._reconnects = session.reconnects
        self._responses = {r.base: response_topic(r.base) for r in requests}

    def run(
        self,
        answer_timeout_s: float,
        job_timeout_s: float | None,
        on_progress: ProgressHandler | None = None,
    ) -> None:
        topics = {t for r in self.requests for t in report_topics(r.base)}
        topics |= {f"{r.base}/availability" for r in self.requests}
        self.session.subscribe(sorted(topics | set(self._responses.values())))
        for request in self.requests:
            self._send(request)
        started = time.monotonic()
        while not all(r.done for r in self.requests):
            now = time.monotonic()
            unanswered = [r for r in self.requests if r.answer is None]
            if unanswered and now - started > answer_timeout_s:
                return  # the caller reports which ones had no answer
            if not unanswered and job_timeout_s is not None and now - started > job_timeout_s:
                return
            try:
                message = self.session.messages.get(timeout=0.2)
            except queue.Empty:
                message = None
            if self.session.reconnects != self._reconnects:
                self._reconnects = self.session.reconnects
                self._recover()
            if message is not None:
                self._route(message, on_progress)
            for request in self.requests:
                gone = request.offline_since
                if request.answer is not None and gone is not None and not request.done:
                    request.gave_up_offline = time.monotonic() - gone > OFFLINE_GRACE_S

    def _send(self, request: Request) -> None:
        topic = f"{request.base}/control/{request.channel}"
        self.session.publish(
            topic, {"id": request.id, **request.body}, self._responses[request.base]
        )

    def _recover(self) -> None:
        """After a reconnect: send again what had no answer; ask after jobs still running."""
        waiting_jobs: dict[str, list[Request]] = {}
        for request in self.requests:
            if request.answer is None:
                self._send(request)
            elif not request.done:
                waiting_jobs.setdefault(request.base, []).append(request)
        for base, requests in waiting_jobs.items():
            query_id = f"ctl-recover-{uuid.uuid4().hex[:12]}"
            self._recoveries[query_id] = requests
            body = {"id": query_id, "action": "jobs", "limit": 50}
            self.session.publish(f"{base}/control/action", body, self._responses[base])

    def _availability(self, base: str, online: bool) -> None:
        for request in self.requests:
            if request.base != base:
                continue
            if online:
                request.offline_since = None
            elif request.offline_since is None:
                request.offline_since = time.monotonic()

    def _route(self, message: Message, on_progress: ProgressHandler | None) -> None:
        if message.topic.endswith("/availability"):
            self._availability(
                message.topic.removesuffix("/availability"), message.payload == b"online"
            )
            return
        body = message.json()
        if body is None:
            return
        command_id = body.get("id")
        event = body.get("event")
        if isinstance(command_id, str) and command_id in self._recoveries:
            self._recovered(self._recoveries.pop(command_id), body)
            return
        request = self._by_id.get(command_id) if isinstance(command_id, str) else None
        if request is not None and event not in JOB_EVENTS and request.answer is None:
            request.answer = body
            if body.get("ok") and isinstance(body.get("job"), str):
                request.job_id = body["job"]
            return
        job = body.get("job")
        for waiting in self.requests:
            if waiting.job_id is None or waiting.job_id != job or waiting.end is not None:
                continue
            if not message.topic.startswith(f"{waiting.base}/"):
                continue
            if event in JOB_END_EVENTS:
                waiting.end = body
            elif event == "job.progress" and on_progress is not None:
                on_progress(waiting, body.get("data") or {})

    @staticmethod
    def _recovered(requests: list[Request], answer: dict[str, Any]) -> None:
        jobs = {j.get("id"): j for j in (answer.get("data") or {}).get("jobs", [])}
        for request in requests:
            job = jobs.get(request.job_id)
            if request.end is None and job is not None and job.get("finished"):
                request.end = {
                    "event": f"job.{job['state']}",
                    "ok": job["state"] == "succeeded",
                    "job": request.job_id,
                    "message": f"{job['kind']} {job['state']} (looked up after a reconnect)",
                    "data": job,
                    "error": job.get("error"),
                }

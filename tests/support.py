"""Test helpers: an MQTT probe client (paho, mTLS) and the agent as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from devstack import Broker, MediaServer, WebServer, agent_config_toml, terminate_group
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.stream.ffmpeg_args import STAMP_HEIGHT, decode_stamp
from tests import contract

WAIT_S = 10.0


def tls_context(
    ca: Path, cert: Path | None, key: Path | None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    if max_version is not None:
        # OpenSSL 3 refuses TLS < 1.2 at its default security level on the client side too;
        # level 0 lets this client offer 1.1 so that the broker is the one refusing.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # offering old TLS is the point
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = max_version
    return context


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None
    arrived: float = field(default_factory=time.time, compare=False)  # time.time() received

    def json(self) -> Any:
        return json.loads(self.payload)


class Probe:
    """A paho MQTT 5 client that records everything it receives, for assertions with timeouts."""

    def __init__(
        self,
        broker: Broker,
        identity: str,
        ca_dir: Path | None = None,
        session_expiry_s: int = 0,
    ) -> None:
        """``session_expiry_s`` > 0: a persistent session the broker queues messages in while
        this probe is away (paho reconnects it by itself after a broker restart)."""
        pki = ca_dir or broker.pki_dir
        self.identity = identity
        self.messages: queue.Queue[Received] = queue.Queue()
        self.history: list[Received] = []
        self._connected = threading.Event()
        self.connect_result: Any = None  # paho's ReasonCode, set by on_connect
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{identity}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        client_dir = pki / "clients" / identity
        self.client.tls_set_context(
            tls_context(pki / "ca_chain.pem", client_dir / "cert.pem", client_dir / "key.pem")
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        connect_properties = None
        if session_expiry_s:
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = session_expiry_s
            self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect(
            "127.0.0.1",
            broker.port,
            keepalive=30,
            clean_start=not session_expiry_s,
            properties=connect_properties,
        )
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            raise TimeoutError(f"probe {identity} did not connect")
        result: Any = self.connect_result
        if result.is_failure:
            raise ConnectionRefusedError(str(result))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_result = rc
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        contract.check(message.topic, bytes(message.payload))
        props = getattr(message, "properties", None)
        correlation = getattr(props, "CorrelationData", None)
        self.messages.put(
            Received(message.topic, bytes(message.payload), message.retain, correlation)
        )

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        if not done.wait(WAIT_S):
            raise TimeoutError(f"no SUBACK for {topic}")

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
        contract.sent_by_a_test(topic, payload.encode() if isinstance(payload, str) else payload)
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        if wait:
            info.wait_for_publish(WAIT_S)
        return info

    def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = WAIT_S, what: str = ""
    ) -> Received:
        """The first message (already received or arriving in time) that satisfies predicate."""
        for seen in self.history:
            if predicate(seen):
                self.history.remove(seen)
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                topics = [m.topic for m in self.history[-10:]]
                raise AssertionError(f"timed out waiting for {what or predicate}; last: {topics}")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(message):
                return message
            self.history.append(message)

    def wait_event(self, timeout: float = WAIT_S, **match: Any) -> dict[str, Any]:
        """The next status event whose fields equal ``match``."""

        def predicate(m: Received) -> bool:
            if not m.topic.endswith("/status"):
                return False
            body = m.json()
            return all(body.get(k) == v for k, v in match.items())

        result: dict[str, Any] = self.wait_for(predicate, timeout, what=f"status {match}").json()
        return result

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def is_online(camera: str) -> Callable[[Received], bool]:
    """The availability `online` of fleet camera ``camera`` (topic base camera/<camera>)."""
    return lambda m: m.topic == f"camera/{camera}/availability" and m.payload == b"online"


def answers(command_id: str) -> Callable[[Received], bool]:
    """The answer (or a job event) to command ``command_id``, on some camera's status."""
    return lambda m: m.topic.endswith("/status") and m.json().get("id") == command_id


def settle(probe: Probe, seconds: float) -> list[Received]:
    """Everything ``probe`` holds (its history, which this empties) and receives within
    ``seconds``: for asserting that something did *not* arrive."""
    found, probe.history[:] = list(probe.history), []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            found.append(probe.messages.get(timeout=left))
        except queue.Empty:
            break
    return found


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (of all its threads); [] once it is gone."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def wait_until(condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    """Poll ``condition`` (a file appearing, a process ending) until it is truthy."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)
    return result


def camera_agent_env(pki: Path, camera: str) -> dict[str, str]:
    """The environment that makes an AgentProcess the agent of fleet camera ``camera``: the
    identity `camera-pki issue <camera> --role agent --camera <camera>` made, and its topic
    base `camera/<camera>`."""
    client = pki / "clients" / camera
    return {
        "CAMERA_AGENT_MQTT__CERT": str(client / "cert.pem"),
        "CAMERA_AGENT_MQTT__KEY": str(client / "key.pem"),
        "CAMERA_AGENT_MQTT__BASE_TOPIC": f"camera/{camera}",
        "CAMERA_AGENT_CAMERA__ID": camera,
    }


class AgentProcess:
    """`camera-agent run` as a subprocess in its own process group."""

    def __init__(
        self,
        broker: Broker,
        work_dir: Path,
        media: MediaServer | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        web: WebServer | None = None,
    ) -> None:
        """``wrapper``: a command the agent runs under (strace, for the benchmark); ``web``:
        the nginx serving its captures (its `storage.public_url`)."""
        self.wrapper = wrapper or []
        self.broker = broker
        self.work_dir = work_dir
        self.config_path = work_dir / "agent.toml"
        self.log_path = work_dir / "agent.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            agent_config_toml(broker.pki_dir, broker.port, work_dir, media=media, web=web)
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, **(env or {})}

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "agent",
                    "run",
                    "--config",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = terminate_group(self.process)
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = WAIT_S) -> None:
        """Until the agent has logged ``text`` (polling its log file)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"agent never logged {text!r}; log:\n{self.log_text()}")
            time.sleep(0.05)


@dataclass(frozen=True)
class Frame:
    arrived: float  # time.time() when the frame was decoded
    stamp_ms: int  # the wall clock burned into the frame when it was made
    luma: float  # mean luma below the stamp strip and clock
    middle_row: bytes = b""  # the row across the middle (where the test pattern's box moves)


class RtspReader:
    """A player: real ffmpeg decoding the RTSP stream, one gray frame at a time.

    It is one RTSP session for its whole life, so gaps in its frames are interruptions a viewer
    would see.
    """

    def __init__(self, url: str, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.frames: list[Frame] = []
        # ffmpeg's complaints with the time each arrived, to tell when in a test they came.
        self.complaints: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
             "-fflags", "nobuffer", "-flags", "low_delay", "-i", url,
             "-f", "rawvideo", "-pix_fmt", "gray", "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._complaints_thread = threading.Thread(target=self._read_complaints, daemon=True)
        self._complaints_thread.start()

    def _read_complaints(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.complaints.append((time.time(), line.decode(errors="replace").rstrip()))

    def _read(self) -> None:
        size = self.width * self.height
        assert self.process.stdout is not None
        body_start = self.width * (STAMP_HEIGHT + self.height // 12 + 16)
        while True:
            data = self.process.stdout.read(size)
            if len(data) < size:
                return
            now = time.time()
            stamp = decode_stamp(
                data[self.width * (STAMP_HEIGHT // 2) :], self.width, int(now * 1000)
            )
            body = data[body_start::97]  # a sparse sample is plenty for a mean
            middle = data[self.width * (self.height // 2) : self.width * (self.height // 2 + 1)]
            frame = Frame(now, stamp, sum(body) / len(body), middle)
            with self._lock:
                self.frames.append(frame)

    def snapshot(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = WAIT_S) -> Frame:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            frames = self.snapshot()
            for frame in frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(frames)
            time.sleep(0.01)  # polling a list filled by the reader thread
        raise AssertionError(f"no such frame within {timeout} s ({seen} frames read)")

    def close(self) -> str:
        self.process.kill()
        self.process.wait()
        self._complaints_thread.join(timeout=5)
        with self._lock:
            return "".join(f"{line}\n" for _, line in self.complaints)

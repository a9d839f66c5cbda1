"""Fleet benchmark: many real agents (test pattern, streaming off) on one real Mosquitto.

For each fleet size (1, the baseline, then 10, 50 and 100 by default) on a fresh broker with the
shipped config: every agent gets its own identity and topic base from camera-pki (`camN`,
`camera/camN`), then

- idle: nothing is sent for `--idle-seconds`; each agent's CPU and resident memory, and the
  broker's CPU, are read from /proc;
- load: one fleet-wide operator commands every camera in turn (a `settings` change) at a steady
  `--rate` per second, without waiting for answers, and times each command to its answer on
  `camera/camN/status`; the broker's CPU is read over the same window.

Ratios compare each size with the one-agent baseline of the same run. The issue's targets:
100 agents, p99 < 20 ms, broker < 10 % of a core, an agent under 45 MB (42.9 MiB).

Usage: `scripts/bench fleet [--sizes 1,10,50,100] [--rate 20] [--commands 400]
[--idle-seconds 20]`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from devstack import Broker
from paho.mqtt.enums import CallbackAPIVersion

from bench.control_plane import process_usage, quantile
from pki.authority import CertificateAuthority, Role
from tests.support import AgentProcess, camera_agent_env, tls_context

START_TIMEOUT_S = 300.0
ANSWER_TIMEOUT_S = 10.0


class Operator:
    """A fleet-wide operator that sends without waiting and notes when each answer arrives."""

    def __init__(self, broker: Broker) -> None:
        pki = broker.pki_dir
        self.sent: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.online: set[str] = set()
        self._changed = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-operator", protocol=mqtt.MQTTv5
        )
        client_dir = pki / "clients" / "operator"
        self.client.tls_set_context(
            tls_context(pki / "ca_chain.pem", client_dir / "cert.pem", client_dir / "key.pem")
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # as the agent does (mqtt.tcp_nodelay)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        self.client.subscribe([("camera/+/status", 1), ("camera/+/availability", 1)])

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        arrived = time.perf_counter()
        camera = message.topic.split("/")[1]
        with self._changed:
            if message.topic.endswith("/availability"):
                if message.payload == b"online":
                    self.online.add(camera)
                else:
                    self.online.discard(camera)
            else:
                command_id = json.loads(message.payload).get("id")
                if command_id in self.sent and command_id not in self.answered:
                    self.answered[command_id] = arrived
            self._changed.notify_all()

    def wait(self, done: Any, timeout: float) -> bool:
        with self._changed:
            return bool(self._changed.wait_for(done, timeout))

    def command(self, camera: str, command_id: str, brightness: float) -> None:
        payload = json.dumps({"id": command_id, "set": {"brightness": brightness}})
        with self._changed:
            self.sent[command_id] = time.perf_counter()
        self.client.publish(f"camera/{camera}/control/settings", payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class FleetResult:
    size: int
    start_s: float
    latencies_ms: list[float]
    lost: int
    broker_load_cpu: float  # % of one core while commanded
    broker_idle_cpu: float
    broker_rss_mib: float
    agent_rss_mib: list[float]
    agent_idle_cpu: list[float]  # % of one core, each agent


def cpu_percent(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU over the next ``seconds``, as % of one core."""
    before = [process_usage(pid)[0] for pid in pids]
    started = time.monotonic()
    time.sleep(seconds)  # the idle window is what is measured
    elapsed = time.monotonic() - started
    return [
        100 * (process_usage(pid)[0] - b) / elapsed for pid, b in zip(pids, before, strict=True)
    ]


def run_fleet(root: Path, pki_dir: Path, size: int, args: argparse.Namespace) -> FleetResult:
    cameras = [f"cam{n:03d}" for n in range(1, size + 1)]
    work = root / f"fleet-{size}"
    broker = Broker(pki_dir, work / "broker")
    broker.start()
    agents = [
        AgentProcess(broker, work / camera, env=camera_agent_env(pki_dir, camera))
        for camera in cameras
    ]
    operator = Operator(broker)
    try:
        began = time.monotonic()
        for agent in agents:
            agent.start()
        if not operator.wait(lambda: operator.online >= set(cameras), START_TIMEOUT_S):
            raise TimeoutError(f"{len(operator.online)} of {size} agents came online")
        start_s = time.monotonic() - began
        assert broker.process is not None
        pids = [agent.process.pid for agent in agents if agent.process is not None]
        time.sleep(2)  # let the last agents' start-up publishes settle before idling
        idle = cpu_percent([broker.process.pid, *pids], args.idle_seconds)
        agent_rss = [process_usage(pid)[1] / 2**20 for pid in pids]

        broker_cpu0 = process_usage(broker.process.pid)[0]
        load_began = time.monotonic()
        interval = 1 / args.rate
        for n in range(args.commands):
            due = load_began + n * interval
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)  # a steady rate, not a burst
            operator.command(cameras[n % size], f"f{size}-{n}", round((n % 100) / 100, 2))
        # Unanswered commands are counted as lost below, not waited for without end.
        operator.wait(lambda: len(operator.answered) >= len(operator.sent), ANSWER_TIMEOUT_S)
        load_cpu, broker_rss = process_usage(broker.process.pid)
        load_cpu -= broker_cpu0
        load_s = time.monotonic() - load_began
    finally:
        operator.close()
        for agent in agents:
            agent.stop()
        broker.stop()
    latencies = [
        (operator.answered[i] - sent) * 1000
        for i, sent in operator.sent.items()
        if i in operator.answered
    ]
    return FleetResult(
        size,
        start_s,
        latencies,
        len(operator.sent) - len(latencies),
        100 * load_cpu / load_s,
        idle[0],
        broker_rss / 2**20,
        agent_rss,
        idle[1:],
    )


def interpreter_floor_mib() -> float:
    """What a Python that imports only pydantic and aiomqtt holds: the floor of any agent."""
    code = (
        "import pydantic, aiomqtt, re;"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,10,50,100")
    parser.add_argument("--rate", type=float, default=20.0, help="commands per second")
    parser.add_argument("--commands", type=int, default=400)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[FleetResult] = []
    with tempfile.TemporaryDirectory(prefix="camera-bench-fleet-") as tmp:
        root = Path(tmp)
        ca = CertificateAuthority(root / "pki")
        ca.init()
        for n in range(1, max(sizes) + 1):
            ca.issue(f"cam{n:03d}", Role.AGENT, camera=f"cam{n:03d}")
        for size in sizes:
            print(f"fleet of {size}...", flush=True)
            results.append(run_fleet(root, root / "pki", size, args))

    base = results[0]
    print(
        f"\n{args.commands} settings commands at {args.rate:g}/s, each camera in turn,"
        f" one operator; mTLS on loopback, {os.cpu_count()} cores"
    )
    print(
        f"{'agents':>6}{'start s':>9}{'median ms':>11}{'p99 ms':>9}{'p99 ratio':>11}{'lost':>6}"
        f"{'broker %core':>14}{'idle %core':>12}{'broker MiB':>12}"
    )
    for r in results:
        p99 = quantile(r.latencies_ms, 0.99) if r.latencies_ms else float("nan")
        median = statistics.median(r.latencies_ms) if r.latencies_ms else float("nan")
        ratio = p99 / quantile(base.latencies_ms, 0.99)
        print(
            f"{r.size:>6}{r.start_s:>9.1f}{median:>11.2f}{p99:>9.2f}{ratio:>11.2f}{r.lost:>6}"
            f"{r.broker_load_cpu:>14.2f}{r.broker_idle_cpu:>12.2f}{r.broker_rss_mib:>12.1f}"
        )
    print(
        f"\n{'agents':>6}{'agent RSS median MiB':>22}{'max MiB':>9}{'all agents MiB':>16}"
        f"{'agent idle %core median':>25}{'max':>7}"
    )
    for r in results:
        print(
            f"{r.size:>6}{statistics.median(r.agent_rss_mib):>22.1f}{max(r.agent_rss_mib):>9.1f}"
            f"{sum(r.agent_rss_mib):>16.0f}{statistics.median(r.agent_idle_cpu):>25.3f}"
            f"{max(r.agent_idle_cpu):>7.3f}"
        )
    floor = interpreter_floor_mib()
    print(f"\nfloor: a Python importing only pydantic and aiomqtt holds {floor:.1f} MiB")
    print("targets: 100 agents, p99 < 20 ms, broker < 10 % of a core, agent < 45 MB (42.9 MiB)")
    return 0 if all(r.lost == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

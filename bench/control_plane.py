"""Control-plane benchmark: command-to-answer latency over mTLS, and the agent's idle footprint.

Two configurations run side by side in the same process, against real Mosquitto and the real
agent on loopback:

- baseline: Nagle's algorithm left on (no `set_tcp_nodelay` in the broker, agent and client
  sockets untouched), as Mosquitto and paho ship;
- shipped: `set_tcp_nodelay true` (broker/mosquitto.conf) and TCP_NODELAY on agent and client.

Usage: `scripts/bench [--round-trips N] [--idle-seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import Broker

from pki.authority import CertificateAuthority
from tests.support import AgentProcess, Probe

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BaselineBroker(Broker):
    """The shipped config minus `set_tcp_nodelay`: Mosquitto's default socket behaviour."""

    def config_text(self) -> str:
        return super().config_text().replace("set_tcp_nodelay true", "")


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (enough for a printed table)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Latency:
    samples_ms: list[float]

    def quantile(self, q: float) -> float:
        return quantile(self.samples_ms, q)


@contextmanager
def running_agent(
    broker: Broker, work: Path, nodelay: bool
) -> Iterator[tuple[AgentProcess, Probe]]:
    os.environ["CAMERA_AGENT_MQTT__TCP_NODELAY"] = "true" if nodelay else "false"
    operator = Probe(broker, "operator")
    sock = operator.client.socket()
    if nodelay and isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    operator.subscribe("camera/#")
    agent = AgentProcess(broker, work)
    agent.start()
    try:
        operator.wait_for(
            lambda m: m.topic == "camera/availability" and m.payload == b"online", 20, "online"
        )
        yield agent, operator
    finally:
        agent.stop()
        operator.close()


def measure_round_trips(operator: Probe, count: int) -> Latency:
    samples: list[float] = []
    for i in range(count + 20):
        command = json.dumps({"id": f"b{i}", "set": {"brightness": (i % 100) / 100}})
        start = time.perf_counter()
        operator.publish("camera/control/settings", command, wait=False)
        operator.wait_event(id=f"b{i}")
        if i >= 20:  # the first round trips warm up TLS session state and Python caches
            samples.append((time.perf_counter() - start) * 1000)
        operator.history.clear()
    return Latency(samples)


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return cpu_s, rss


def measure_idle(agent: AgentProcess, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, RSS MiB) over ``seconds`` with no commands."""
    assert agent.process is not None
    pid = agent.process.pid
    cpu0, _ = process_usage(pid)
    t0 = time.monotonic()
    time.sleep(seconds)  # idling is the thing being measured
    cpu1, rss = process_usage(pid)
    return 100 * (cpu1 - cpu0) / (time.monotonic() - t0), rss / 2**20


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp:
        root = Path(tmp)
        CertificateAuthority(root / "pki").init()
        results: dict[str, Latency] = {}
        idle: tuple[float, float] | None = None
        for name, broker_cls, nodelay in (
            ("baseline (Nagle on)", BaselineBroker, False),
            ("shipped (TCP_NODELAY)", Broker, True),
        ):
            broker = broker_cls(root / "pki", root / name.split()[0])
            broker.start()
            try:
                with running_agent(broker, root / f"agent-{name.split()[0]}", nodelay) as (
                    agent,
                    operator,
                ):
                    results[name] = measure_round_trips(operator, args.round_trips)
                    if nodelay and args.idle_seconds > 0:
                        idle = measure_idle(agent, args.idle_seconds)
            finally:
                broker.stop()

    base = results["baseline (Nagle on)"]
    print(f"\ncommand -> status answer over mTLS on loopback, {args.round_trips} round trips")
    print(f"{'configuration':<24}{'median ms':>11}{'p95 ms':>9}{'p99 ms':>9}{'median ratio':>14}")
    for name, latency in results.items():
        ratio = statistics.median(latency.samples_ms) / statistics.median(base.samples_ms)
        print(
            f"{name:<24}{statistics.median(latency.samples_ms):>11.2f}"
            f"{latency.quantile(0.95):>9.2f}{latency.quantile(0.99):>9.2f}{ratio:>14.3f}"
        )
    print("targets: median < 1 ms, p99 < 5 ms (shipped configuration)")
    if idle is not None:
        cpu, rss = idle
        print(f"\nagent idle for {args.idle_seconds:.0f} s, no commands")
        print(f"{'CPU % of one core':<24}{cpu:>11.3f}\n{'resident memory MiB':<24}{rss:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

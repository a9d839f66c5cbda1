"""Control-plane benchmark: command-to-answer latency over mTLS, and the agent's idle footprint.

Two configurations run side by side in the same process, against real Mosquitto and the real
agent on loopback:

- baseline: Nagle's algorithm left on (no `set_tcp_nodelay` in the broker, agent and client
  sockets untouched), as Mosquitto and paho ship;
- shipped: `set_tcp_nodelay true` (broker/mosquitto.conf) and TCP_NODELAY on agent and client;

the shipped one also under a concurrent burst of other commands (another client sending
settings and `jobs` queries as fast as the broker takes them), and once under strace, counting
the disk syncs the agent makes during the measured round trips, by thread: the event loop's
(which every answer waits behind) and worker threads' (write-behind, off the answer path).

Usage: `scripts/bench [--round-trips N] [--idle-seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import Broker

from pki.authority import CertificateAuthority, Role
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


SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync_file_range", "msync")
STRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\(")


@dataclass
class Syncs:
    on_loop: int  # by the agent's main thread, where the event loop runs
    in_workers: int


def count_syncs(trace: Path, loop_tid: int, start: float, end: float) -> Syncs:
    """The sync calls strace saw between ``start`` and ``end`` (Unix time), by thread."""
    on_loop = in_workers = 0
    for line in trace.read_text().splitlines():
        match = STRACE_LINE.match(line)
        if match is None or "resumed>" in line:
            continue
        tid, at = int(match[1]), float(match[2])
        if start <= at <= end and match[3] in SYNC_CALLS:
            on_loop += tid == loop_tid
            in_workers += tid != loop_tid
    return Syncs(on_loop, in_workers)


def traced_pid(tracer_pid: int) -> int:
    """The agent's pid (= its main thread's id) under the strace process ``tracer_pid``."""
    children = Path(f"/proc/{tracer_pid}/task/{tracer_pid}/children").read_text().split()
    return int(children[0])


class Burst:
    """Another operator sending settings and `jobs` queries back to back, without waiting."""

    def __init__(self, broker: Broker) -> None:
        self._probe = Probe(broker, "burst")
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.sent
            if n % 2:
                command = {"id": f"burst{n}", "set": {"contrast": 1 + (n % 50) / 100}}
                self._probe.publish("camera/control/settings", json.dumps(command), wait=False)
            else:
                command = {"id": f"burst{n}", "action": "jobs"}
                self._probe.publish("camera/control/action", json.dumps(command), wait=False)
            self.sent += 1
            time.sleep(0.002)  # ~500 commands a second, far beyond any UI

    def __enter__(self) -> Burst:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._probe.close()


@contextmanager
def running_agent(
    broker: Broker, work: Path, nodelay: bool, wrapper: list[str] | None = None
) -> Iterator[tuple[AgentProcess, Probe]]:
    os.environ["CAMERA_AGENT_MQTT__TCP_NODELAY"] = "true" if nodelay else "false"
    operator = Probe(broker, "operator")
    sock = operator.client.socket()
    if nodelay and isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    operator.subscribe("camera/#")
    agent = AgentProcess(broker, work, wrapper=wrapper)
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
        ca = CertificateAuthority(root / "pki")
        ca.init()
        ca.issue("burst", Role.OPERATOR)
        results: dict[str, Latency] = {}
        idle: tuple[float, float] | None = None
        syncs: Syncs | None = None
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
                    if nodelay:
                        with Burst(broker) as burst:
                            results["shipped, concurrent burst"] = measure_round_trips(
                                operator, args.round_trips
                            )
                        print(f"burst: {burst.sent} other commands during the measurement")
                    if nodelay and args.idle_seconds > 0:
                        idle = measure_idle(agent, args.idle_seconds)
                if nodelay and shutil.which("strace"):
                    syncs = measure_syncs(broker, root, args.round_trips)
            finally:
                broker.stop()

    base = results["baseline (Nagle on)"]
    print(f"\ncommand -> status answer over mTLS on loopback, {args.round_trips} round trips")
    print(f"{'configuration':<27}{'median ms':>11}{'p95 ms':>9}{'p99 ms':>9}{'median ratio':>14}")
    for name, latency in results.items():
        ratio = statistics.median(latency.samples_ms) / statistics.median(base.samples_ms)
        print(
            f"{name:<27}{statistics.median(latency.samples_ms):>11.2f}"
            f"{latency.quantile(0.95):>9.2f}{latency.quantile(0.99):>9.2f}{ratio:>14.3f}"
        )
    print("targets: median < 1 ms, p99 < 5 ms (shipped configuration), zero syncs on the loop")
    if syncs is not None:
        print(f"\ndisk syncs by the agent during {args.round_trips} settings round trips (strace)")
        print(f"{'on the event loop':<27}{syncs.on_loop:>11}")
        print(f"{'in worker threads':<27}{syncs.in_workers:>11}")
    else:
        print("\nstrace not installed: disk syncs not counted")
    if idle is not None:
        cpu, rss = idle
        print(f"\nagent idle for {args.idle_seconds:.0f} s, no commands")
        print(f"{'CPU % of one core':<27}{cpu:>11.3f}\n{'resident memory MiB':<27}{rss:>11.1f}")
    return 0


def measure_syncs(broker: Broker, root: Path, round_trips: int) -> Syncs:
    """The shipped agent under strace (seccomp-filtered, so only sync calls stop it)."""
    trace = root / "syncs.strace"
    strace = ["strace", "-f", "--seccomp-bpf", "-ttt", "-o", str(trace),
              "-e", "trace=" + ",".join(SYNC_CALLS)]  # fmt: skip
    with running_agent(broker, root / "agent-traced", True, wrapper=strace) as (agent, operator):
        assert agent.process is not None
        loop_tid = traced_pid(agent.process.pid)
        start = time.time()
        measure_round_trips(operator, round_trips)
        end = time.time()
    return count_syncs(trace, loop_tid, start, end)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

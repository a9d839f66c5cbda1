"""`camera-agent health`: what a container runtime's HEALTHCHECK sees."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from devstack import MediaServer

from agent.health import STALE_AFTER_S, HealthReport, check_health, write_health
from tests.support import AgentProcess


@pytest.mark.parametrize(
    ("report", "age", "healthy", "reason"),
    [
        (HealthReport(0, True, True, "online"), 1, True, "stream online"),
        (HealthReport(0, True, False, "stopped"), 1, True, "stream off on purpose"),
        (HealthReport(0, False, True, "online"), 1, False, "not connected to the broker"),
        (HealthReport(0, True, True, "backoff"), 1, False, "the stream is backoff"),
        (HealthReport(0, True, True, "online"), STALE_AFTER_S + 1, False, "hung or stopped"),
    ],
)
def test_health_verdicts(
    tmp_path: Path, report: HealthReport, age: float, healthy: bool, reason: str
) -> None:
    path = tmp_path / "health.json"
    write_health(path, report)
    ok, why = check_health(path, now=report.ts + age)
    assert ok is healthy
    assert reason in why


def health(agent: AgentProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "health", "--config", str(agent.config_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def wait_health(agent: AgentProcess, code: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = health(agent)
        if result.returncode == code:
            return result.stdout
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.5)  # polling a file the agent rewrites at least every 10 s


def test_health_follows_the_running_agent(
    streaming_agent: AgentProcess, media: MediaServer
) -> None:
    assert "healthy: connected to the broker; stream online" in wait_health(streaming_agent, 0)
    media.stop()  # the stream goes down
    assert "the stream is" in wait_health(streaming_agent, 1)
    media.start()  # and comes back by itself
    assert "stream online" in wait_health(streaming_agent, 0)
    assert streaming_agent.stop() == 0
    result = health(streaming_agent)  # at once, without waiting for the report to go stale
    assert result.returncode == 1
    assert "not connected to the broker" in result.stdout

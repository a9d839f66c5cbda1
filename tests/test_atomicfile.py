"""Atomic writes survive a power cut: a temporary file left behind blocks no later write, and
the agent sweeps such leftovers when it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from devstack import Broker

from agent.atomicfile import sweep_temporaries, write_atomic
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe
from tests.test_health import wait_health


def test_a_leftover_from_the_same_pid_does_not_block_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.getpid", lambda: 1)  # in a container the agent is always PID 1
    target = tmp_path / "controls.json"
    (tmp_path / ".controls.json.tmp-1").write_text("{half")  # a power cut mid-write
    write_atomic(target, b'{"brightness": 0.3}')
    write_atomic(target, b'{"brightness": 0.4}')
    assert json.loads(target.read_text()) == {"brightness": 0.4}
    assert sweep_temporaries(tmp_path) == [".controls.json.tmp-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controls.json"]


def test_the_agent_sweeps_leftovers_at_start_and_stays_healthy(
    broker: Broker, operator: Probe, tmp_path: Path
) -> None:
    agent = AgentProcess(broker, tmp_path / "agent")
    state = tmp_path / "agent" / "state"
    (state / "jobs").mkdir(parents=True)
    leftovers = [state / ".health.json.tmp-1", state / ".controls.json.tmp-1",
                 state / "jobs" / ".abc.json.tmp-1"]  # fmt: skip
    for leftover in leftovers:
        leftover.write_text("half")
    start_agent(agent, operator)
    try:
        agent.wait_for_log("a write an earlier run did not finish")
        assert not any(p.exists() for p in leftovers)
        # health.json is written again and again, as before the power cut (the container's
        # HEALTHCHECK reads it): healthy, with streaming off in this agent's config.
        assert "healthy: connected to the broker" in wait_health(agent, 0)
    finally:
        agent.stop()

"""Health as a container runtime asks for it: `camera-agent health` exits 0 or 1.

The running agent rewrites `state_dir/health.json` (atomically) on every change and at least
every HEARTBEAT_S; the check reads it. Healthy means: the file is fresh (the agent's loop is
alive), the agent is connected to the broker, and, when it is meant to stream, the stream is
online. A probe process never talks to the broker itself: it would need the agent's
certificate, and with it would take the agent's session.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.atomicfile import write_atomic

HEARTBEAT_S = 10.0
STALE_AFTER_S = 3 * HEARTBEAT_S


@dataclass(frozen=True)
class HealthReport:
    ts: float
    mqtt_connected: bool
    stream_wanted: bool
    stream_state: str


def health_path(state_dir: Path) -> Path:
    return state_dir / "health.json"


def write_health(path: Path, report: HealthReport) -> None:
    write_atomic(path, json.dumps(asdict(report)).encode())


def check_health(path: Path, now: float | None = None) -> tuple[bool, str]:
    """(healthy, the reason in words)."""
    now = time.time() if now is None else now
    try:
        report = HealthReport(**json.loads(path.read_text()))
    except FileNotFoundError:
        return False, f"no {path}: the agent has not started (or state_dir differs)"
    except (ValueError, TypeError) as err:
        return False, f"unreadable {path}: {err}"
    age = now - report.ts
    if age > STALE_AFTER_S:
        return False, f"the agent last reported {age:.0f} s ago: hung or stopped"
    if not report.mqtt_connected:
        return False, "not connected to the broker"
    if report.stream_wanted and report.stream_state != "online":
        return False, f"the stream is {report.stream_state}"
    stream = "online" if report.stream_wanted else "off on purpose"
    return True, f"connected to the broker; stream {stream}"

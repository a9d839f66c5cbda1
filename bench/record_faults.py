"""Recording accuracy under faults: how much of the time asked a recording keeps.

For no fault, a pusher SIGKILL, a MediaMTX restart and a size change, 3 s into an 8 s recording:
the seconds requested, kept and lost, the outage that caused the loss (the stream's own
`downtime_s`), the files and the gaps' causes. The no-fault run is the baseline of the ratios.

Usage: `scripts/bench record_faults [--seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from bench.stack import Stack, local_stack
from tests.support import AgentProcess, Probe
from tests.test_stream import pusher_pid

FAULT_AT_S = 3.0


@dataclass
class Row:
    scenario: str
    requested: float
    kept: float
    outage: float
    files: int
    causes: str


def record_with(
    stack: Stack, operator: Probe, agent: AgentProcess, seconds: float,
    name: str, fault: Callable[[], float | None] | None,
) -> Row:  # fmt: skip
    """``fault`` returns the outage when it knows it (a setting's answer), else None: then the
    outage is the stream's own `downtime_s` when it is back."""
    operator.history.clear()
    operator.publish(
        "camera/control/action", json.dumps({"id": name, "action": "record", "duration": seconds})
    )
    job = operator.wait_event(id=name, event="job.queued")["job"]
    outage = 0.0
    if fault is not None:
        operator.wait_for(
            lambda m: m.topic == "camera/status" and m.json().get("job") == job
            and m.json()["event"] == "job.progress"
            and m.json()["data"]["progress"]["elapsed_s"] >= FAULT_AT_S,
            timeout=20, what="the fault's moment",
        )  # fmt: skip
        known = fault()
        if known is not None:
            outage = known
        else:
            back = operator.wait_for(
                lambda m: m.topic == "camera/status" and m.json()["event"] == "stream.online"
                and "downtime_s" in m.json()["data"],
                timeout=40, what="the stream back",
            )  # fmt: skip
            outage = back.json()["data"]["downtime_s"]
    result = operator.wait_event(job=job, event="job.succeeded", timeout=seconds + 60)["data"][
        "result"
    ]
    causes = ", ".join(g["cause"] for g in result["gaps"]) or "-"
    return Row(
        name, result["requested_s"], result["duration_s"], outage, len(result["files"]), causes
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    rows = []
    with local_stack() as stack:
        operator = Probe(stack.broker, "operator")
        operator.subscribe("camera/#")
        env = {"CAMERA_AGENT_STREAM__RESTART_MIN_S": "0.05"}
        agent = AgentProcess(stack.broker, stack.root / "agent", media=stack.media, env=env)
        agent.start()
        try:
            operator.wait_event(event="stream.online", timeout=20)

            def kill() -> None:
                os.kill(pusher_pid(agent), signal.SIGKILL)

            def restart_mediamtx() -> None:
                stack.media.restart()

            def resize() -> float:
                settings = json.dumps({"id": "w", "set": {"width": 960}})
                operator.publish("camera/control/settings", settings)
                answer = operator.wait_event(id="w", event="settings.applied", timeout=30)
                return float(answer["data"]["downtime_s"])

            for name, fault in (
                ("no fault", None),
                ("pusher SIGKILL", kill),
                ("MediaMTX restart", restart_mediamtx),
                ("size change", resize),
            ):
                rows.append(record_with(stack, operator, agent, args.seconds, name, fault))
        finally:
            agent.stop()
            operator.close()
    base = rows[0].kept / rows[0].requested
    print(f"\nrecord {args.seconds:g} s, the fault {FAULT_AT_S:g} s in")
    print(f"{'scenario':<18}{'asked s':>8}{'kept s':>8}{'lost s':>8}{'outage s':>9}"
          f"{'files':>6}{'kept/base':>10}  gaps")  # fmt: skip
    for r in rows:
        ratio = r.kept / r.requested / base
        print(f"{r.scenario:<18}{r.requested:>8.2f}{r.kept:>8.2f}{r.requested - r.kept:>8.2f}"
              f"{r.outage:>9.2f}{r.files:>6}{ratio:>10.3f}  {r.causes}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

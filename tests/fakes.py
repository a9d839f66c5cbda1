"""In-memory fakes of the agent's boundaries, for unit tests of the logic behind them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.camera.v4l2_ctl import V4l2Control, parse_controls
from agent.process import CommandResult
from tests.support import Received


@dataclass
class InMemoryBus:
    """Stands in for `BrokerLink.publish`: records what the agent would publish."""

    published: list[Received] = field(default_factory=list)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> bool:
        self.published.append(Received(topic, payload, retain, correlation_data))
        return True

    def on(self, topic: str) -> list[Any]:
        return [m.json() for m in self.published if m.topic == topic]


FIXTURES = Path(__file__).resolve().parent / "fixtures"
# uvcvideo marks these inactive while the control in the pair has the given value.
_UVC_INACTIVE_WHILE = {
    "focus_absolute": ("focus_automatic_continuous", 1),
    "white_balance_temperature": ("white_balance_automatic", 1),
    "exposure_time_absolute": ("auto_exposure", 3),
}
_TAGS = {"int": "(int)    :", "bool": "(bool)   :", "menu": "(menu)   :"}


def render_controls(controls: list[V4l2Control]) -> str:
    """The listing as v4l2-ctl prints it (print_qctrl in v4l2-ctl-common.cpp)."""
    lines = ["", "User Controls", ""]
    for c in controls:
        if c.type == "bool":
            rest = f"default={c.default} value={c.value}"
        elif c.type == "menu":
            label = c.menu[c.value or 0]
            rest = f"min={c.minimum} max={c.maximum} default={c.default} value={c.value} ({label})"
        else:
            rest = (
                f"min={c.minimum} max={c.maximum} step={c.step} default={c.default} value={c.value}"
            )
        if c.flags:
            rest += " flags=" + ",".join(sorted(c.flags))
        lines.append(f"{c.name:>31} {c.cid:#010x} {_TAGS[c.type]} {rest}")
        lines += [f"\t\t\t\t{i}: {label}" for i, label in c.menu.items()]
    return "\n".join(lines) + "\n"


class FakeV4l2Device:
    """Stands in for `v4l2-ctl` on a Logitech C920 (fixtures recorded in v4l2-ctl's format)."""

    def __init__(self, device: str = "/dev/video0") -> None:
        self.device = device
        self.controls = parse_controls((FIXTURES / "c920-list-ctrls-menus.txt").read_text())
        self.formats_text = (FIXTURES / "c920-list-formats-ext.txt").read_text()
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] != ["v4l2-ctl", "-d", self.device]:
            return CommandResult(1, "", f"Cannot open device {argv[2]}, exiting.\n")
        option = argv[3]
        if option == "--list-ctrls-menus":
            return CommandResult(0, render_controls(self.controls), "")
        if option == "--list-formats-ext":
            return CommandResult(0, self.formats_text, "")
        if option.startswith("--set-ctrl="):
            return self._set(option.removeprefix("--set-ctrl="))
        return CommandResult(1, "", f"unrecognized option '{option}'\n")

    def _set(self, pairs: str) -> CommandResult:
        by_name = {c.name: c for c in self.controls}
        for pair in pairs.split(","):
            name, _, raw = pair.partition("=")
            control = by_name.get(name)
            if control is None:
                return CommandResult(1, "", f"unknown control '{name}'\n")
            value = int(raw)
            low = control.minimum if control.minimum is not None else 0
            high = control.maximum if control.maximum is not None else 1
            if not low <= value <= high or (control.menu and value not in control.menu):
                return CommandResult(
                    255, "", "VIDIOC_S_EXT_CTRLS: failed: Numerical result out of range\n"
                )
            control.value = value
        for name, (master, active_while) in _UVC_INACTIVE_WHILE.items():
            control = by_name[name]
            inactive = by_name[master].value == active_while
            control.flags = frozenset({"inactive"}) if inactive else frozenset()
        return CommandResult(0, "", "")

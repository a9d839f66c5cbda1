"""The interface every camera backend implements, and the descriptors of its controls.

A control descriptor is what `BASE/controls` publishes: enough for a frontend to draw a slider,
a switch or a menu, and for the agent to validate a change before the camera sees it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from agent.stream.pusher import Pusher
from agent.stream.target import StreamTarget

ControlValue = bool | int | float | str | tuple[float, float]


def as_number(value: ControlValue) -> float:
    """A scalar control value as a number (pairs such as colour_gains are not scalars)."""
    if isinstance(value, tuple):
        raise TypeError(f"{value!r} is a pair, not a number")
    return float(value)


def as_int(value: ControlValue) -> int:
    return int(as_number(value))


def same_value(got: ControlValue | None, wanted: ControlValue, rel_tol: float = 0.02) -> bool:
    """Equal, or for numbers within ``rel_tol``: a sensor quantises exposure and gain to its
    own steps (2 % covers a gain code or an exposure line)."""
    if isinstance(got, tuple) and isinstance(wanted, tuple):
        return len(got) == len(wanted) and all(
            same_value(g, w, rel_tol) for g, w in zip(got, wanted, strict=True)
        )
    if isinstance(got, bool) or isinstance(wanted, bool):
        return got == wanted
    if isinstance(got, int | float) and isinstance(wanted, int | float):
        return math.isclose(got, wanted, rel_tol=rel_tol, abs_tol=1e-3 if rel_tol else 0.0)
    return got == wanted


class ControlType(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    MENU = "menu"
    PAIR = "pair"  # two numbers, each within [min, max] (libcamera ColourGains: red, blue)


@dataclass(frozen=True)
class MenuOption:
    value: int | str
    label: str


@dataclass(frozen=True)
class ActiveCondition:
    """A control only takes effect while another control has a given value.

    V4L2 reports this as the INACTIVE flag and libcamera through modes such as AfMode; the agent
    models it explicitly so that it can explain a refusal and judge a whole change at once.
    """

    control: str
    value: ControlValue
    reason: str


@dataclass(frozen=True)
class ControlDescriptor:
    name: str
    type: ControlType
    default: ControlValue
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    unit: str | None = None
    options: tuple[MenuOption, ...] = ()
    read_only: bool = False
    # True: a change recreates the encoding pipeline (size, fps, bitrate...); False: applied live.
    restarts_stream: bool = False
    active_if: ActiveCondition | None = None
    # Inactive for a reason the agent cannot model (the driver's INACTIVE flag alone).
    driver_inactive: str | None = None
    aliases: tuple[str, ...] = field(default=())  # native names accepted unchanged

    def inactive_reason(self, values: Mapping[str, ControlValue]) -> str | None:
        cond = self.active_if
        if cond is None:
            return self.driver_inactive
        if values.get(cond.control) == cond.value:
            return None
        return cond.reason

    def to_json(self, values: Mapping[str, ControlValue]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "type": str(self.type),
            "min": self.minimum,
            "max": self.maximum,
            "step": self.step,
            "default": self.default,
            "value": values.get(self.name),
            "unit": self.unit,
            "menu": [{"value": o.value, "label": o.label} for o in self.options] or None,
            "read_only": self.read_only,
            "restarts_stream": self.restarts_stream,
            "inactive": self.inactive_reason(values),
            "aliases": list(self.aliases),
            "description": self.description,
        }
        return body


@dataclass(frozen=True)
class AppliedChange:
    """What a backend did with a validated change."""

    values: dict[str, ControlValue]
    restarted: bool = False
    downtime_s: float = 0.0


class CameraBackend(ABC):
    """One camera stack (test pattern, picamera2, V4L2). Construction only assigns."""

    name: str
    # How far a value the camera reports may be from the one set (see `confirm`).
    readback_rel_tol = 0.0

    @abstractmethod
    async def start(self) -> None:
        """Open the device and apply the initial control values."""

    @abstractmethod
    async def stop(self) -> None:
        """Release the device; idempotent."""

    @abstractmethod
    def descriptors(self) -> Sequence[ControlDescriptor]:
        """Every control the camera advertises, in a stable order."""

    @abstractmethod
    def values(self) -> dict[str, ControlValue]:
        """Current value of every control."""

    # Automatic controls a timelapse may freeze: automatic control -> (its manual setting, the
    # controls that hold what the automatic found). Empty: nothing to freeze (the test pattern,
    # whose automatic exposure is a simulation).
    AUTO_LOCKS: ClassVar[Mapping[str, tuple[ControlValue, tuple[str, ...]]]] = {}

    def auto_lock_plan(self) -> tuple[dict[str, ControlValue], dict[str, ControlValue]] | None:
        """The values that freeze the running automatics where they are now, and the values
        that restore them; None when no automatic runs."""
        names = {d.name for d in self.descriptors()}
        values = self.values()
        freeze: dict[str, ControlValue] = {}
        restore: dict[str, ControlValue] = {}
        for automatic, (manual, held) in self.AUTO_LOCKS.items():
            if automatic not in names or values.get(automatic) in (None, manual):
                continue
            restore[automatic] = values[automatic]
            freeze[automatic] = manual
            freeze.update({name: values[name] for name in held if name in names and name in values})
        return (freeze, restore) if freeze else None

    @abstractmethod
    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        """Apply values already validated against `descriptors()`.

        ``restart`` says that at least one of them needs the pipeline recreated.
        """

    @abstractmethod
    async def start_pusher(self, target: StreamTarget) -> Pusher:
        """Start one run of the pipeline with the current values, publishing to ``target``:
        a new Pusher that owns what belongs to the run.

        Raises ProcessStartError or CameraError when the pipeline cannot start at all.
        """

    async def confirm(self, values: Mapping[str, ControlValue]) -> dict[str, ControlValue]:
        """What the camera reports for these controls after they were applied: the device's
        own word where it gives one (V4L2 reads the driver, picamera2 a frame's metadata)."""
        current = self.values()
        return {name: current[name] for name in values if name in current}

    def info(self) -> dict[str, Any]:
        """Backend facts for `BASE/state` (model, device, formats...)."""
        return {"backend": self.name}

    def motion_mask(self) -> tuple[Sequence[tuple[float, float]], ...]:
        """Regions of the picture the camera itself changes at every frame (an overlay), which
        motion detection leaves out unless configured otherwise; normalised polygons."""
        return ()

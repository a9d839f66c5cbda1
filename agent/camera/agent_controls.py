"""Controls of the agent itself, beside the camera's: listed, validated, persisted and announced
like the camera's (so `BASE/controls`, Home Assistant and the console show them with no code of
their own), but applied by the agent.

The camera backend is wrapped: every call goes to it, with the agent's controls added to its
descriptors and values and taken out of the changes it is asked to apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent.camera.base import (
    AppliedChange,
    CameraBackend,
    ControlDescriptor,
    ControlType,
    ControlValue,
)
from agent.stream.pusher import Pusher
from agent.stream.target import StreamTarget

MOTION = "motion"


def motion_descriptor(default: bool) -> ControlDescriptor:
    return ControlDescriptor(
        MOTION, ControlType.BOOL, default, "motion detection (BASE/motion, motion events)"
    )


class WithAgentControls(CameraBackend):
    """`camera` plus the `motion` switch, which `set_motion` applies."""

    def __init__(
        self,
        camera: CameraBackend,
        motion_default: bool,
        set_motion: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.camera = camera
        self.name = camera.name
        self.readback_rel_tol = camera.readback_rel_tol
        self._own = (motion_descriptor(motion_default),)
        self._values: dict[str, ControlValue] = {MOTION: motion_default}
        self._set_motion = set_motion

    async def start(self) -> None:
        await self.camera.start()

    async def stop(self) -> None:
        await self.camera.stop()

    def descriptors(self) -> Sequence[ControlDescriptor]:
        return (*self.camera.descriptors(), *self._own)

    def values(self) -> dict[str, ControlValue]:
        return {**self.camera.values(), **self._values}

    def auto_lock_plan(self) -> tuple[dict[str, ControlValue], dict[str, ControlValue]] | None:
        return self.camera.auto_lock_plan()

    async def apply(self, values: Mapping[str, ControlValue], restart: bool) -> AppliedChange:
        own = {name: value for name, value in values.items() if name in self._values}
        camera_values = {name: v for name, v in values.items() if name not in self._values}
        applied = AppliedChange(values={}, restarted=restart)
        if camera_values or restart:
            applied = await self.camera.apply(camera_values, restart)
        if MOTION in own:
            await self._set_motion(bool(own[MOTION]))
            self._values[MOTION] = bool(own[MOTION])
        return AppliedChange({**applied.values, **own}, applied.restarted, applied.downtime_s)

    async def start_pusher(self, target: StreamTarget) -> Pusher:
        return await self.camera.start_pusher(target)

    async def confirm(self, values: Mapping[str, ControlValue]) -> dict[str, ControlValue]:
        own = {name: self._values[name] for name in values if name in self._values}
        rest = {name: v for name, v in values.items() if name not in self._values}
        return {**(await self.camera.confirm(rest) if rest else {}), **own}

    def info(self) -> dict[str, Any]:
        return self.camera.info()

    def motion_mask(self) -> tuple[Sequence[tuple[float, float]], ...]:
        return self.camera.motion_mask()

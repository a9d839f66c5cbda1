"""Control changes: validate as a whole, apply through the backend, announce the new values."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from agent.camera.base import AppliedChange, CameraBackend
from agent.camera.settings import plan_change
from agent.errors import CameraError, CommandError, ErrorCode

log = logging.getLogger(__name__)


class CameraControls:
    def __init__(self, backend: CameraBackend, on_change: Callable[[], None]) -> None:
        self._backend = backend
        self._on_change = on_change
        # One change at a time: two concurrent restarts of the pipeline would race.
        self._lock = asyncio.Lock()

    async def change(self, requested: Mapping[str, object]) -> AppliedChange:
        async with self._lock:
            plan = plan_change(self._backend.descriptors(), self._backend.values(), requested)
            started = time.monotonic()
            try:
                applied = await self._backend.apply(plan.values, restart=bool(plan.restart))
            except CameraError as err:
                raise CommandError(
                    ErrorCode.CAMERA_ERROR, f"camera refused the change: {err}"
                ) from err
            log.info(
                "controls changed: %s%s (%.3f s)",
                applied.values,
                " with a pipeline restart" if applied.restarted else "",
                time.monotonic() - started,
            )
        self._on_change()
        return applied

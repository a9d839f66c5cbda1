"""Control changes: validate as a whole, apply through the backend, restart the stream when the
change needs it, persist the values, and announce them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agent.atomicfile import write_atomic
from agent.camera.base import AppliedChange, CameraBackend, ControlValue
from agent.camera.settings import plan_change
from agent.errors import CameraError, CommandError, ErrorCode, SettingsRejected
from agent.stream.supervisor import StreamSupervisor

log = logging.getLogger(__name__)

WRITE_BEHIND_S = 1.0


class ControlStore:
    """Control values across restarts: `<state_dir>/controls.json`, replaced atomically.

    Written behind the answer: `save` only notes the values, and one write in a worker thread
    takes whatever is newest within WRITE_BEHIND_S (a slider dragged in a UI is one write, not
    fifty fsyncs, and no answer waits for the disk). `close` writes what is still pending; a
    power cut loses at most the last WRITE_BEHIND_S of changes, never the file.
    """

    def __init__(self, path: Path, delay_s: float = WRITE_BEHIND_S) -> None:
        self._path = path
        self._delay_s = delay_s
        self._pending: dict[str, ControlValue] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()  # one write at a time, so an older never wins

    def load(self) -> dict[str, object]:
        try:
            body = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable %s: %s", self._path, err)
            return {}
        return body if isinstance(body, dict) else {}

    def save(self, values: Mapping[str, ControlValue]) -> None:
        self._pending = dict(values)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_later(), name="controls.json")

    async def _write_later(self) -> None:
        await asyncio.sleep(self._delay_s)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending values now (if any)."""
        async with self._write_lock:
            values, self._pending = self._pending, None
            if values is None:
                return
            data = (json.dumps(values, indent=1) + "\n").encode()
            try:
                await asyncio.to_thread(write_atomic, self._path, data)
            except OSError as err:
                # The change is live; only its survival across a restart is at risk. The next
                # change tries again with all values.
                log.error("could not save control values to %s: %s", self._path, err)

    async def close(self) -> None:
        """Before a clean stop: nothing pending stays unwritten."""
        await self.flush()  # after a write already under way, never beside it
        if self._writer is not None:
            self._writer.cancel()  # its wait, or a flush that now finds nothing pending


class CameraControls:
    def __init__(
        self,
        backend: CameraBackend,
        store: ControlStore,
        stream: StreamSupervisor | None,
        on_change: Callable[[], None],
    ) -> None:
        self._backend = backend
        self.store = store
        self._stream = stream
        self._on_change = on_change
        # One change of the pipeline at a time, in arrival order (asyncio's lock is FIFO): two
        # concurrent restarts would race. `stream start|stop|restart` take it too.
        self.pipeline = asyncio.Lock()

    def _settable(self) -> dict[str, ControlValue]:
        read_only = {d.name for d in self._backend.descriptors() if d.read_only}
        return {k: v for k, v in self._backend.values().items() if k not in read_only}

    async def restore(self) -> None:
        """Re-apply the saved values (before the stream starts); invalid ones are dropped."""
        saved = self.store.load()
        while saved:
            try:
                plan = plan_change(self._backend.descriptors(), self._backend.values(), saved)
            except SettingsRejected as err:
                before = len(saved)
                for problem in err.problems:
                    log.warning("saved control not restored: %s", problem.detail)
                    saved.pop(problem.control, None)
                if len(saved) == before:  # nothing dropped would mean the same refusal again
                    log.error("saved controls not restored: %s", err.detail)
                    return
                continue
            await self._backend.apply(plan.values, restart=True)
            log.info("restored controls: %s", plan.values)
            return

    async def change(self, requested: Mapping[str, object]) -> AppliedChange:
        async with self.pipeline:
            before = self._backend.values()
            plan = plan_change(self._backend.descriptors(), before, requested)
            started = time.monotonic()
            restart = bool(plan.restart)
            try:
                # The values the camera kept (uvcvideo rounds to its step), for the answer.
                kept = (await self._backend.apply(plan.values, restart=restart)).values
                if self._stream is not None and not restart:
                    await self._stream.apply_live(kept)  # filters of the running pipeline
                downtime = await self._stream.restart() if restart and self._stream else 0.0
            except CameraError as err:
                restored = await self._roll_back(before, plan.values, restart)
                raise CommandError(
                    ErrorCode.CAMERA_ERROR,
                    f"camera refused the change ({restored}): {err}",
                ) from err
            self.store.save(self._settable())
            log.info(
                "controls changed: %s%s (%.3f s)",
                plan.values,
                f" with a pipeline restart, down {downtime:.2f} s" if restart else "",
                time.monotonic() - started,
            )
        self._on_change()
        return AppliedChange(values=kept, restarted=restart, downtime_s=downtime)

    async def _roll_back(
        self, before: Mapping[str, ControlValue], changed: Mapping[str, ControlValue], restart: bool
    ) -> str:
        """Put the previous values back; says how that went, for the answer."""
        previous = {name: before[name] for name in changed}
        try:
            await self._backend.apply(previous, restart=restart)
        except CameraError as err:
            log.error("could not restore the previous values %s: %s", previous, err)
            return f"previous values not all restored: {err}"
        if restart and self._stream is not None:
            try:
                await self._stream.restart()
            except CameraError as err:
                log.error("stream still down after restoring the previous values: %s", err)
                return "values restored, the stream is still down"
        return "values restored"

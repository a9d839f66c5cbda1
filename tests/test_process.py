"""Child processes: waited for and reaped, whatever their descendants do."""

from __future__ import annotations

import asyncio
import contextlib

from agent.process import ManagedProcess


async def test_wait_returns_when_a_grandchild_keeps_stderr_open() -> None:
    # The child exits at once; a background grandchild holds its stderr pipe for 30 s.
    process = ManagedProcess(["sh", "-c", "echo bye >&2; sleep 30 >&2 & exit 3"], "lingering")
    await process.start()
    assert await asyncio.wait_for(process.wait(), 5) == 3  # it raised TimeoutError before
    assert "bye" in process.stderr_text()
    await process.stop()  # the whole group: the grandchild too


async def test_a_wait_cancelled_while_it_drains_stderr_stays_cancelled() -> None:
    process = ManagedProcess(["sh", "-c", "sleep 30 >&2 & exit 0"], "lingering")
    await process.start()
    waiter = asyncio.create_task(process.wait())
    await asyncio.sleep(0.3)  # the child has exited: wait() is draining the held stderr pipe
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()  # not swallowed into a normal return
    await process.stop()

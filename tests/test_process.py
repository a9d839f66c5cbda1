"""Child processes: waited for and reaped, whatever their descendants do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.camera.testsrc import TestPatternCamera
from agent.jobs.captures import Captures
from agent.jobs.picture import take_picture
from agent.process import ManagedProcess
from agent.stream.still import RawFrame
from tests.support import children_of


async def test_a_wait_cancelled_while_a_grandchild_holds_stderr_stays_cancelled() -> None:
    # The child exits at once; a background grandchild holds its stderr pipe open, so wait()
    # is still waiting (asyncio ends a wait when the pipes close too) when it is cancelled.
    process = ManagedProcess(["sh", "-c", "sleep 30 >&2 & exit 0"], "lingering")
    await process.start()
    waiter = asyncio.create_task(process.wait())
    async with asyncio.timeout(5):
        # Polling: the exit is seen by asyncio's child watcher, with no event to await here.
        while process.returncode is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()  # not swallowed into a normal return
    await process.stop()


async def test_the_stream_password_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.process")
    url = "rtsp://agent:s3cret-pw@127.0.0.1:8554/cam"
    tee = f"[f=rtsp]{url}|[f=rtsp]rtsp://agent:s3cret-pw@127.0.0.1:8554/cam_recorded"
    process = ManagedProcess(["true", url, tee], "pusher")
    await process.start()
    await process.wait()
    assert "s3cret-pw" not in caplog.text
    assert "rtsp://agent:***@127.0.0.1:8554/cam" in caplog.text


async def test_a_cancelled_picture_leaves_no_encoder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    still = tmp_path / "still.yuv"
    still.write_bytes(bytes(16 * 16 * 3 // 2))

    class Stream:
        async def latest_frame(self) -> RawFrame:
            # NV12: a layout the in-process encoder leaves to ffmpeg.
            return RawFrame(str(still), 16, 16, "nv12", time.time())

    # An "encoder" that takes its time, so the picture is cancelled while it runs.
    monkeypatch.setattr("agent.jobs.picture.still_to_jpeg_args", lambda *a: ["sleep", "30"])
    captures = Captures(tmp_path / "captures")
    captures.ensure()
    backend = TestPatternCamera(16, 16, 5)
    task = asyncio.create_task(take_picture(backend, Stream(), captures, 80, False, 1 << 18))  # type: ignore[arg-type]
    async with asyncio.timeout(5):  # until the encoder runs; /proc offers no event to await
        while not (sleepers := [p for p in children_of(os.getpid()) if comm(p) == "sleep"]):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not [p for p in sleepers if alive(p)]
    assert list(captures.root.iterdir()) == []  # and no partial file


def alive(pid: int) -> bool:
    """Running or a zombie nobody reaped."""
    return Path(f"/proc/{pid}").exists()


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


AGENT_STAND_IN = """
import asyncio, sys
from agent.process import ManagedProcess

async def main():
    child = ManagedProcess(["sleep", "60"], "stand-in pusher")
    await child.start()
    print(child.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_child_dies_with_the_agent_when_the_agent_is_killed() -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT_STAND_IN], stdout=subprocess.PIPE)
    try:
        assert agent.stdout is not None
        child = int(agent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        agent.kill()  # SIGKILL: no cleanup code of the agent runs
        agent.wait()
        deadline = time.monotonic() + 5
        # Gone, and not a zombie either (init reaps it once orphaned).
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not Path(f"/proc/{child}").exists(), "the child outlived the killed agent"
    finally:
        agent.kill()
        agent.wait()


ECHO_THEN_FAIL = """
import sys
print(sys.stdin.readline().strip().upper(), flush=True)
sys.stdin.readline()
sys.exit("no space for the part")
"""


async def test_a_child_talked_to_in_lines_says_how_it_ended() -> None:
    """The upload process's shape: lines both ways; when it dies, its last words on stderr."""
    process = ManagedProcess([sys.executable, "-c", ECHO_THEN_FAIL], "the talker", talk=True)
    await process.start()
    await process.send_line(b"hello")
    assert await process.read_line() == b"HELLO\n"
    await process.send_line(b"again")
    assert await process.read_line() == b""  # it ended instead of answering
    await process.wait()
    assert process.ended_in_words() == "exit code 1: no space for the part"
    with pytest.raises(RuntimeError, match="the talker is not running"):
        await process.send_line(b"more")
    await process.stop()


async def test_a_child_talked_to_in_lines_stops_at_the_end_of_its_input() -> None:
    process = ManagedProcess(
        [sys.executable, "-c", "import sys\nfor line in sys.stdin: pass"], "the reader", talk=True
    )
    await process.start()
    assert await process.stop(grace_s=10) == 0  # ended by EOF, not killed
    killed = ManagedProcess(["sleep", "30"], "the sleeper", talk=True)
    await killed.start()
    assert await killed.stop(grace_s=0.2) == -9  # it does not read stdin: killed after the grace
    assert killed.ended_in_words() == "killed by SIGKILL"

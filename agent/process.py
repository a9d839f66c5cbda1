"""Child processes (ffmpeg, v4l2 tools): the agent's one boundary with them.

Every child runs in its own process group (as MediaMTX's externalcmd does), so stopping it
stops whatever it started too; stopping is SIGTERM (or `q` on ffmpeg's stdin, which finalizes
files), a grace period, then SIGKILL to the whole group, and the child is always awaited, so no
zombie is left. A child also dies with the agent: if the agent is killed (SIGKILL, the OOM
killer) the kernel sends its children SIGKILL (PR_SET_PDEATHSIG), so a pusher never lives on,
orphaned, holding the MediaMTX path the restarted agent wants to publish. The last stderr lines
are kept to be reported when the child fails, and are otherwise not logged (Frigate's watchdog
does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

STDERR_LINES = 100
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_the_agent() -> None:
    """In the child, before exec: SIGKILL when the agent's thread that started it ends (the
    event loop's thread, which lives as long as the agent)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_CREDENTIALS = re.compile(r"(rtsps?://[^:/@\s]+:)[^@\s]+@")


def masked(argv: Sequence[str]) -> list[str]:
    """argv for the log, with the passwords in URLs (the stream's publish credentials) masked.

    The process table still shows them to users of the same host (`ps`): see the README."""
    return [_CREDENTIALS.sub(r"\1***@", arg) for arg in argv]


class ProcessStartError(Exception):
    """The program could not be started at all (missing binary, permissions)."""


class ManagedProcess:
    """One child process. Construction only assigns; `start` spawns it."""

    def __init__(
        self, argv: Sequence[str], name: str, *, stdin_quit: bool = False, talk: bool = False
    ) -> None:
        self.argv = list(argv)
        self.name = name
        # ffmpeg finalizes its outputs when it reads `q` on stdin; SIGTERM would do for a pusher.
        self._stdin_quit = stdin_quit
        # A child we talk to in lines (stdin, stdout) ends at EOF on its stdin, after the work
        # at hand, which is how it is asked to stop.
        self._talk = talk
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        try:
            piped = asyncio.subprocess.PIPE
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=piped if self._stdin_quit or self._talk else asyncio.subprocess.DEVNULL,
                stdout=piped if self._talk else asyncio.subprocess.DEVNULL,
                stderr=piped,
                start_new_session=True,
                preexec_fn=die_with_the_agent,
                limit=1 << 20,  # the longest line read from the child's stdout
            )
        except OSError as err:
            raise ProcessStartError(f"cannot start {self.argv[0]}: {err.strerror}") from err
        self._stderr_task = asyncio.create_task(self._read_stderr(), name=f"{self.name}-stderr")
        log.debug("%s started (pid %d): %s", self.name, self._process.pid, masked(self.argv))

    async def _read_stderr(self) -> None:
        stderr = self._process.stderr if self._process else None
        if stderr is None:
            return
        async for raw in stderr:
            self.stderr_tail.append(raw.decode(errors="replace").rstrip())

    async def send_line(self, line: bytes) -> None:
        """One line to the child's stdin (a child started with ``talk``)."""
        stdin = self._process.stdin if self._process is not None else None
        if stdin is None or self._process is None or self._process.returncode is not None:
            raise RuntimeError(f"{self.name} is not running")
        stdin.write(line + b"\n")
        await stdin.drain()

    async def read_line(self) -> bytes:
        """The child's next line on stdout; empty once it has closed it (ended)."""
        stdout = self._process.stdout if self._process is not None else None
        return await stdout.readline() if stdout is not None else b""

    def ended_in_words(self) -> str:
        """How the child ended, with its last words on stderr: for an error message."""
        code = self.returncode
        if code is None:
            how = "still running"
        elif code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return f"{how}: {last.strip()}" if last else how

    async def wait(self) -> int:
        """Wait for the child to exit (by itself or stopped); returns its exit code."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        code = await self._process.wait()
        if self._stderr_task is not None:
            # The pipe closes with the process, and what was still buffered is read by now,
            # unless a grandchild holds the pipe open: then give up on the rest.
            try:
                await asyncio.wait_for(self._stderr_task, timeout=1.0)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller was cancelled: it stays cancelled
                # else only the stderr reader ended cancelled (given up on above)
        return code

    async def stop(self, grace_s: float = 3.0) -> int | None:
        """Ask the child to stop, then kill its whole group if it has not after ``grace_s``."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            if self._talk and process.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.close()
            elif self._stdin_quit and process.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.write(b"q")
                    await process.stdin.drain()
            else:
                self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                log.warning("%s did not stop within %.1f s; killing it", self.name, grace_s)
        # Always: the child may be gone while something it started is not.
        self._signal_group(signal.SIGKILL)
        return await self.wait()

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def stderr_text(self, lines: int = 20) -> str:
        return "\n".join(list(self.stderr_tail)[-lines:])


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str]], Awaitable[CommandResult]]


async def run_command(argv: Sequence[str], timeout_s: float = 10.0) -> CommandResult:
    """Run a short command (v4l2-ctl...) to completion in its own process group."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_the_agent,
        )
    except OSError as err:
        raise ProcessStartError(f"cannot start {argv[0]}: {err.strerror}") from err
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return CommandResult(-9, "", f"{argv[0]} timed out after {timeout_s:g} s")
    return CommandResult(
        process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )

"""Live filter changes for a running ffmpeg, through its `zmq` filter.

The filter answers each command with `<code> <text>` ("0 Success"). A REQ socket that missed a
reply is stuck by ZeroMQ's design, so after a timeout the socket is replaced.

Every wait on the socket has a deadline of its own and ends in an answer or an error, never in
silence: pyzmq's `recv_string` never completes when its socket is closed under it (the pipeline
stopping, while a control change waits for ffmpeg's reply; its chained future raises inside a
callback instead), and that change would hold the pipeline lock, and every later one, forever.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zmq.asyncio

log = logging.getLogger(__name__)

REPLY_TIMEOUT_MS = 1000


class FilterCommandError(Exception):
    pass


class FilterCommandChannel:
    def __init__(self, endpoint: str) -> None:
        # Imported with the first live pipeline, not with the agent: an agent that does not
        # stream (a fleet's idle camera) keeps pyzmq's few MiB out of its memory.
        self._zmq: Any = importlib.import_module("zmq")
        importlib.import_module("zmq.asyncio")
        self._endpoint = endpoint
        self._context: zmq.asyncio.Context = self._zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None

    def _connect(self) -> zmq.asyncio.Socket:
        constants = self._zmq
        sock: zmq.asyncio.Socket = self._context.socket(constants.REQ)
        sock.setsockopt(constants.LINGER, 0)
        sock.setsockopt(constants.RCVTIMEO, REPLY_TIMEOUT_MS)
        sock.setsockopt(constants.SNDTIMEO, REPLY_TIMEOUT_MS)
        sock.connect(self._endpoint)
        return sock

    async def send(self, command: str) -> None:
        if self._socket is None:
            self._socket = self._connect()
        sock = self._socket
        try:
            await _settled(asyncio.ensure_future(sock.send(command.encode())))
            reply = bytes(await _settled(asyncio.ensure_future(sock.recv()))).decode(
                errors="replace"
            )
        except (self._zmq.ZMQError, FilterCommandError) as err:
            if self._socket is sock:
                self.close()
            raise FilterCommandError(f"no answer from ffmpeg to {command!r}: {err}") from err
        if not reply.startswith("0 "):
            raise FilterCommandError(f"ffmpeg refused {command!r}: {reply}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


async def _settled(future: asyncio.Future[Any]) -> Any:
    """The future's result; an error when it times out or is cancelled by the socket's close."""
    try:
        done, _ = await asyncio.wait({future}, timeout=REPLY_TIMEOUT_MS / 1000 + 0.5)
    except asyncio.CancelledError:
        future.cancel()  # our caller is cancelled: leave nothing waiting on the socket
        raise
    if not done:
        future.cancel()
        raise FilterCommandError("timed out")
    if future.cancelled():
        raise FilterCommandError("the pipeline stopped before ffmpeg answered")
    return future.result()

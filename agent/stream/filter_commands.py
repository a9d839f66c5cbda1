"""Live filter changes for a running ffmpeg, through its `zmq` filter.

The filter answers each command with `<code> <text>` ("0 Success"). A REQ socket that missed a
reply is stuck by ZeroMQ's design, so after a timeout the socket is replaced.
"""

from __future__ import annotations

import logging

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

REPLY_TIMEOUT_MS = 1000


class FilterCommandError(Exception):
    pass


class FilterCommandChannel:
    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._context = zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
        sock.setsockopt(zmq.SNDTIMEO, REPLY_TIMEOUT_MS)
        sock.connect(self._endpoint)
        return sock

    async def send(self, command: str) -> None:
        if self._socket is None:
            self._socket = self._connect()
        try:
            await self._socket.send_string(command)
            reply = await self._socket.recv_string()
        except zmq.ZMQError as err:
            self.close()
            raise FilterCommandError(f"no answer from ffmpeg to {command!r}: {err}") from err
        if not reply.startswith("0 "):
            raise FilterCommandError(f"ffmpeg refused {command!r}: {reply}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

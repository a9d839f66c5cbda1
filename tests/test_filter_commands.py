"""The live-change channel to ffmpeg's zmq filter always ends a command in an answer or an
error: a change waiting on it holds the pipeline lock, and with it every later change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from agent.stream.filter_commands import FilterCommandChannel, FilterCommandError


@pytest.fixture
def silent_peer(tmp_path: Path) -> Iterator[zmq.Socket[bytes]]:
    """A socket that takes commands and never answers (an ffmpeg busy or dying)."""
    endpoint = f"ipc://{tmp_path / 'filter.sock'}"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    peer = context.socket(zmq.REP)
    peer.setsockopt(zmq.LINGER, 0)
    peer.bind(endpoint)
    yield peer
    peer.close(linger=0)


@pytest.fixture
def silent_filter(silent_peer: zmq.Socket[bytes]) -> str:
    endpoint: str = silent_peer.getsockopt_string(zmq.LAST_ENDPOINT)
    return endpoint


async def test_closing_the_channel_under_a_waiting_command_ends_it_with_an_error(
    silent_peer: zmq.Socket[bytes], silent_filter: str
) -> None:
    channel = FilterCommandChannel(silent_filter)
    waiting = asyncio.create_task(channel.send("drawbox@cam x 10"))
    # Once the peer has it, the channel waits for the reply.
    assert await asyncio.to_thread(silent_peer.recv) == b"drawbox@cam x 10"
    channel.close()  # the pipeline stops meanwhile
    with pytest.raises(FilterCommandError, match="no answer"):
        await asyncio.wait_for(waiting, 3)  # it used to wait for ever


async def test_a_filter_that_never_answers_times_out_and_the_next_command_gets_a_new_socket(
    silent_filter: str,
) -> None:
    channel = FilterCommandChannel(silent_filter)
    with pytest.raises(FilterCommandError, match="no answer"):
        await asyncio.wait_for(channel.send("a 1"), 5)
    with pytest.raises(FilterCommandError):  # not stuck in the REQ socket's wrong state
        await asyncio.wait_for(channel.send("a 2"), 5)
    channel.close()

"""Builds the console service and runs it: the MQTT side and the browser side in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from websockets.asyncio.server import unix_serve

from console.bus import Bus
from console.config import ConsoleConfig
from console.fleet import Fleet
from console.server import MAX_MESSAGE_BYTES, ConsoleServer

log = logging.getLogger(__name__)


async def run_console(config: ConsoleConfig) -> None:
    fleet = Fleet(config.console.events_kept)
    bus = Bus(config, fleet)
    server = ConsoleServer(fleet, bus, config.console.queue_limit)
    socket_path = config.console.socket
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # left by a killed console: nothing listens on it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with unix_serve(
        server.handle,
        str(socket_path),
        process_request=server.process_request,
        max_size=MAX_MESSAGE_BYTES,
        # A page behind a phone's sleeping radio: pings find it gone within a minute.
        ping_interval=20,
        ping_timeout=20,
    ):
        # nginx's workers (another user in the pod) connect; the directory is what guards it.
        socket_path.chmod(0o666)
        log.info("console listening on %s for nginx", socket_path)
        async with asyncio.TaskGroup() as tasks:
            bus_task = tasks.create_task(bus.run(server.changed, server.broker_changed))
            await stop.wait()
            bus_task.cancel()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    log.info("console stopped")

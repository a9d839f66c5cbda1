"""The agent's one connection to the broker (the only module that imports aiomqtt).

aiomqtt leaves reconnection to the caller (docs/reconnection.md), so `BrokerLink.run` owns the
loop: connect, subscribe, let the application republish its retained topics, dispatch messages,
and on any failure wait with capped exponential backoff before the next attempt. Subscriptions
are made on every connect although the session is persistent: a broker that lost its
persistence file would otherwise leave the agent deaf.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSettings
from agent.messaging import Delivery, InboundMessage
from agent.mqtt.outbox import Outbox, Outgoing

log = logging.getLogger(__name__)

# MQTT 5 reason code 0x8E: the broker closed this connection because another client connected
# with the same client id, which here means the same certificate (use_username_as_clientid).
# Mosquitto 2.0.11 closes the socket without a DISCONNECT paho can read, so the application also
# reports twins it sees on its own state topic (`report_twin`).
SESSION_TAKEN_OVER = 0x8E
PUBLISH_TIMEOUT_S = 10.0


MessageHandler = Callable[[InboundMessage], Awaitable[None]]
ConnectedHook = Callable[[], Awaitable[None]]


def _reason_code(err: BaseException) -> int | None:
    """The MQTT reason code behind an aiomqtt error, following its cause chain."""
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, aiomqtt.MqttCodeError) and current.rc is not None:
            rc = current.rc
            return rc if isinstance(rc, int) else int(rc.value)
        current = current.__cause__
    return None


def quiet_closed_socket_races(loop: asyncio.AbstractEventLoop) -> None:
    """aiomqtt (2.5) asks the loop to watch its socket with `call_soon_threadsafe(add_writer,
    fd, ...)`; when the broker drops the connection in between (a broker restart), the call
    runs on a closed descriptor and the loop logs the EBADF with a traceback. Nothing is lost
    (the link is re-made), so that one case is a warning line; anything else goes to the
    loop's usual handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        error = context.get("exception")
        handle = repr(context.get("handle", ""))
        watching = "add_writer(" in handle or "add_reader(" in handle
        if watching and isinstance(error, OSError) and error.errno == errno.EBADF:
            log.warning("the MQTT client watched a socket that had just closed; ignored")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class BrokerLink:
    """Connects, keeps reconnecting, and publishes on behalf of the agent."""

    def __init__(
        self,
        settings: MqttSettings,
        tls_context: ssl.SSLContext,
        identity: str,
        subscriptions: Sequence[str],
        will_topic: str | None,
    ) -> None:
        """``will_topic``: where the broker says `offline` when this client vanishes (None: a
        client nobody watches, such as the console service)."""
        self._settings = settings
        self._tls_context = tls_context
        self._identity = identity
        self._subscriptions = tuple(subscriptions)
        self._will_topic = will_topic
        self._ever_connected = False
        self._down_logged = False
        self._twin_seen = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._paho: mqtt.Client | None = None
        self.outbox = Outbox(settings.outbox_limit)
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()  # the opposite of `connected`, to wait on
        self.disconnected.set()

    def report_twin(self) -> None:
        """Another client uses this identity: the next lost connection is a takeover."""
        self._twin_seen = True

    def _new_client(self) -> aiomqtt.Client:
        s = self._settings
        connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # With clean_start=False the broker keeps the session (and queues QoS 1 commands) for
        # this long after the agent goes away, so a restart does not lose commands.
        connect_properties.SessionExpiryInterval = s.session_expiry_s
        options: list[tuple[int, int, int]] = []
        if s.tcp_nodelay:
            # Nagle + delayed ACK adds 40-90 ms to every QoS 1 round trip on an idle link.
            options.append((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=self._identity,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_properties,
            keepalive=s.keepalive_s,
            tls_context=self._tls_context,
            will=(
                aiomqtt.Will(self._will_topic, b"offline", qos=1, retain=True)
                if self._will_topic is not None
                else None
            ),
            socket_options=options,
            timeout=PUBLISH_TIMEOUT_S,
        )
        # A command is acknowledged (PUBACK) once handled, not on receipt: one the agent was
        # killed in the middle of stays in its broker session and comes again at restart.
        # aiomqtt does not expose paho's manual acknowledgement; its paho client does.
        client._client.manual_ack_set(True)
        # Answers are pipelined (PUBACKs awaited in parallel): many pending publishes are the
        # normal case under load, not the sign of trouble aiomqtt warns about beyond ten.
        client.pending_calls_threshold = s.outbox_limit
        return client

    async def run(self, on_connected: ConnectedHook, on_message: MessageHandler) -> None:
        """Stay connected until cancelled; ``on_connected`` runs after every (re)subscribe,
        with `connected` already set (what it publishes leaves at once)."""
        delay = self._settings.reconnect_min_s
        while True:
            try:
                async with self._new_client() as client:
                    self._paho = client._client  # for manual acknowledgements
                    await client.subscribe([(topic, 1) for topic in self._subscriptions])
                    self.outbox.rewind()
                    sender = asyncio.create_task(self._send(client), name="mqtt-send")
                    try:
                        delay = self._settings.reconnect_min_s
                        self._log_up()
                        self.disconnected.clear()
                        self.connected.set()
                        await on_connected()
                        async for message in client.messages:
                            await self._dispatch(message, on_message)
                            if not self._paho.is_connected():
                                # aiomqtt reports a lost connection only once its queue is
                                # empty; under a flood of commands that can take long. What is
                                # left unacknowledged comes again on the next connection.
                                raise aiomqtt.MqttError("connection lost")
                    finally:
                        self.connected.clear()
                        self.disconnected.set()
                        sender.cancel()
                        for task in list(self._in_flight):
                            task.cancel()  # their messages stay unacknowledged in the outbox
            except aiomqtt.MqttError as err:
                delay = self._log_down(err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.reconnect_max_s)

    async def _dispatch(self, message: aiomqtt.Message, on_message: MessageHandler) -> None:
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        payload = message.payload
        inbound = InboundMessage(
            topic=message.topic.value,
            payload=payload if isinstance(payload, bytes) else str(payload or "").encode(),
            response_topic=response_topic,
            correlation_data=correlation,
            done=self._acknowledger(message),
        )
        try:
            await on_message(inbound)
        except Exception:
            # The router answers every failure itself; reaching here is a bug, not a reason to
            # drop the connection and the commands queued behind this one.
            log.exception("unhandled error while handling a message on %s", inbound.topic)
            inbound.done()

    def _acknowledger(self, message: aiomqtt.Message) -> Callable[[], None]:
        client = self._paho
        mid, qos = message.mid, message.qos

        def acknowledge() -> None:
            # On a connection that has ended since, this does nothing: the broker delivers the
            # message again on the next one, and the router answers it from its cache.
            if qos > 0 and client is not None:
                client.ack(mid, qos)

        return acknowledge

    def _log_up(self) -> None:
        s = self._settings
        if not self._ever_connected:
            log.info("connected to %s:%d as %s", s.host, s.port, self._identity)
        elif self._down_logged:
            log.info("reconnected to %s:%d", s.host, s.port)
        self._ever_connected = True
        self._down_logged = False

    def _log_down(self, err: aiomqtt.MqttError, delay: float) -> float:
        """Log a lost or refused connection (once per outage); returns the next delay."""
        if _reason_code(err) == SESSION_TAKEN_OVER or self._twin_seen:
            self._twin_seen = False
            # Logged every time: two agents sharing one certificate is a deployment error that
            # must not hide behind the reconnect loop. Waiting the maximum keeps the two from
            # taking the session from each other several times a second.
            log.error(
                "session taken over: another client connected with this agent's certificate "
                "(CN=%s); each camera needs its own certificate (camera-pki issue). "
                "Reconnecting in %.0f s.",
                self._identity,
                self._settings.reconnect_max_s,
            )
            return self._settings.reconnect_max_s
        if not self._down_logged:
            verb = "lost connection to" if self._ever_connected else "cannot connect to"
            log.warning(
                "%s broker %s:%d: %s; retrying with backoff up to %.0f s",
                verb,
                self._settings.host,
                self._settings.port,
                err,
                self._settings.reconnect_max_s,
            )
            self._down_logged = True
        return delay

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        delivery: Delivery = Delivery.ESSENTIAL,
    ) -> None:
        """Queue a QoS 1 publish; it leaves now if connected, else after the next connect."""
        self.outbox.put(
            topic, payload, retain=retain, correlation_data=correlation_data, delivery=delivery
        )
        # One step for the sender to hand the message to paho: answers leave before whatever
        # the caller does next.
        await asyncio.sleep(0)

    async def _send(self, client: aiomqtt.Client) -> None:
        """Hand the outbox to this connection in order; PUBACKs are awaited in parallel.

        Awaiting each PUBACK before the next message would put one broker round trip in front
        of every answer; paho keeps the order on the wire.
        """
        while True:
            message = await self.outbox.take()
            # The task's first step hands the message to paho; tasks start in creation order.
            task = asyncio.create_task(self._publish_one(client, message))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _publish_one(self, client: aiomqtt.Client, message: Outgoing) -> None:
        properties = None
        if message.correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation_data
        try:
            await client.publish(
                message.topic, message.payload, qos=1, retain=message.retain, properties=properties
            )
        except aiomqtt.MqttError as err:
            # Kept in the outbox: the next connection sends it again.
            connected = self._paho is not None and self._paho.is_connected()
            level = logging.WARNING if connected else logging.DEBUG
            log.log(
                level, "no PUBACK for %s (%s); kept for the next connection", message.topic, err
            )
            return
        self.outbox.acked(message.seq)

    async def drain(self) -> bool:
        """Wait until the broker acknowledged every queued publish (before a clean stop)."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.outbox.settled()
        except TimeoutError:
            log.warning(
                "stopping with %d messages the broker has not acknowledged", len(self.outbox)
            )
            return False
        return True

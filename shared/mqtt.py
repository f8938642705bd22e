"""An asyncio face on paho-mqtt: connect, publish and await PUBACK, subscribe, consume, ack."""

import asyncio
import contextlib
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, SecretStr, field_validator, model_validator

from shared.config import Duration, StrictModel
from shared.errors import MqttError
from shared.invariants import required

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


class MqttSettings(StrictModel):
    """How to reach the MQTT broker."""

    url: str = Field(description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).")
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description="MQTT protocol version; 3.1.1 works with every broker."
    )
    client_id: str | None = Field(default=None, description="Client id; derived if omitted.")
    username: str | None = Field(default=None, description="User name, if the broker wants one.")
    password: SecretStr | None = Field(default=None, description="Password for `username`.")
    keepalive: Duration = Field(default=30.0, gt=0, description="Keepalive interval.")
    connect_timeout: Duration = Field(default=10.0, gt=0, description="Wait for CONNACK.")
    session_expiry: Duration = Field(
        default=86400.0, ge=0, description="MQTT 5 session expiry; 3.1.1 sessions never expire."
    )
    topic_prefix: str = Field(default="plantwire", description="First topic level(s).")
    ca_file: Path | None = Field(default=None, description="CA bundle that signs the broker.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Client private key (PEM).")
    max_inflight: int = Field(default=100, ge=1, description="QoS 1 messages awaiting PUBACK.")
    reconnect_min: Duration = Field(
        default=1.0,
        ge=1,
        description="First wait before reconnecting; doubles each failed try. Whole seconds.",
    )
    reconnect_max: Duration = Field(
        default=30.0, ge=1, description="Longest wait between reconnect tries. Whole seconds."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        return url

    @field_validator("reconnect_min", "reconnect_max")
    @classmethod
    def _whole_seconds(cls, seconds: float) -> float:
        # paho's reconnect_delay_set is declared (and documented) in whole seconds.
        if seconds != int(seconds):
            raise ValueError(f"paho waits whole seconds; got {seconds:g}s")
        return seconds

    @model_validator(mode="after")
    def _backoff_order(self) -> "MqttSettings":
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be shorter than reconnect_min")
        return self

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Broker TCP port."""
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted."""
        return urlsplit(self.url).scheme in ("mqtts", "ssl") or self.ca_file is not None


@dataclass(frozen=True, slots=True)
class Will:
    """Last-will message the broker publishes if the client vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """A received message; with manual acknowledgement, pass it to MqttClient.ack when done."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool


class MqttClient:
    """One broker connection, driven by paho's network thread, awaited from asyncio."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        persistent_session: bool,
        manual_ack: bool = False,
        receive_queue: int = 64,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._v5 = settings.protocol == "5"
        self._persistent = persistent_session
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else not persistent_session,
            manual_ack=manual_ack,
        )
        self._client.max_inflight_messages_set(settings.max_inflight)
        # A bounded queue: publishing while the broker is away fails instead of piling up.
        self._client.max_queued_messages_set(settings.max_inflight)
        self._client.reconnect_delay_set(
            min_delay=int(settings.reconnect_min), max_delay=int(settings.reconnect_max)
        )
        # Also bounds how long the network thread can sit in connect() when asked to stop.
        self._client.connect_timeout = settings.connect_timeout
        url = urlsplit(settings.url)
        username = settings.username or (unquote(url.username) if url.username else None)
        password = (
            settings.password.get_secret_value()
            if settings.password
            else (unquote(url.password) if url.password else None)
        )
        if username:
            self._client.username_pw_set(username, password)
        if settings.uses_tls:
            self._client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
            )
        self._client.on_socket_open = self._on_socket_open
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._completed: OrderedDict[int, str | None] = OrderedDict()
        self._subscriptions: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._closing = False
        # Room in the receive queue, taken by paho's thread and given back as messages are
        # taken: a full queue stops paho reading the socket, which slows the broker down.
        self._room = threading.Semaphore(receive_queue)
        self._messages: asyncio.Queue[Message] | None = None
        self._connect_waiters: set[asyncio.Future[None]] = set()

    def set_will(self, will: Will) -> None:
        """Set the last will; takes effect on the next connect."""
        self._client.will_set(will.topic, will.payload, will.qos, will.retain)

    @property
    def connected(self) -> bool:
        """Whether the broker has acknowledged the current connection."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the broker's CONNACK; return whether connected."""
        if self._connected.is_set() or self._loop is None:
            return self._connected.is_set()
        waiter: asyncio.Future[None] = self._loop.create_future()
        # Added before yielding: a CONNACK arriving now wakes it through the loop.
        self._connect_waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            self._connect_waiters.discard(waiter)
        return self._connected.is_set()

    def _wake_connect_waiters(self) -> None:
        for waiter in self._connect_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def connect(self) -> None:
        """Connect and wait for CONNACK; raise MqttError if none comes in time."""
        self.start()
        loop = required(self._loop, "the client's event loop")
        deadline = loop.time() + self._settings.connect_timeout
        while not self._connected.is_set():
            if self._connect_error is not None or loop.time() > deadline:
                reason = self._connect_error or "no CONNACK in time"
                await self.close()
                raise MqttError(f"cannot connect to {self._settings.url}: {reason}")
            await asyncio.sleep(0.02)

    def start(self) -> None:
        """Begin connecting in the background; paho retries until it succeeds, and reconnects."""
        self._loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = int(self._settings.session_expiry)
        self._client.connect_async(
            self._settings.host,
            self._settings.port,
            keepalive=max(1, int(self._settings.keepalive)),
            clean_start=not self._persistent if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    async def close(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and end the network thread within `timeout` s.

        paho's thread leaves its loop only once its outgoing queues are empty or the socket
        fails, and `loop_stop()` joins it with no time limit. So the join runs in a thread of
        its own (never the event loop's default executor, which `asyncio.run()` waits for
        without a limit at exit); if it is not done in time, the socket is shut down, which
        makes the thread's next select() fail and the thread end.
        """
        self._closing = True
        self._client.disconnect()
        if self._loop is not None:
            await self._stop_network_thread(timeout)
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            _resolve(future, "connection closed")

    async def _stop_network_thread(self, timeout: float) -> None:
        """Join paho's thread without blocking the loop; force its socket shut if it lingers."""
        loop = required(self._loop, "the client's event loop")
        joined = loop.create_future()

        def join() -> None:
            self._client.loop_stop()
            # RuntimeError: the event loop closed meanwhile; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, joined, None)

        threading.Thread(target=join, name=f"mqtt-close-{self._client_id}", daemon=True).start()
        # A clean DISCONNECT gets most of the time; the forced close what is left.
        for share, force in ((0.8, False), (0.2, True)):
            if force:
                sock = self._client.socket()
                if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout * share):
                    await asyncio.shield(joined)
            if joined.done():
                return
        # Logged here, where the timeout was caught: on Python 3.11 a coroutine that a timeout
        # resumed through an inner one gets no trace events, so coverage would not see it.
        log.error("MQTT network thread still running %.0f s after disconnect; abandoned", timeout)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        """Publish and, for QoS 1 and 2, wait until the broker acknowledges it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttError(f"publish to {topic} refused: {paho.error_string(info.rc)}")
        if qos > 0:
            await self._await_mid(info.mid, timeout, f"PUBACK for {topic}")

    async def subscribe(self, topic_filter: str, *, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe now and again after every reconnect; wait for SUBACK."""
        self._subscriptions[topic_filter] = qos
        result, mid = self._client.subscribe(topic_filter, qos)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe to {topic_filter} failed: {paho.error_string(result)}")
        await self._await_mid(mid, timeout, f"SUBACK for {topic_filter}")

    def keep_subscribed(self, topic_filter: str, *, qos: int = 1) -> None:
        """Subscribe on every (re)connect from now on, without waiting for the broker."""
        self._subscriptions[topic_filter] = qos
        if self._connected.is_set():
            self._client.subscribe(topic_filter, qos)

    async def messages(self) -> AsyncIterator[Message]:
        """Yield received messages in arrival order."""
        queue = required(self._messages, "the message queue (connect() first)")
        while True:
            message = await queue.get()
            self._room.release()
            yield message

    def backlog(self) -> int:
        """Messages received and not yet taken from messages()."""
        return self._messages.qsize() if self._messages is not None else 0

    def ack(self, message: Message) -> None:
        """Acknowledge a message received with manual_ack, once it is safely handled."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    async def _await_mid(self, mid: int, timeout: float, what: str) -> None:
        loop = required(self._loop, "the client's event loop (connect() first)")
        future: asyncio.Future[str | None] = loop.create_future()
        with self._lock:
            if mid in self._completed:
                error = self._completed.pop(mid)
                if error is not None:
                    raise MqttError(f"broker refused: {what}: {error}")
                return
            self._pending[mid] = future
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
            # that arrives together with the result, and the caller then never stops.
            async with asyncio.timeout(timeout):
                error = await future
        except TimeoutError as exc:
            raise MqttError(f"no {what} within {timeout:g}s") from exc
        finally:
            with self._lock:
                self._pending.pop(mid, None)
        if error is not None:
            raise MqttError(f"broker refused: {what}: {error}")

    def _complete(self, mid: int, error: str | None = None) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                self._completed[mid] = error
                while len(self._completed) > 4096:
                    self._completed.popitem(last=False)
                return
        future.get_loop().call_soon_threadsafe(_resolve, future, error)

    # paho callbacks: these run on paho's network thread.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle's algorithm on, so each small packet (PUBACK, an acknowledgement)
        # waits for the peer's delayed ACK: about 40 ms per round trip on Linux.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.error("broker %s refused the connection: %s", self._settings.url, reason)
            return
        self._connect_error = None
        self._connected.set()
        loop = required(self._loop, "the client's event loop")  # paho runs only after start()
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            loop.call_soon_threadsafe(self._wake_connect_waiters)
        log.info("connected to broker %s", self._settings.url)
        for topic_filter, qos in self._subscriptions.items():
            client.subscribe(topic_filter, qos)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connected.is_set() and not self._closing:
            url = self._settings.url
            if _ended_cleanly(flags.is_disconnect_packet_from_server, reason.value):
                # A broker restarting, or the connection closed without a word (MQTT 3.1.1
                # brokers just close it): expected in a plant, and paho reconnects.
                log.warning("broker %s closed the connection; reconnecting", url)
            else:
                log.error("lost the broker %s: %s; reconnecting", url, reason)
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        # MQTT 5 brokers say why they refused a publish (e.g. not authorised by the ACL).
        self._complete(mid, str(reason) if reason.is_failure else None)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        failed = [str(reason) for reason in reasons if reason.is_failure]
        self._complete(mid, ", ".join(failed) or None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        loop = required(self._loop, "the client's event loop")
        queue = required(self._messages, "the message queue")
        item = Message(
            message.topic, bytes(message.payload), message.qos, message.mid, message.retain
        )
        while not self._closing:
            if self._room.acquire(timeout=0.5):
                # RuntimeError: the event loop is closed, we are shutting down.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                return


_NORMAL_DISCONNECTION = 0x00
_UNSPECIFIED_ERROR = 0x80  # what paho reports when the socket closed under it
_SERVER_SHUTTING_DOWN = 0x8B


def _ended_cleanly(from_broker: bool, reason_code: int) -> bool:
    """Whether a disconnect is the broker (or the session) ending, not a failure."""
    if from_broker:  # an MQTT 5 DISCONNECT packet, which says why
        return reason_code in (_NORMAL_DISCONNECTION, _SERVER_SHUTTING_DOWN)
    # A keepalive timeout or protocol error is a failure; a closed socket is the broker leaving.
    return reason_code in (_NORMAL_DISCONNECTION, _UNSPECIFIED_ERROR)


def _resolve(future: asyncio.Future[str | None], error: str | None) -> None:
    if not future.done():
        future.set_result(error)

"""The MQTT client's error and race paths, driven through a stand-in for paho's client.

paho calls the client's callbacks from its network thread; here the test fires them, in
the order a broker or a failing network would, so each path runs on every run.
"""

import asyncio
import logging
import socket
import threading
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from shared.errors import MqttError
from shared.mqtt import Message, MqttClient, MqttSettings
from tests.harness import eventually


class FakePaho:
    """paho's Client as MqttClient uses it: records calls; the test fires its callbacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connect_timeout = 0.0
        self.on_socket_open: Any = None
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_publish: Any = None
        self.on_subscribe: Any = None
        self.on_message: Any = None
        self.subscribed: list[tuple[str, int]] = []
        self.acked: list[tuple[int, int]] = []
        self.publish_rc = paho.MQTT_ERR_SUCCESS
        self.subscribe_rc = paho.MQTT_ERR_SUCCESS
        self.next_mid = 1
        self.publish_reply: ReasonCode | None = None  # a PUBACK paho handles before publish returns
        self.sock: socket.socket | None = None
        self.loop_stops = 0
        self.stop: Any = lambda: None  # what paho's thread does before loop_stop's join returns

    def max_inflight_messages_set(self, inflight: int) -> None:
        pass

    def max_queued_messages_set(self, queue_size: int) -> None:
        pass

    def reconnect_delay_set(self, min_delay: int, max_delay: int) -> None:
        pass

    def connect_async(self, *args: Any, **kwargs: Any) -> None:
        pass

    def loop_start(self) -> None:
        pass

    def loop_stop(self) -> None:
        self.loop_stops += 1
        self.stop()

    def disconnect(self) -> None:
        pass

    def socket(self) -> socket.socket | None:
        return self.sock

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> paho.MQTTMessageInfo:
        info = paho.MQTTMessageInfo(self.next_mid)
        info.rc = self.publish_rc
        if self.publish_reply is not None:
            self.on_publish(self, None, self.next_mid, self.publish_reply, None)
        return info

    def subscribe(self, topic: str, qos: int) -> tuple[int, int | None]:
        if self.subscribe_rc != paho.MQTT_ERR_SUCCESS:
            return self.subscribe_rc, None
        self.subscribed.append((topic, qos))
        return self.subscribe_rc, self.next_mid

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append((mid, qos))

    # What the broker and the network do, as paho reports it.

    def connack(self, code: int = 0) -> None:
        reason = ReasonCode(PacketTypes.CONNACK, identifier=code)
        self.on_connect(self, None, ConnectFlags(False), reason, None)

    def disconnected(self, from_broker: bool, code: int) -> None:
        reason = ReasonCode(PacketTypes.DISCONNECT, identifier=code)
        self.on_disconnect(self, None, DisconnectFlags(from_broker), reason, None)

    def puback(self, mid: int, code: int = 0) -> None:
        self.on_publish(self, None, mid, ReasonCode(PacketTypes.PUBACK, identifier=code), None)

    def suback(self, mid: int, *codes: int) -> None:
        reasons = [ReasonCode(PacketTypes.SUBACK, identifier=code) for code in codes]
        self.on_subscribe(self, None, mid, reasons, None)

    def message(self, payload: bytes) -> None:
        message = paho.MQTTMessage(mid=len(payload), topic=b"plantwire/in")
        message.payload = payload
        message.qos = 1
        self.on_message(self, None, message)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[FakePaho]:
    made: list[FakePaho] = []

    def make(*args: Any, **kwargs: Any) -> FakePaho:
        made.append(FakePaho(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(paho, "Client", make)
    return made


def started(fakes: list[FakePaho], **kwargs: Any) -> tuple[MqttClient, FakePaho]:
    client = MqttClient(
        MqttSettings(url="mqtt://broker.invalid"),
        client_id="paths",
        persistent_session=False,
        **kwargs,
    )
    client.start()
    return client, fakes[-1]


async def test_connect_reports_a_refusal_and_a_silent_broker(
    fakes: list[FakePaho], caplog: pytest.LogCaptureFixture
) -> None:
    settings = MqttSettings(url="mqtt://broker.invalid", connect_timeout="200ms")
    refused = MqttClient(settings, client_id="refused", persistent_session=False)
    connecting = asyncio.create_task(refused.connect())
    await asyncio.sleep(0)  # connect() has started paho
    fakes[-1].connack(0x87)
    with pytest.raises(MqttError, match=r"broker\.invalid: Not authorized"):
        await connecting
    assert "broker mqtt://broker.invalid refused the connection: Not authorized" in caplog.text
    silent = MqttClient(settings, client_id="silent", persistent_session=False)
    with pytest.raises(MqttError, match=r"broker\.invalid: no CONNACK in time"):
        await silent.connect()


async def test_connack_twice_in_a_row_wakes_a_waiter_once(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    waiting = asyncio.create_task(client.wait_connected(5))
    await asyncio.sleep(0)  # the waiter is registered at its first suspension
    fake.connack()
    fake.connack()  # a reconnect right behind: its wake-up finds the waiter already done
    assert await waiting is True


async def test_close_before_start_joins_no_thread(fakes: list[FakePaho]) -> None:
    client = MqttClient(
        MqttSettings(url="mqtt://broker.invalid"), client_id="never", persistent_session=False
    )
    await client.close(timeout=0.1)
    assert fakes[-1].loop_stops == 0
    assert not client.connected


async def test_close_abandons_a_network_thread_that_does_not_end(
    fakes: list[FakePaho], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = started(fakes)
    release = threading.Event()
    fake.stop = lambda: release.wait(10)  # stuck, and no socket to shut
    try:
        await client.close(timeout=0.2)
    finally:
        release.set()
    assert "MQTT network thread still running" in caplog.text
    assert "abandoned" in caplog.text


async def test_close_shuts_the_socket_of_a_lingering_network_thread(
    fakes: list[FakePaho], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = started(fakes)
    ours, broker = socket.socketpair()
    broker.settimeout(10)
    seen: list[bytes] = []
    # paho's thread waits on its socket until a read fails: here until ours is shut.
    fake.sock = ours
    fake.stop = lambda: seen.append(broker.recv(1))
    try:
        await client.close(timeout=1.5)
    finally:
        ours.close()
        broker.close()
    assert seen == [b""], "the socket was shut down, which ended the thread's wait"
    assert "abandoned" not in caplog.text


async def test_close_fails_the_publishes_still_waiting(fakes: list[FakePaho]) -> None:
    client, _ = started(fakes)
    publishing = asyncio.create_task(client.publish("t", b"x", timeout=10))
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(MqttError, match="broker refused: PUBACK for t: connection closed"):
        await publishing


async def test_qos_0_neither_waits_for_nor_sends_an_acknowledgement(
    fakes: list[FakePaho],
) -> None:
    client, fake = started(fakes, manual_ack=True)
    await client.publish("t", b"x", qos=0, timeout=0.01)  # no PUBACK comes for QoS 0
    client.ack(Message("t", b"x", qos=0, mid=0, retain=False))
    client.ack(Message("t", b"y", qos=1, mid=7, retain=False))
    assert fake.acked == [(7, 1)]


async def test_a_publish_paho_refuses_raises(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    fake.publish_rc = paho.MQTT_ERR_QUEUE_SIZE
    with pytest.raises(MqttError, match="publish to t refused: Message queue full"):
        await client.publish("t", b"x", timeout=1)


async def test_a_subscribe_paho_refuses_raises(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    fake.subscribe_rc = paho.MQTT_ERR_NO_CONN
    with pytest.raises(MqttError, match="subscribe to t/# failed: The client is not currently"):
        await client.subscribe("t/#")


async def test_a_subscription_the_broker_refuses_raises(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    granted = asyncio.create_task(client.subscribe("ok/#", timeout=5))
    await asyncio.sleep(0)
    fake.suback(1, 1)  # granted at QoS 1
    await granted
    fake.next_mid = 2
    refused = asyncio.create_task(client.subscribe("secret/#", timeout=5))
    await asyncio.sleep(0)
    fake.suback(2, 0x87)
    with pytest.raises(MqttError, match="broker refused: SUBACK for secret/#: Not authorized"):
        await refused


async def test_keep_subscribed_subscribes_at_once_when_connected(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    client.keep_subscribed("early/#", qos=1)
    assert fake.subscribed == [], "not connected: waits for the CONNACK"
    fake.connack()
    client.keep_subscribed("late/#", qos=0)
    assert fake.subscribed == [("early/#", 1), ("late/#", 0)]


async def test_a_puback_before_the_wait_begins_is_not_lost(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    fake.publish_reply = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
    with pytest.raises(MqttError, match="broker refused: PUBACK for t: Not authorized"):
        await client.publish("t", b"x", timeout=1)
    fake.next_mid = 2
    fake.publish_reply = ReasonCode(PacketTypes.PUBACK)
    await client.publish("t", b"x", timeout=1)


async def test_unclaimed_completions_are_forgotten_oldest_first(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    for mid in range(1, 4098):  # e.g. PUBACKs of publishes whose callers gave up
        fake.puback(mid)
    fake.next_mid = 2
    await client.publish("t", b"x", timeout=1)
    fake.next_mid = 1
    with pytest.raises(MqttError, match=r"no PUBACK for t within 0\.05s"):
        await client.publish("t", b"x", timeout=0.05)


async def test_a_cancel_arriving_with_the_puback_still_cancels(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes)
    publishing = asyncio.create_task(client.publish("t", b"x", timeout=10))
    await asyncio.sleep(0)
    fake.puback(1)  # hands the result to the loop...
    publishing.cancel()  # ...which runs it after the cancel: it must not undo the cancel
    with pytest.raises(asyncio.CancelledError):
        await publishing


@pytest.mark.parametrize(
    ("from_broker", "code", "level", "text"),
    [
        (False, 0x80, logging.WARNING, "closed the connection; reconnecting"),
        (False, 0x8D, logging.ERROR, "lost the broker mqtt://broker.invalid: Keep alive timeout"),
        (True, 0x8B, logging.WARNING, "closed the connection; reconnecting"),
        (True, 0x8E, logging.ERROR, "lost the broker mqtt://broker.invalid: Session taken over"),
    ],
)
async def test_a_disconnect_is_logged_by_whether_it_is_a_failure(
    fakes: list[FakePaho],
    caplog: pytest.LogCaptureFixture,
    from_broker: bool,
    code: int,
    level: int,
    text: str,
) -> None:
    client, fake = started(fakes)
    fake.connack()
    caplog.clear()
    fake.disconnected(from_broker, code)
    assert not client.connected
    [record] = caplog.records
    assert record.levelno == level
    assert text in record.getMessage()


class CountingRoom(threading.Semaphore):
    """The receive queue's room, counting paho's tries to take some."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.tries = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        self.tries += 1
        return super().acquire(blocking, timeout)


def blocked_delivery(fake: FakePaho, payload: bytes) -> threading.Thread:
    thread = threading.Thread(target=fake.message, args=(payload,), daemon=True)
    thread.start()
    return thread


async def test_a_full_receive_queue_holds_paho_until_a_message_is_taken(
    fakes: list[FakePaho],
) -> None:
    client, fake = started(fakes, receive_queue=1)
    room = CountingRoom(1)
    client._room = room
    fake.message(b"1")
    second = blocked_delivery(fake, b"2")

    async def retried() -> bool:
        return room.tries >= 3  # the first message's, then two of the second's

    await eventually(retried, timeout=10, what="paho to wait out a full queue and try again")
    assert client.backlog() == 1, "the second message is not queued yet"
    received = client.messages()
    assert (await anext(received)).payload == b"1"
    second.join(5)
    assert not second.is_alive()
    taken = await asyncio.wait_for(anext(received), 5)
    assert taken == Message("plantwire/in", b"2", 1, 1, False)
    await client.close()


async def test_closing_releases_paho_waiting_on_a_full_queue(fakes: list[FakePaho]) -> None:
    client, fake = started(fakes, receive_queue=1)
    fake.message(b"1")
    second = blocked_delivery(fake, b"2")
    await client.close()
    await asyncio.to_thread(second.join, 5)
    assert not second.is_alive(), "paho's thread gave up the message and went on"
    assert client.backlog() == 1, "only the first message was queued"

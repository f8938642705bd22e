"""The MQTT client's wait for the broker: it returns when the CONNACK comes, not later."""

import time

from shared.mqtt import MqttClient, MqttSettings
from tests.servers import MosquittoServer, free_port


async def test_wait_connected_returns_at_the_connack_and_gives_up_at_its_timeout(
    mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    client = MqttClient(
        MqttSettings(url=mosquitto.url), client_id=f"{topic_prefix}-w", persistent_session=False
    )
    assert not await client.wait_connected(0.1), "not started: not connected"
    client.start()
    try:
        started = time.monotonic()
        assert await client.wait_connected(10)
        assert time.monotonic() - started < 2, "woken by the CONNACK, not a polling interval"
        assert await client.wait_connected(0), "already connected: at once"
    finally:
        await client.close()

    absent = MqttClient(
        MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}"),
        client_id=f"{topic_prefix}-x",
        persistent_session=False,
    )
    absent.start()
    try:
        started = time.monotonic()
        assert not await absent.wait_connected(0.3)
        assert 0.25 < time.monotonic() - started < 2
    finally:
        await absent.close()

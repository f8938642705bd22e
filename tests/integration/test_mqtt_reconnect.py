"""The MQTT link when the broker shuts down cleanly: a warning, not an error, and a reconnect
paced by mqtt.reconnect_min / reconnect_max."""

import asyncio
import logging
import time

import pytest

from shared.mqtt import MqttClient, MqttSettings
from tests.harness import eventually
from tests.servers import MosquittoServer


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_broker_restart_is_a_warning_and_the_backoff_is_configurable(
    protocol: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.mqtt")
    broker = MosquittoServer()
    broker.start()
    settings = MqttSettings.model_validate(
        {
            "url": broker.url,
            "protocol": protocol,
            "reconnect_min": "1s",
            "reconnect_max": "1s",
        }
    )
    client = MqttClient(settings, client_id=f"{topic_prefix}-r", persistent_session=False)
    again = MosquittoServer(port=broker.port)
    try:
        await client.connect()

        async def disconnected() -> bool:
            return not client.connected

        broker.stop()  # SIGTERM: Mosquitto shuts down cleanly
        await eventually(disconnected, timeout=10, what="the client to notice the shutdown")
        # An outage of a set length, not a wait for a condition: paho tries again 1, 3, 7 s
        # after the disconnect with the default backoff (1 s, doubling), so a broker back at
        # 3.2 s waits until 7 s; with reconnect_max 1s it is tried every second.
        await asyncio.sleep(3.2)
        again.start()
        restarted = time.monotonic()

        async def connected() -> bool:
            return client.connected

        await eventually(connected, timeout=10, what="the client to reconnect")
        assert time.monotonic() - restarted < 2.5, "reconnect_max: 1s caps the backoff"
    finally:
        await client.close()
        broker.stop()
        again.stop()
    records = [r for r in caplog.records if r.name == "shared.mqtt"]
    closed = [r for r in records if "closed the connection" in r.getMessage()]
    assert [r.levelno for r in closed] == [logging.WARNING]
    assert not [r for r in records if r.levelno >= logging.ERROR]

"""The collector and the MQTT link through outages of the database and the broker."""

import asyncio

import psycopg
import pytest

from shared.errors import MqttError
from shared.mqtt import MqttClient, MqttSettings
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import collector_config, eventually, get_json, running_collector
from tests.servers import MosquittoServer, PostgresServer, free_port


async def test_collector_holds_messages_while_the_database_is_down(
    own_postgres: PostgresServer, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    config = collector_config(
        database_url=own_postgres.url(),
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-c",
    )
    publisher = MqttClient(
        MqttSettings(url=mosquitto.url), client_id=f"{topic_prefix}-p", persistent_session=False
    )
    await publisher.connect()
    readings = [Reading("d", "t", DataType.INT32, 1_790_000_000_000_000 + i, i) for i in range(5)]
    async with running_collector(config) as base:
        own_postgres.stop("immediate")
        await publisher.publish(
            f"{topic_prefix}/v1/a1/batch",
            encode_batch("a1", 1, [1, 2, 3, 4, 5], readings),
            timeout=5,
        )

        async def unhealthy() -> bool:
            status, body = await get_json(f"{base}/healthz")
            return status == 503 and body["checks"]["database"].startswith("failing")

        await eventually(unhealthy, what="/healthz to report the database")
        await asyncio.sleep(1.0)  # let the consumer fail a write or two
        await asyncio.to_thread(own_postgres.start)

        async def stored() -> bool:
            def count() -> tuple[int, ...] | None:
                with psycopg.connect(own_postgres.url()) as conn:
                    return conn.execute("SELECT count(*) FROM readings").fetchone()

            try:
                # In a thread: a query blocking on the collector's locks must not block the
                # event loop the in-process collector runs on.
                row = await asyncio.to_thread(count)
            except psycopg.OperationalError:
                return False
            return row == (5,)

        await eventually(stored, what="the held batch to be written after the outage")
        status, _ = await get_json(f"{base}/healthz")
        assert status == 200
    await publisher.close()


async def test_mqtt5_round_trip_and_failures(mosquitto: MosquittoServer, topic_prefix: str) -> None:
    settings = MqttSettings(url=mosquitto.url.replace("mqtt://", "mqtt://user:pw@"), protocol="5")
    consumer = MqttClient(
        settings, client_id=f"{topic_prefix}-c5", persistent_session=True, manual_ack=True
    )
    producer = MqttClient(settings, client_id=f"{topic_prefix}-p5", persistent_session=False)
    await consumer.connect()
    await consumer.subscribe(f"{topic_prefix}/#")
    await producer.connect()
    await producer.publish(f"{topic_prefix}/x", b"hello", timeout=5)
    await producer.publish(f"{topic_prefix}/x", b"fire and forget", qos=0, timeout=5)
    stream = consumer.messages()
    first = await asyncio.wait_for(anext(stream), 5)
    second = await asyncio.wait_for(anext(stream), 5)
    consumer.ack(first)
    consumer.ack(second)
    assert (first.payload, first.qos, second.payload, second.qos) == (
        b"hello",
        1,
        b"fire and forget",
        0,
    )
    await producer.close()
    await consumer.close()

    nowhere = MqttClient(
        MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}", connect_timeout="1s"),
        client_id="nobody",
        persistent_session=False,
    )
    with pytest.raises(MqttError, match="cannot connect"):
        await nowhere.connect()


async def test_publish_times_out_while_the_broker_is_gone(topic_prefix: str) -> None:
    broker = MosquittoServer()
    broker.start()
    client = MqttClient(
        MqttSettings(url=broker.url), client_id=f"{topic_prefix}-t", persistent_session=True
    )
    await client.connect()
    broker.kill()
    try:
        with pytest.raises(MqttError, match="no PUBACK"):
            await client.publish("x/y", b"lost?", timeout=0.5)
        assert not client.connected
    finally:
        await client.close()
        broker.stop()

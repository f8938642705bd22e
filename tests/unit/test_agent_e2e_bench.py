"""make bench-agent-e2e's own logic: its load shape, its stand-in collector, its verdicts."""

import time
from collections.abc import AsyncIterator

import pytest

from agent.config import AgentConfig
from bench.agent_e2e_bench import (
    TAGS_PER_DEVICE,
    TOPICS,
    Point,
    StandInCollector,
    bulk_registers,
    max_sustained,
    modbus_devices,
    ranges_refused,
    result_line,
)
from protocols.modbus.config import ModbusDevice
from protocols.simulator.machine import TAGS, Machine, bulk_tags
from protocols.simulator.modbus_server import ModbusImage
from shared.acks import decode_ack
from shared.mqtt import Message
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import eventually


def test_load_shape_is_one_endpoint_of_distinct_devices_the_simulator_serves() -> None:
    points = 60_000  # 600 devices: more than one block of unit ids
    devices = modbus_devices(5020, points)
    config = AgentConfig.model_validate(
        {
            "agent": {"id": "bench"},
            "buffer": {"path": "/tmp/unused.sqlite"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "devices": devices,
        }
    )
    modbus = [d for d in config.devices if d.type == "modbus"]
    assert len(modbus) == points // TAGS_PER_DEVICE
    assert {(d.host, d.port) for d in modbus} == {("127.0.0.1", 5020)}
    assert all(1 <= d.unit <= 247 for d in modbus)
    assert sum(len(d.tags) for d in modbus) == points
    assert {t.type for d in modbus for t in d.tags} == {DataType.UINT16}
    # No two devices read the same registers of the same unit.
    reads = [(d.unit, t.address) for d in modbus for t in d.tags]
    assert len(set(reads)) == len(reads)
    tags = TAGS + bulk_tags(bulk_registers(points))
    image = ModbusImage(Machine(bulk=tags[len(TAGS) :]), tags, "ABCD", lambda: 0)
    assert max(address for _, address in reads) < image.sizes["holding_register"]


def test_ranges_stand_for_the_same_tags_as_the_per_tag_shape() -> None:
    refused = ranges_refused()
    if refused is not None:
        pytest.skip(f"the Modbus config does not accept ranges yet ({refused})")
    for ranged, single in zip(
        modbus_devices(5020, 30_000, as_ranges=True), modbus_devices(5020, 30_000), strict=True
    ):
        assert ModbusDevice.model_validate(ranged) == ModbusDevice.model_validate(single)


class FakeBroker:
    """Hands the stand-in prepared messages and records what it publishes."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages
        self.published: list[tuple[str, bytes]] = []

    async def messages(self) -> AsyncIterator[Message]:
        for message in self._messages:
            yield message

    async def publish(self, topic: str, payload: bytes, *, timeout: float) -> None:
        self.published.append((topic, payload))


async def test_stand_in_acknowledges_every_copy_and_counts_a_batch_once() -> None:
    now_us = time.time_ns() // 1000
    readings = [
        Reading("plc0000", f"hr{i:02d}", DataType.UINT16, now_us - 250_000, i) for i in range(3)
    ]
    payload = encode_batch("e2e1", 7, [11, 12, 13], readings)
    message = Message(TOPICS.batch("e2e1"), payload, 1, 1, False)
    broker = FakeBroker([message, message])
    stand_in = StandInCollector(broker)  # type: ignore[arg-type]
    await stand_in.run()

    async def both_acknowledged() -> bool:
        return len(broker.published) == 2

    await eventually(both_acknowledged, timeout=5, what="two acknowledgements")
    for topic, raw in broker.published:
        ack = decode_ack(raw)
        assert (topic, ack.epoch, ack.stored) == (TOPICS.ack("e2e1"), 7, [11])
    [arrival] = stand_in.arrivals["e2e1"]
    assert (arrival.readings, arrival.size) == (3, len(payload))
    assert 250 <= float(arrival.lags_ms.min()) < 10_000
    assert stand_in.problems == {"batch received again": 1}


def point(offered: float, delivered: float, **figures: float) -> Point:
    return Point(f"modbus {offered / 1000:g}k", offered, delivered, **figures)


def test_max_sustained_is_the_highest_load_delivered_at_98_percent() -> None:
    points = [
        point(10_000, 10_000, agent_rss_mb=80.0, wire_bytes_per_reading=58.0),
        point(30_000, 29_000),  # 96.7 %: not sustained
        point(60_000, 59_000),  # 98.3 %: sustained, though 30k was not
        point(100_000, 40_000, agent_cpu_pct=99.0),
        point(120_000, 30_000),
        Point("ranges 10k", 200_000, 200_000),  # not a per-tag Modbus point
    ]
    assert max_sustained(points) == 60_000
    assert result_line(points) == (
        "RESULT max_sustained_points_per_s=60000 cpu_pct_at_100k=99.0 rss_mb_at_10k=80.0"
        " delivered_ratio_at_2x_capacity=0.50 wire_bytes_per_reading=58.0"
    )

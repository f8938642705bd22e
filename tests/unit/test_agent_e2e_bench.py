"""make bench-agent-e2e's own logic: its load shape, its stand-in collector, its verdicts."""

import math
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.config import AgentConfig
from bench.agent_e2e_bench import (
    TAGS_PER_DEVICE,
    TOPICS,
    Arrival,
    Point,
    StandInCollector,
    bulk_registers,
    max_sustained,
    median_point,
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
            "buffer": {"path": "unused.sqlite"},
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
        " cpu_pct_per_1k_points_at_10k=nan delivered_ratio_at_2x_capacity=0.50"
        " wire_bytes_per_reading=58.0"
    )


def arrivals_at(*times: float, readings: int = 5000) -> list[Arrival]:
    return [Arrival(at, readings, 100, np.zeros(readings, np.float32)) for at in times]


def test_a_burst_a_second_is_counted_once_per_second_of_the_window() -> None:
    stand_in = StandInCollector(FakeBroker([]))  # type: ignore[arg-type]
    # Two batches per burst, one burst a second, the window's edges between bursts.
    stand_in.arrivals["a"] = arrivals_at(*(t + d for t in range(40) for d in (0.0, 0.01)))
    inside, seconds = stand_in.window("a", 10.5, 30.5)
    assert sum(a.readings for a in inside) / seconds == pytest.approx(10_000)
    # A stalled agent: its last batches tell nothing of the empty rest of the window.
    stand_in.arrivals["b"] = arrivals_at(9.9, 10.2, 10.4)
    inside, seconds = stand_in.window("b", 10.0, 30.0)
    assert (len(inside), seconds) == (2, 20.0)


def test_runs_of_a_point_give_each_figure_its_median() -> None:
    runs = [
        point(60_000, 18_000, agent_rss_mb=170.0),
        point(60_000, 30_000, agent_rss_mb=190.0),
        Point("modbus 60k", 60_000, note="agent exited (1) meanwhile"),
    ]
    median = median_point(runs)
    assert (median.label, median.offered, median.delivered) == ("modbus 60k", 60_000, 18_000)
    assert median.agent_rss_mb == 180.0
    assert math.isnan(median.lag_p50_ms)
    assert median.note == "agent exited (1) meanwhile"

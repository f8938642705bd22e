"""Backoff, value mapping, time conversion, log lines and the simulated machine."""

import io
import logging
import random
from datetime import UTC, datetime

import pytest

from collector.batches import decode_batch
from collector.store import join_value
from protocols.simulator.machine import Machine, MachineState
from shared.backoff import Backoff
from shared.blocks import ValueKind
from shared.logs import setup_logging
from shared.readings import (
    DataType,
    Quality,
    Reading,
    datetime_to_us,
    us_to_datetime,
    value_fits,
)
from shared.wire import encode_batch

TS = 1_790_000_000_000_000


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        bound = min(8.0, 2.0**attempt)
        assert bound / 2 <= delay <= bound
    backoff.reset()
    assert backoff.next_delay() <= 1.0


@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        (DataType.BOOL, True),
        (DataType.BOOL, False),
        (DataType.INT16, -5),
        (DataType.UINT64, 2**64 - 1),
        (DataType.INT64, -(2**60)),
        (DataType.FLOAT64, 1.5),
        (DataType.STRING, "abc"),
        (DataType.FLOAT32, None),
        (DataType.UINT64, None),
    ],
)
def test_values_survive_the_database_columns(data_type: DataType, value: object) -> None:
    quality = Quality.GOOD if value is not None else Quality.BAD
    raw = encode_batch("a1", 1, [1], [Reading("d", "t", data_type, TS, value, quality)])  # type: ignore[arg-type]
    batch = decode_batch(raw, "a1")
    number = float(batch.values[0]) if batch.kinds[0] == ValueKind.NUMBER else None
    text = batch.texts[0] if batch.kinds[0] == ValueKind.TEXT else None
    restored = join_value(data_type, number, text)
    assert restored == value
    assert type(restored) is type(value)


def test_time_conversion_is_exact() -> None:
    moment = datetime(2026, 11, 25, 8, 30, 1, 123456, tzinfo=UTC)
    assert us_to_datetime(datetime_to_us(moment)) == moment


def test_value_fits_checks_ranges_and_types() -> None:
    assert value_fits(DataType.UINT16, 65535)
    assert not value_fits(DataType.UINT16, 65536)
    assert not value_fits(DataType.INT32, True)
    assert not value_fits(DataType.FLOAT32, 1)
    assert value_fits(DataType.STRING, "")


def test_machine_counts_parts_while_running_and_not_while_paused() -> None:
    machine = Machine(seed=5, cycle_time_s=1.0)
    for second in range(20):
        machine.step(1.0, second)
    parts = int(machine.values["good_count"]) + int(machine.values["scrap_count"])
    assert parts == 20
    assert machine.values["temperature"] > 25.0
    machine.paused = True
    version = machine.version
    machine.step(1.0, 21)
    assert machine.version == version


def test_machine_goes_through_every_state() -> None:
    machine = Machine(seed=11, cycle_time_s=1.0)
    seen = set()
    for second in range(20_000):
        machine.step(1.0, second)
        seen.add(machine.values["state"])
        if machine.values["state"] == MachineState.DOWN:
            assert machine.values["reason_code"] in (1, 2, 3, 4)
            assert machine.values["spindle_speed"] == 0
    assert seen == {1, 2, 3}


def test_machine_set_rejects_unknown_tags() -> None:
    machine = Machine()
    machine.set(5, temperature=30.0)
    assert machine.updated_us == 5
    with pytest.raises(KeyError, match="no tag"):
        machine.set(6, colour="red")


def test_log_lines_carry_an_iso_time_with_its_offset() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        record = logging.LogRecord("plant", logging.WARNING, __file__, 1, "hot %s", ("oven",), None)
        moment = datetime(2026, 11, 26, 14, 3, 11, 123456, tzinfo=UTC)
        record.created = moment.timestamp()
        handler.handle(record)
        assert stream.getvalue() == "2026-11-26T14:03:11.123+00:00 WARNING plant: hot oven\n"
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

"""Report by exception: changes, deadbands, quality changes and the heartbeat."""

import math

from agent.report import ExceptionFilter
from shared.readings import DataType, Quality, Reading
from tests.unit.fakes import FakeClock


def reading(tag: str, value: object, quality: Quality = Quality.GOOD) -> Reading:
    data_type = {bool: DataType.BOOL, str: DataType.STRING, int: DataType.INT32}.get(
        type(value), DataType.FLOAT64
    )
    return Reading("d", tag, data_type, 1, value, quality)  # type: ignore[arg-type]


def test_only_news_passes() -> None:
    clock = FakeClock()
    report = ExceptionFilter({"temp": 0.5}, heartbeat_s=60, clock=clock)
    sequence = [
        (reading("temp", 20.0), True),  # first value
        (reading("temp", 20.4), False),  # inside the deadband
        (reading("temp", 20.6), True),  # beyond it, measured from the last sent
        (reading("temp", 20.6, Quality.UNCERTAIN), True),  # quality changed
        (reading("temp", None, Quality.BAD), True),
        (reading("temp", None, Quality.BAD), False),
        (reading("count", 1), True),
        (reading("count", 1), False),
        (reading("count", 2), True),  # no deadband: any change
        (reading("flag", True), True),
        (reading("flag", True), False),
        (reading("flag", False), True),
        (reading("text", "a"), True),
        (reading("text", "a"), False),
        (reading("nan", math.nan), True),
        (reading("nan", math.nan), False),
    ]
    for item, expected in sequence:
        assert bool(report([item])) is expected, item
    assert report.suppressed == sum(1 for _, kept in sequence if not kept)


def test_heartbeat_resends_unchanged_values() -> None:
    clock = FakeClock()
    report = ExceptionFilter({}, heartbeat_s=10, clock=clock)
    assert report([reading("t", 1)])
    clock.now += 9.9
    assert not report([reading("t", 1)])
    clock.now += 0.1
    assert report([reading("t", 1)])


def test_devices_get_a_filter_only_with_report_by_exception() -> None:
    from agent.service import exception_filter
    from protocols.opcua.config import OpcUaDevice

    tags = [
        {"name": "a", "node": "i=1", "deadband": 1.0},
        {"name": "b", "node": "i=2", "deadband": 5.0, "deadband_type": "percent"},
    ]
    base = {
        "type": "opcua",
        "name": "u",
        "endpoint": "opc.tcp://h",
        "tags": tags,
        "mode": "subscribe",
    }
    clock = FakeClock()
    assert exception_filter(OpcUaDevice.model_validate(base), clock) is None
    report = exception_filter(
        OpcUaDevice.model_validate({**base, "report_by_exception": True, "heartbeat": "5s"}), clock
    )
    assert report is not None
    assert report([reading("a", 1.0), reading("b", 1.0)])
    assert report([reading("a", 1.5), reading("b", 1.5)]) == [reading("b", 1.5)], (
        "percent deadbands are the server's job; the client applies absolute ones"
    )

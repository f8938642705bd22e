"""Request coalescing: as few reads as the protocol's limits and the configured gap allow."""

from protocols.modbus.config import ModbusTag
from protocols.modbus.planner import MAX_BITS, MAX_REGISTERS, plan_reads
from shared.readings import DataType


def register(name: str, address: int, data_type: DataType = DataType.UINT16) -> ModbusTag:
    return ModbusTag(name=name, table="holding_register", address=address, type=data_type)


def coil(name: str, address: int) -> ModbusTag:
    return ModbusTag(name=name, table="coil", address=address, type=DataType.BOOL)


def test_adjacent_tags_share_one_request() -> None:
    tags = [
        register("a", 0),
        register("b", 1, DataType.FLOAT32),
        register("c", 3, DataType.FLOAT64),
    ]
    [request] = plan_reads(tags, max_gap=0)
    assert (request.address, request.count) == (0, 7)
    assert [tag.name for tag in request.tags] == ["a", "b", "c"]


def test_gap_within_limit_is_read_over() -> None:
    requests = plan_reads([register("a", 0), register("b", 10)], max_gap=9)
    assert [(r.address, r.count) for r in requests] == [(0, 11)]


def test_gap_beyond_limit_splits() -> None:
    requests = plan_reads([register("a", 0), register("b", 10)], max_gap=8)
    assert [(r.address, r.count) for r in requests] == [(0, 1), (10, 1)]


def test_requests_never_exceed_125_registers() -> None:
    tags = [register(f"t{i}", i * 2, DataType.UINT32) for i in range(200)]
    requests = plan_reads(tags, max_gap=0)
    assert all(r.count <= MAX_REGISTERS for r in requests)
    assert sum(len(r.tags) for r in requests) == 200
    assert len(requests) == 4  # 400 registers / 124 per request


def test_bits_coalesce_up_to_2000() -> None:
    tags = [coil(f"c{i}", i) for i in range(4500)]
    requests = plan_reads(tags, max_gap=0)
    assert [r.count for r in requests] == [MAX_BITS, MAX_BITS, 500]


def test_tables_are_planned_separately_and_unsorted_input_is_fine() -> None:
    tags = [register("b", 5), coil("c", 3), register("a", 0)]
    requests = plan_reads(tags, max_gap=10)
    assert {(r.table, r.address, r.count) for r in requests} == {
        ("holding_register", 0, 6),
        ("coil", 3, 1),
    }


def test_one_based_addresses_shift_to_wire() -> None:
    [request] = plan_reads([register("a", 1), register("b", 2)], max_gap=0, address_shift=1)
    assert (request.address, request.count) == (0, 2)


def test_overlapping_tags_share_registers() -> None:
    tags = [register("whole", 0, DataType.UINT32), register("low", 1)]
    [request] = plan_reads(tags, max_gap=0)
    assert (request.address, request.count) == (0, 2)

"""The equipment_status gauge's reading of states, run in the test's own task (no tracer doubt)."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from collector.analytics import equipment_store
from collector.analytics.equipment_store import EquipmentStore, MachineState, watch_status
from collector.metrics import CollectorMetrics

MAPPING = {
    "states": [
        {"name": "running", "values": [1], "element": "production"},
        {"name": "down", "values": [3], "element": "delay"},
    ]
}


class _Cursor:
    async def fetchall(self) -> list[Any]:
        return [
            ("plant-1", "press-1", MAPPING, "uint16", 3.0, None),  # down
            ("plant-1", "press-2", MAPPING, None, None, None),  # no reading yet
        ]


class _Conn:
    async def execute(self, query: str) -> _Cursor:
        return _Cursor()


class _Pool:
    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[_Conn]:
        yield _Conn()


async def test_each_machine_s_latest_state_is_named_by_its_site_s_mapping() -> None:
    store = EquipmentStore(_Pool())  # type: ignore[arg-type]
    assert await store.machine_states() == [
        MachineState("plant-1", "press-1", ("running", "down"), "down"),
        MachineState("plant-1", "press-2", ("running", "down"), None),
    ]


class _Stop(Exception):
    pass


class _Asyncio:
    """Stands in for the module's asyncio: its sleep ends the loop."""

    def __init__(self, sleep: Any) -> None:
        self.sleep = sleep


async def test_the_gauge_shows_every_status_then_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stop(seconds: float) -> None:
        assert seconds == 10.0
        raise _Stop

    monkeypatch.setattr(equipment_store, "asyncio", _Asyncio(stop))
    metrics = CollectorMetrics()
    with pytest.raises(_Stop):
        await watch_status(EquipmentStore(_Pool()), metrics, 10.0)  # type: ignore[arg-type]
    shown = {
        (sample.labels["equipment"], sample.labels["status"]): sample.value
        for family in metrics.equipment_status.collect()
        for sample in family.samples
    }
    assert shown[("plant-1/press-1", "down")] == 1.0
    assert shown[("plant-1/press-2", "unknown")] == 1.0
    assert shown[("plant-1/press-1", "running")] == 0.0

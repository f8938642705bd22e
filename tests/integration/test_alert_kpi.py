"""KPI rules against real PostgreSQL: readings written by the store, derived by the deriver,
judged by the evaluator at chosen moments of a shift."""

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from collector.alerts.evaluator import AlertEvaluator
from collector.alerts.rules import CONDITION, AlertRules
from collector.analytics.deriver import Deriver
from collector.analytics.equipment import Plant
from collector.analytics.equipment_store import EquipmentStore
from collector.config import AlertSettings, AnalyticsSettings, IngestSettings
from collector.consumer import batch_decoder
from collector.metrics import CollectorMetrics
from collector.store import ReadingStore
from shared.readings import DataType, Quality, Reading, datetime_to_us
from shared.wire import Topics, encode_batch
from tests.harness import RecordedRollups

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday; the shift runs 06:00 to 14:00 UTC
DECODER = batch_decoder(IngestSettings())
PLANT = Plant.model_validate(
    {
        "sites": [
            {
                "id": "plant-1",
                "time_zone": "UTC",
                "areas": [{"id": "pressing", "lines": [{"id": "line-1"}]}],
                "calendar": {"shifts": [{"name": "early", "start": "06:00", "end": "14:00"}]},
                "loss_mapping": {
                    "states": [
                        {"name": "running", "values": [1], "element": "production"},
                        {"name": "down", "values": [3], "element": "delay"},
                    ]
                },
                "machines": [
                    {
                        "id": "press-a",
                        "area": "pressing",
                        "line": "line-1",
                        "state": {"tag": "press/state", "agent": "a1"},
                        "good": {"tag": "press/good", "agent": "a1"},
                    }
                ],
            }
        ]
    }
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def pool(db_pool: Any) -> Any:
    await EquipmentStore(db_pool).seed(PLANT)
    return db_pool


async def states(pool: Any, batch_id: int, *changes: tuple[float, int]) -> None:
    """Write state readings through the store and derive them."""
    readings = [
        Reading("press", "state", DataType.UINT16, datetime_to_us(at(m)), code, Quality.GOOD)
        for m, code in changes
    ]
    seqs = list(range(batch_id * 100, batch_id * 100 + len(readings)))
    payload = encode_batch("a1", 1, seqs, readings)
    await ReadingStore(pool).write([DECODER.decode(payload, "a1", Topics().batch("a1"))])
    latest = at(max(m for m, _ in changes))
    settings = AnalyticsSettings()
    await Deriver(pool, settings, CollectorMetrics(), RecordedRollups(), lambda: latest).pass_once()


async def add(pool: Any, **condition: Any) -> str:
    made = await AlertRules(pool).create(
        "shift availability",
        CONDITION.validate_python({"kind": "kpi", "site": "plant-1", **condition}),
        True,
        "tests",
    )
    return made.id


def alerts(url: str, rule: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT state, started_at, fired_at, resolved_at, resolved_reason, late, value"
            " FROM alerts WHERE rule_id = %s ORDER BY started_at",
            (rule,),
        ).fetchall()


async def test_a_shift_kpi_below_target_fires_recovers_and_ends_with_its_shift(
    pool: Any, database_url: str
) -> None:
    rule = await add(pool, kpi="availability", target=0.5, min_planned_seconds=600)
    elsewhere = await add(pool, machine="press-z", kpi="oee", target=0.9, min_planned_seconds=0)
    now = [at(5)]
    evaluator = AlertEvaluator(
        database_url, AlertSettings(kpi_interval="60s"), CollectorMetrics(), lambda: now[0]
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

        async def evaluate(minutes: float) -> None:
            now[0] = at(minutes)
            await evaluator.evaluate(conn)

        await states(pool, 1, (0, 3), (60, 1))
        await evaluate(5)  # five minutes of planned time: too little to judge
        assert alerts(database_url, rule) == []
        await evaluate(30)  # down since the shift began
        assert alerts(database_url, rule) == [("firing", at(30), at(30), None, None, False, 0.0)]
        await evaluate(180)  # running since the first hour: 2/3
        await states(pool, 2, (180, 3))
        await evaluate(180.5)  # not due again yet: no change
        assert alerts(database_url, rule)[0][:4] == ("resolved", at(30), at(30), at(180))
        await evaluate(420)  # down again: 2 of 7 hours
        assert alerts(database_url, rule)[1][:3] == ("firing", at(420), at(420))
        await evaluate(540)  # the shift ended at 14:00 (480 minutes in)
    (_, second) = alerts(database_url, rule)
    assert second[:5] == ("resolved", at(420), at(420), at(480), "shift ended")
    assert second[6] == pytest.approx(2 / 7)
    assert alerts(database_url, elsewhere) == []


async def test_an_open_kpi_alert_of_a_site_that_went_away_is_resolved(
    pool: Any, database_url: str
) -> None:
    rule = await add(pool, kpi="availability", target=0.5, min_planned_seconds=0)
    now = [at(30)]
    evaluator = AlertEvaluator(
        database_url, AlertSettings(kpi_interval="1ms"), CollectorMetrics(), lambda: now[0]
    )
    await states(pool, 1, (0, 3))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await evaluator.evaluate(conn)
        assert alerts(database_url, rule)[0][0] == "firing"
        await conn.execute("DELETE FROM equipment_machines")
        await conn.execute("DELETE FROM equipment_sites")
        now[0] = at(40)
        await evaluator.evaluate(conn)
    assert alerts(database_url, rule)[0][:5] == ("resolved", at(30), at(30), at(40), "no such site")

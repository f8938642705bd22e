"""The collector's commands table against PostgreSQL, with a broker that fails on purpose:
sending again what the broker did not take, timing out, and results that come late, twice,
or for a command the agent was never sent."""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.commands import Commands
from collector.config import CommandSettings
from collector.metrics import CollectorMetrics
from shared.commands import CommandResult, decode_command, encode_result
from shared.errors import WireError
from shared.wire import Topics
from tests.harness import eventually
from tests.unit.fakes import FlakyPublisher

pytestmark = pytest.mark.integration
FAST = {"publish_timeout": "1ms", "check_interval": "20ms", "grace": "0s"}


def store(pool: Any, publisher: FlakyPublisher) -> tuple[Commands, CollectorMetrics]:
    metrics = CollectorMetrics()
    settings = CommandSettings.model_validate(FAST)
    return Commands(
        pool, publisher, topics=Topics("p"), settings=settings, metrics=metrics
    ), metrics


def sample(metrics: CollectorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def result(command_id: uuid.UUID, status: str, **fields: Any) -> bytes:
    return encode_result(
        CommandResult.model_validate(
            {"v": 1, "id": command_id, "status": status, "finished_at": datetime.now(UTC), **fields}
        )
    )


async def test_a_command_the_broker_did_not_take_is_sent_again(db_pool: Any) -> None:
    publisher = FlakyPublisher(failures=2)
    commands, metrics = store(db_pool, publisher)
    made = await commands.create("line1", "press", "speed", 1.5, 60, ("7e57ab1e", "tests"))
    assert (made.status, made.sent_at) == ("pending", None)
    running = asyncio.ensure_future(commands.run())
    try:

        async def sent() -> bool:
            found = await commands.get(made.id)
            return found is not None and found.status == "sent"

        await eventually(sent, timeout=10, what="the command to be sent again")
    finally:
        running.cancel()
        await asyncio.wait({running})
    assert sample(metrics, "plantwire_collector_command_send_failures_total") == 2
    ((topic, raw),) = publisher.published
    assert topic == f"p/v1/line1/cmd/{made.id}"
    payload = decode_command(raw)
    assert (payload.id, payload.value, payload.requested_by) == (
        made.id,
        1.5,
        "key 7e57ab1e (tests)",
    )
    assert payload.expires_at == made.expires_at


async def test_results_are_taken_once_and_a_late_one_replaces_timed_out(db_pool: Any) -> None:
    publisher = FlakyPublisher(failures=1000)
    commands, metrics = store(db_pool, publisher)
    made = await commands.create("line1", "press", "speed", 7, 0.05, ("7e57ab1e", "tests"))

    async def timed_out() -> bool:
        return [c.id for c in await commands.time_out()] == [made.id]

    await eventually(timed_out, timeout=10, what="the command to time out")
    found = await commands.get(made.id)
    assert found is not None
    assert found.status == "timed_out"
    assert found.reason == "never handed to the broker before it expired"
    # The agent's word comes after all: it is what happened, and it is recorded once.
    late = result(made.id, "expired", reason="expired at ...")
    await commands.take_result("line1", "result", late)
    await commands.take_result("line1", "result", late)
    found = await commands.get(made.id)
    assert found is not None
    assert (found.status, found.reason) == ("expired", "expired at ...")
    assert sample(metrics, "plantwire_collector_commands_total", status="expired") == 1
    assert sample(metrics, "plantwire_collector_commands_total", status="timed_out") == 1
    async with db_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT body FROM events WHERE kind = 'command.result' ORDER BY id"
        )
        bodies = [row[0] for row in await cursor.fetchall()]
    assert [b["status"] for b in bodies] == ["timed_out", "expired"]
    with pytest.raises(WireError, match="which agent line2 was not sent"):
        await commands.take_result("line2", "result", late)
    with pytest.raises(WireError, match=r"^invalid command result: id: Field required"):
        await commands.take_result("line1", "result", json.dumps({"v": 1}).encode())

"""Faults injected into a running plant; afterwards every committed reading is stored exactly
once (or is a counted policy drop), in order per tag."""

import asyncio
import random
import sqlite3

import pytest

from tests.faults.plant import Plant
from tests.faults.proxy import SilentCutProxy
from tests.servers import PostgresServer


async def flowing(plant: Plant, at_least: int = 150) -> None:
    """Wait until readings arrive in PostgreSQL."""
    base = len(plant.stored_seqs())
    await plant.wait_until(
        lambda: len(plant.stored_seqs()) >= base + at_least, 60, "readings flowing into PostgreSQL"
    )


def running_plant(plant: Plant) -> Plant:
    plant.start_simulator()
    plant.start_broker()
    plant.start_collector()
    plant.start_agent()
    return plant


async def test_broker_killed_mid_stream(plant_factory: type[Plant]) -> None:
    plant = running_plant(plant_factory())
    await flowing(plant)
    plant.kill("broker")
    await asyncio.sleep(10.5)
    plant.start_broker()
    await flowing(plant)
    figures = await plant.drain_and_check()
    assert figures["committed"] > 300


async def test_collector_killed_mid_stream(plant_factory: type[Plant]) -> None:
    plant = running_plant(plant_factory())
    await flowing(plant)
    plant.kill("collector")
    await asyncio.sleep(3)
    plant.start_collector()
    await flowing(plant)
    await plant.drain_and_check()


async def test_postgres_stopped_immediately(plant_factory: type[Plant]) -> None:
    server = PostgresServer()
    server.start()
    try:
        plant = running_plant(plant_factory(server))
        await flowing(plant)
        await asyncio.to_thread(server.stop, "immediate")
        await asyncio.sleep(5)
        await asyncio.to_thread(server.start)
        await flowing(plant)
        await plant.drain_and_check()
    finally:
        server.remove()


async def test_agent_killed_at_random_moments(plant_factory: type[Plant]) -> None:
    plant = running_plant(plant_factory())
    await flowing(plant, at_least=30)
    rng = random.Random(7)
    for _ in range(10):
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        plant.kill("agent")
        with sqlite3.connect(plant.buffer_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        plant.start_agent()
    await flowing(plant)
    await plant.drain_and_check()


async def test_network_cut_silently_longer_than_keepalive(plant_factory: type[Plant]) -> None:
    proxy = SilentCutProxy(target_port=0)
    await proxy.start()
    plant = plant_factory(broker_port=proxy.port, keepalive="2s")
    proxy.target_port = plant.broker.port
    running_plant(plant)
    try:
        await flowing(plant)
        proxy.cut()
        before = len(plant.stored_seqs())
        await asyncio.sleep(8)
        assert len(plant.stored_seqs()) - before < 200, "the cut stopped the flow"
        proxy.restore()
        await flowing(plant)
        await plant.drain_and_check()
    finally:
        await proxy.close()


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "block"])
async def test_buffer_too_small_for_the_outage(plant_factory: type[Plant], policy: str) -> None:
    plant = plant_factory(buffer={"max_readings": 300, "when_full": policy})
    plant.start_simulator()
    plant.start_agent()  # the broker is down: everything waits in the buffer

    def full() -> bool:
        held, drops = plant.buffer_state()
        if policy == "block":
            return held >= 300
        return drops.get(f"dropped_{policy.split('_')[1]}", 0) > 200

    await plant.wait_until(full, 60, f"the buffer to overflow under {policy}")
    if policy == "block":
        await asyncio.sleep(2)
        held, drops = plant.buffer_state()
        assert held <= 300
        assert not any(drops.values())
    plant.start_broker()
    plant.start_collector()
    figures = await plant.drain_and_check(policy=policy)
    if policy == "drop_newest":
        assert figures["handed"] == figures["committed"] + figures["dropped_newest"]
        assert figures["dropped_newest"] > 200
    else:
        assert figures["handed"] == figures["committed"]
    if policy == "drop_oldest":
        assert figures["stored"] + figures["dropped_oldest"] == figures["committed"]


async def test_plc_disappears_and_returns(plant_factory: type[Plant]) -> None:
    plant = running_plant(plant_factory())
    await flowing(plant)
    plant.kill("simulator")
    await asyncio.sleep(3)
    plant.start_simulator()
    await flowing(plant)
    import psycopg

    with psycopg.connect(plant.database_url) as conn:
        rows = conn.execute(
            "SELECT t.name, r.quality, r.value IS NULL FROM readings r JOIN tags t USING (tag_id)"
            " WHERE r.quality = 2"
        ).fetchall()
    assert sorted(name for name, _, _ in rows) == ["count", "speed", "temp"], (
        "one bad reading per tag while the PLC was away"
    )
    assert all(missing for _, _, missing in rows), "no invented values"
    await plant.drain_and_check()


async def test_two_collectors_share_the_stream_and_one_is_killed(
    plant_factory: type[Plant],
) -> None:
    plant = running_plant(plant_factory())
    plant.start_collector(2)
    await flowing(plant, at_least=300)
    assert plant.collector_stored_batches(1) > 0
    assert plant.collector_stored_batches(2) > 0, "both collectors took load"
    plant.kill("collector2")
    await flowing(plant, at_least=300)
    await plant.drain_and_check()

"""A small plant for the dashboard's tests: a site and two machines put through the API, and
their agent's readings, birth and heartbeats published over MQTT as a real agent would."""

import json
import time
from typing import Any

import aiohttp

from shared.mqtt import MqttClient
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, encode_batch
from tests.harness import AUTH

HOSTILE = "<img src=x onerror=alert(1)>"
"""A name a page must show as text: were it parsed as HTML, it would run a script."""
SHORTAGE = "Material shortage"
"""A second reason, for a stop to be given afterwards."""
SITE = "plant-1"
AGENT = "press-agent"
MACHINES = ("press-1", "press-2")
ALL_WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
US = 1_000_000
TYPES = {
    "state": DataType.UINT16,
    "reason": DataType.UINT16,
    "good": DataType.UINT32,
    "temperature": DataType.FLOAT64,
}


def site_spec(time_zone: str = "Europe/Berlin") -> dict[str, Any]:
    """A site whose two shifts cover every hour, so a shift is always running."""
    return {
        "name": "Plant one",
        "time_zone": time_zone,
        "areas": [{"id": "pressing", "name": "Pressing", "lines": [{"id": "line-1"}]}],
        "calendar": {
            "shifts": [
                {"name": "early", "start": "00:00", "end": "12:00", "days": ALL_WEEK},
                {"name": "late", "start": "12:00", "end": "00:00", "days": ALL_WEEK},
            ]
        },
        "loss_mapping": {
            "states": [
                {"name": "running", "values": [1], "element": "production"},
                {"name": "setup", "values": [2], "element": "setup"},
                {"name": "down", "values": [3], "element": "delay"},
            ],
            "reasons": [
                {"value": 5, "name": HOSTILE, "element": "delay"},
                {"value": 7, "name": SHORTAGE, "element": "delay"},
            ],
        },
    }


def machine_spec(machine: str, name: str | None = None) -> dict[str, Any]:
    """A machine whose tags live on AGENT's device `machine`."""

    def tag(part: str) -> dict[str, Any]:
        return {"tag": f"{machine}/{part}", "agent": AGENT}

    return {
        "name": name,
        "area": "pressing",
        "line": "line-1",
        "state": tag("state"),
        "reason": tag("reason"),
        "good": tag("good"),
        "ideal_cycle_time_s": 2.0,
    }


async def put_plant(base: str, names: dict[str, str] | None = None) -> None:
    """The site and its machines, through the equipment API (admin)."""
    names = names or {}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.put(f"{base}/api/v1/equipment/sites/{SITE}", json=site_spec()) as r:
            assert r.status == 200, await r.text()
        for machine in MACHINES:
            async with session.put(
                f"{base}/api/v1/equipment/sites/{SITE}/machines/{machine}",
                json=machine_spec(machine, names.get(machine)),
            ) as r:
                assert r.status == 200, await r.text()


async def new_key(base: str, role: str) -> str:
    """A new API key of `role`."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(f"{base}/api/v1/api-keys", json={"name": f"{role} key", "role": role}) as r,
    ):
        assert r.status == 201, await r.text()
        return str((await r.json())["key"])


class PlantAgent:
    """Publishes what AGENT's agent would: birth, heartbeats and batches of readings."""

    def __init__(self, client: MqttClient, prefix: str) -> None:
        self.client = client
        self.topics = Topics(prefix)
        self.seq = 0

    async def born(self, status: str = "online") -> None:
        """A birth (or death) message."""
        body = {"v": 1, "status": status, "version": "1.0", "config_hash": "h", "devices": []}
        await self.client.publish(
            self.topics.state(AGENT), json.dumps({**body, "epoch": 1}).encode(), timeout=10
        )

    async def heartbeat(self, buffered: int = 12, oldest_s: float = 3.5, dropped: int = 2) -> None:
        """A heartbeat with these buffer figures."""
        buffer = {
            "readings": buffered,
            "oldest_age_s": oldest_s,
            "in_flight": 0,
            "dropped_oldest": dropped,
            "dropped_newest": 0,
            "used_bytes": 4096,
        }
        body = {"v": 1, "ts": int(time.time() * US), "buffer": buffer, "devices": {}}
        payload = json.dumps({**body, "readings_acknowledged": 0}).encode()
        await self.client.publish(self.topics.heartbeat(AGENT), payload, timeout=10)

    async def readings(self, machine: str, at_s: float, **values: float) -> None:
        """One batch: the machine's tags (state, reason, good, temperature) at `at_s` (Unix
        seconds)."""
        await self.series(machine, [(part, at_s, value) for part, value in values.items()])

    async def series(self, machine: str, points: list[tuple[str, float, float]]) -> None:
        """One batch of (tag, Unix seconds, value) readings of the machine's device."""
        readings = [
            Reading(machine, part, TYPES[part], int(at_s * US), value, Quality.GOOD)
            for part, at_s, value in points
        ]
        seqs = list(range(self.seq + 1, self.seq + 1 + len(readings)))
        self.seq = seqs[-1]
        payload = encode_batch(AGENT, 1, seqs, readings)
        await self.client.publish(self.topics.batch(AGENT), payload, timeout=10)

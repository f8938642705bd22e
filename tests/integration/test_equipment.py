"""The equipment model through a real collector and PostgreSQL: CRUD, roles, audit, file, gauge."""

import copy
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch
from tests.harness import TEST_KEY, collector_config, eventually, running_collector
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "equipment.yaml"
EQUIPMENT = "/api/v1/equipment"


def sample() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text()))


def site_spec() -> dict[str, Any]:
    """The sample's site as the API takes it: no id, no machines, dates as text."""
    site = copy.deepcopy(sample()["sites"][0])
    del site["id"], site["machines"]
    site["calendar"]["days_off"] = [day.isoformat() for day in site["calendar"]["days_off"]]
    return dict(site)


def machine_spec(**changes: Any) -> dict[str, Any]:
    machine = copy.deepcopy(sample()["sites"][0]["machines"][0])
    del machine["id"]
    machine.update(changes)
    return dict(machine)


async def call(method: str, url: str, key: str = TEST_KEY, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url, headers={"Authorization": f"Bearer {key}"}, **kwargs
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.fixture
async def collector(plant_collector_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    config = plant_collector_config(sections={"rate_limits": {"enabled": False}})
    async with running_collector(config) as base:
        yield base


async def test_sites_and_machines_are_created_read_replaced_and_deleted(collector: str) -> None:
    site_url = f"{collector}{EQUIPMENT}/sites/plant-2"
    machine_url = f"{site_url}/machines/press-1"
    assert (await call("GET", site_url))[0] == 404
    status, body = await call("PUT", machine_url, json=machine_spec())
    assert (status, body["invalid_params"][0]["name"]) == (404, "site")

    status, site = await call("PUT", site_url, json=site_spec())
    assert status == 200, site
    assert (site["id"], site["managed_by"], site["updated_by"]) == (
        "plant-2",
        "api",
        "key 7e57ab1e",
    )
    assert (site["spec"]["time_zone"], site["spec"]["production_day_start"]) == (
        "Europe/Berlin",
        "06:00",
    )
    # What GET shows is what PUT takes: sent back, it changes nothing.
    assert await call("PUT", site_url, json=site["spec"]) == (200, site)
    assert site["spec"]["calendar"]["days_off"] == site_spec()["calendar"]["days_off"]
    # The same spec again: nothing changes, not even the time of the last change.
    assert await call("PUT", site_url, json=site_spec()) == (200, site)
    assert await call("GET", site_url) == (200, site)

    status, body = await call("PUT", machine_url, json=machine_spec(line="line-9"))
    assert (status, body["invalid_params"][0]["name"]) == (422, "line")
    status, machine = await call("PUT", machine_url, json=machine_spec())
    assert status == 200, machine
    assert machine["spec"]["good"]["rollover"] == 4294967296
    assert await call("PUT", machine_url, json=machine_spec()) == (200, machine)
    assert await call("GET", machine_url) == (200, machine)
    status, renamed = await call("PUT", machine_url, json=machine_spec(name="Press one"))
    assert (status, renamed["spec"]["name"]) == (200, "Press one")
    # A site with machines may change, as long as their lines stay.
    status, changed = await call("PUT", site_url, json=site_spec() | {"name": "Dortmund"})
    assert (status, changed["spec"]["name"], changed["machines"]) == (200, "Dortmund", ["press-1"])

    status, tree = await call("GET", f"{collector}{EQUIPMENT}")
    assert status == 200
    assert tree == {
        "enterprise": "enterprise",
        "sites": [
            {
                "id": "plant-2",
                "name": "Dortmund",
                "time_zone": "Europe/Berlin",
                "managed_by": "api",
                "areas": [
                    {
                        "id": "pressing",
                        "name": "Press shop",
                        "lines": [
                            {"id": "line-1", "name": "Press line 1", "machines": ["press-1"]}
                        ],
                    }
                ],
            }
        ],
    }
    # A line a machine is on cannot go, nor can a site with machines.
    moved = site_spec() | {"areas": [{"id": "pressing", "lines": [{"id": "line-2"}]}]}
    status, body = await call("PUT", site_url, json=moved)
    assert (status, body["invalid_params"][0]["name"]) == (422, "areas")
    status, body = await call("DELETE", site_url)
    assert (status, body["invalid_params"][0]["name"]) == (409, "site")

    assert await call("DELETE", machine_url) == (200, renamed)
    status, body = await call("DELETE", machine_url)
    assert (status, body["invalid_params"][0]["name"]) == (404, "machine")
    assert (await call("GET", machine_url))[0] == 404
    status, deleted = await call("DELETE", site_url)
    assert (status, deleted["machines"]) == (200, [])
    status, body = await call("DELETE", site_url)
    assert (status, body["invalid_params"][0]["name"]) == (404, "site")
    assert await call("GET", f"{collector}{EQUIPMENT}") == (
        200,
        {"enterprise": "enterprise", "sites": []},
    )


async def test_a_bad_spec_is_refused_naming_the_field(collector: str) -> None:
    site_url = f"{collector}{EQUIPMENT}/sites/plant-2"
    status, body = await call("PUT", site_url, json=site_spec() | {"time_zone": "Mars/Base"})
    assert status == 400
    assert body["invalid_params"][0]["name"] == "time_zone"
    assert "IANA" in body["invalid_params"][0]["reason"]
    await call("PUT", site_url, json=site_spec())
    status, body = await call(
        "PUT",
        f"{site_url}/machines/m",
        json=machine_spec(good={"tag": "a/b", "agent": "x", "kind": "delta", "rollover": 65536}),
    )
    assert status == 400
    assert body["invalid_params"][0]["name"] == "good.rollover"


async def test_viewers_read_and_only_admins_change(collector: str) -> None:
    status, created = await call(
        "POST", f"{collector}/api/v1/api-keys", json={"name": "screens", "role": "viewer"}
    )
    viewer = created["key"]
    site_url = f"{collector}{EQUIPMENT}/sites/plant-2"
    assert (await call("PUT", site_url, json=site_spec()))[0] == 200
    assert (await call("GET", site_url, key=viewer))[0] == 200
    assert (await call("GET", f"{collector}{EQUIPMENT}", key=viewer))[0] == 200
    for method, url, body in [
        ("PUT", site_url, site_spec()),
        ("DELETE", site_url, None),
        ("PUT", f"{site_url}/machines/m", machine_spec()),
        ("DELETE", f"{site_url}/machines/m", None),
        ("GET", f"{collector}{EQUIPMENT}/audit", None),
    ]:
        status, problem = await call(method, url, key=viewer, json=body)
        assert status == 403, (method, url, problem)
        assert "needs the admin role" in problem["detail"]


async def test_every_change_is_audited_with_who_and_the_documents(collector: str) -> None:
    status, created = await call(
        "POST", f"{collector}/api/v1/api-keys", json={"name": "planner", "role": "admin"}
    )
    planner = created["key"]
    site_url = f"{collector}{EQUIPMENT}/sites/plant-2"
    await call("PUT", site_url, json=site_spec(), key=planner)
    await call("PUT", site_url, json=site_spec(), key=planner)  # unchanged: not audited
    renamed = site_spec() | {"name": "Dortmund"}
    await call("PUT", site_url, json=renamed)
    await call("PUT", f"{site_url}/machines/press-1", json=machine_spec())
    await call("DELETE", f"{site_url}/machines/press-1")
    await call("PUT", f"{collector}{EQUIPMENT}/sites/plant-3", json=site_spec())

    status, page = await call("GET", f"{collector}{EQUIPMENT}/audit", params={"limit": "2"})
    assert status == 200
    items = page["items"]
    while page["next"] is not None:
        status, page = await call("GET", f"{collector}{page['next']}")
        items += page["items"]
    assert [(i["action"], i["site"], i["machine"]) for i in items] == [
        ("create", "plant-2", None),
        ("update", "plant-2", None),
        ("create", "plant-2", "press-1"),
        ("delete", "plant-2", "press-1"),
        ("create", "plant-3", None),
    ]
    first, second = items[0], items[1]
    assert (first["actor"], first["actor_name"]) == (f"key {created['prefix']}", "planner")
    assert first["before"] is None
    assert first["after"]["managed_by"] == "api"
    assert (second["actor"], second["actor_name"]) == ("key 7e57ab1e", "tests")
    assert (second["before"]["name"], second["after"]["name"]) == ("Acme Dortmund", "Dortmund")
    assert items[3]["after"] is None
    assert items[3]["before"] == items[2]["after"]
    status, only = await call("GET", f"{collector}{EQUIPMENT}/audit", params={"site": "plant-3"})
    assert [i["site"] for i in only["items"]] == ["plant-3"]
    status, body = await call("GET", f"{collector}{EQUIPMENT}/audit", params={"cursor": "eA"})
    assert (status, body["invalid_params"][0]["name"]) == (400, "cursor")


async def test_the_equipment_file_seeds_its_sites_and_keeps_them(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str, tmp_path: Path
) -> None:
    file = tmp_path / "equipment.yaml"
    file.write_text(SAMPLE.read_text())

    def config() -> Any:
        return collector_config(
            database_url=database_url,
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            client_id=f"{topic_prefix}-collector",
            sections={"equipment": {"file": str(file)}},
        )

    async with running_collector(config()) as base:
        status, tree = await call("GET", f"{base}{EQUIPMENT}")
        assert (tree["enterprise"], tree["sites"][0]["managed_by"]) == ("Acme Components", "config")
        site_url = f"{base}{EQUIPMENT}/sites/plant-1"
        status, body = await call("PUT", site_url, json=site_spec())
        assert (status, body["invalid_params"][0]["name"]) == (409, "site")
        assert "equipment file" in body["detail"]
        assert (await call("DELETE", f"{site_url}/machines/press-1"))[0] == 409
        assert (await call("PUT", f"{site_url}/machines/press-2", json=machine_spec()))[0] == 409
        # An API site beside the file's.
        assert (await call("PUT", f"{base}{EQUIPMENT}/sites/plant-2", json=site_spec()))[0] == 200

    # Restarted with the same file: nothing changes, nothing is audited.
    async with running_collector(config()) as base:
        status, audit = await call("GET", f"{base}{EQUIPMENT}/audit")
        assert [(i["actor"], i["action"], i["machine"]) for i in audit["items"]] == [
            ("config", "create", None),
            ("config", "create", "press-1"),
            ("key 7e57ab1e", "create", None),
        ]

    # The file changed: its site follows it; a machine it no longer lists goes.
    edited = sample()
    edited["sites"][0]["name"] = "Werk Dortmund"
    edited["sites"][0]["machines"] = []
    file.write_text(yaml.safe_dump(edited))
    async with running_collector(config()) as base:
        status, site = await call("GET", f"{base}{EQUIPMENT}/sites/plant-1")
        assert (site["spec"]["name"], site["machines"], site["updated_by"]) == (
            "Werk Dortmund",
            [],
            "config",
        )

    # The file no longer names the site: it stays, and the API manages it from now on.
    file.write_text(yaml.safe_dump({"enterprise": "Acme", "sites": []}))
    async with running_collector(config()) as base:
        status, site = await call("GET", f"{base}{EQUIPMENT}/sites/plant-1")
        assert site["managed_by"] == "api"
        assert (await call("DELETE", f"{base}{EQUIPMENT}/sites/plant-1"))[0] == 200
        status, audit = await call("GET", f"{base}{EQUIPMENT}/audit", params={"site": "plant-1"})
        assert [(i["actor"], i["action"], i["machine"]) for i in audit["items"]][2:] == [
            ("config", "delete", "press-1"),
            ("config", "update", None),
            ("config", "update", None),
            ("key 7e57ab1e", "delete", None),
        ]


async def test_the_gauge_shows_each_machines_state_by_name(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str, publisher: MqttClient
) -> None:
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"equipment": {"status_interval": "100ms"}},
    )
    async with running_collector(config) as base:
        site_url = f"{base}{EQUIPMENT}/sites/plant-2"
        await call("PUT", site_url, json=site_spec())
        await call("PUT", f"{site_url}/machines/press-1", json=machine_spec())
        await call(
            "PUT",
            f"{site_url}/machines/press-2",
            json=machine_spec(state={"tag": "press-2/state", "agent": "line-1"}),
        )

        async def gauge() -> dict[tuple[str, str], float]:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
                text = await r.text()
            found = {}
            for line in text.splitlines():
                if line.startswith("equipment_status{"):
                    labels, value = line.rsplit(" ", 1)
                    parts = dict(
                        item.split("=") for item in labels[len("equipment_status{") : -1].split(",")
                    )
                    found[(parts["equipment"].strip('"'), parts["status"].strip('"'))] = float(
                        value
                    )
            return found

        statuses = {"stopped", "running", "idle", "down", "setup", "unknown"}

        async def unknown_first() -> bool:
            shown = await gauge()
            return {s for (e, s), v in shown.items() if e == "plant-2/press-1"} == statuses and (
                shown[("plant-2/press-1", "unknown")] == 1.0
            )

        await eventually(unknown_first, timeout=10, what="press-1 shown as unknown")
        now_us = time.time_ns() // 1000
        readings = [
            Reading("sim-modbus", "state", DataType.UINT16, now_us - 2000, 1),
            Reading("sim-modbus", "state", DataType.UINT16, now_us - 1000, 3),
            Reading("press-2", "state", DataType.UINT16, now_us, 9),
        ]
        await publisher.publish(
            Topics(topic_prefix).batch("line-1"),
            encode_batch("line-1", 1, [1, 2, 3], readings),
            timeout=5,
        )

        async def down() -> bool:
            return (await gauge()).get(("plant-2/press-1", "down")) == 1.0

        await eventually(down, timeout=15, what="press-1 shown as down")
        shown = await gauge()
        assert [s for (e, s), v in shown.items() if e == "plant-2/press-1" and v] == ["down"]
        # A code the loss mapping does not know is unknown.
        assert [s for (e, s), v in shown.items() if e == "plant-2/press-2" and v] == ["unknown"]

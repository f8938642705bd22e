"""Commands to equipment, all real: the simulator over Modbus and OPC UA, agents, Mosquitto,
collectors (two replicas too) and PostgreSQL. Applied with the value before and after,
refused by the agent's rules, expired after an outage, applied once when delivered twice,
an unreachable device, timed out, and the API's checks and roles."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import AgentConfig, CommandSettings
from agent.service import AgentService
from collector.config import CollectorConfig
from protocols.simulator.runner import Simulator
from shared.commands import CommandPayload, encode_command
from shared.mqtt import MqttClient
from shared.wire import Topics
from tests.harness import (
    AUTH,
    agent_config,
    eventually,
    modbus_device,
    opcua_device,
    replica_configs,
    running_agent,
    running_collector,
    running_collector_app,
)
from tests.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration
AGENT = "press-agent"
FAST = {"check_interval": "200ms", "grace": "30s"}
ALLOW: list[dict[str, Any]] = [
    {"device": "sim-*", "tag": "speed_setpoint", "min": 1000, "max": 15000},
    {"device": "sim-*", "tag": "enable"},
    {"device": "sim-modbus", "tag": "state"},  # allowed here, but the tag is read-only
    {"device": "dead-*", "tag": "*"},
]


def writable(device: dict[str, Any]) -> dict[str, Any]:
    """A device entry whose speed_setpoint (bounds 0..20000) and enable tags are writable."""
    for tag in device["tags"]:
        if tag["name"] == "speed_setpoint":
            tag.update(writable=True, min=0, max=20000)
        if tag["name"] == "enable":
            tag["writable"] = True
    return device


@pytest.fixture
def make_agent(
    simulator: Simulator, mosquitto: MosquittoServer, topic_prefix: str, tmp_path: Path
) -> Callable[..., AgentConfig]:
    """An agent of the simulator's two devices, commands on with ALLOW (or as given)."""

    def make(devices: list[dict[str, Any]] | None = None, **commands: Any) -> AgentConfig:
        assert simulator.opcua is not None
        config = agent_config(
            agent_id=AGENT,
            buffer=tmp_path / "buffer.sqlite",
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            devices=devices
            or [
                writable(modbus_device(simulator.modbus_port)),
                writable(opcua_device(simulator.opcua.endpoint)),
            ],
        )
        settings = CommandSettings.model_validate({"enabled": True, "allow": ALLOW, **commands})
        # A client id of this test's own: the broker keeps each agent's session between runs.
        mqtt = config.mqtt.model_copy(update={"client_id": f"{topic_prefix}-agent"})
        return config.model_copy(update={"commands": settings, "mqtt": mqtt})

    return make


@pytest.fixture
def collector(plant_collector_config: Callable[..., CollectorConfig]) -> CollectorConfig:
    return plant_collector_config(sections={"commands": FAST})


@pytest.fixture
async def base(collector: CollectorConfig) -> AsyncIterator[str]:
    async with running_collector(collector) as url:
        yield url


async def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, **params: str
) -> tuple[int, Any]:
    """An API call, with the admin test key unless `headers` say otherwise."""
    async with (
        aiohttp.ClientSession(headers=headers or AUTH) as session,
        session.request(method, url, json=body, params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


async def command(base: str, device: str, tag: str, value: Any, **more: Any) -> dict[str, Any]:
    """POST a command to the test agent; return it as accepted."""
    body = {"agent": AGENT, "device": device, "tag": tag, "value": value, **more}
    status, made = await call("POST", f"{base}/api/v1/commands", body)
    assert status == 202, made
    assert made["status"] in ("pending", "sent")
    result: dict[str, Any] = made
    return result


async def finished(base: str, command_id: str, timeout: float = 20) -> dict[str, Any]:
    """Wait until a command is no longer open; return it."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        status, found = await call("GET", f"{base}/api/v1/commands/{command_id}")
        assert status == 200, found
        seen.update(found)
        return found["status"] not in ("pending", "sent")

    await eventually(done, timeout=timeout, what=f"command {command_id} to finish")
    return seen


async def connected(service: AgentService, *devices: str) -> None:
    async def up() -> bool:
        snapshot = await service.health.snapshot(service.mqtt.connected)
        return snapshot.connected and all(snapshot.devices[d] == "connected" for d in devices)

    await eventually(up, timeout=20, what="the agent connected to the broker and its devices")


@pytest.mark.parametrize("device", ["sim-modbus", "sim-opcua"])
async def test_a_command_is_applied_with_the_value_before_and_after(
    base: str, make_agent: Callable[..., AgentConfig], simulator: Simulator, device: str
) -> None:
    async with running_agent(make_agent()) as service:
        await connected(service, device)
        made = await command(base, device, "speed_setpoint", 7000)
        done = await finished(base, made["id"])
        assert done["status"] == "applied", done
        assert (done["value_before"], done["value_after"], done["reason"]) == (12000, 7000, None)
        assert done["requested_by"] == "7e57ab1e"
        assert done["requested_by_name"] == "tests"
        assert done["sent_at"] is not None
        assert done["finished_at"] is not None

        async def simulator_holds_it() -> bool:
            return simulator.machine.values["speed_setpoint"] == 7000

        await eventually(simulator_holds_it, timeout=10, what="the simulator to hold 7000")
        flag = await finished(base, (await command(base, device, "enable", False))["id"])
        assert (flag["status"], flag["value_before"], flag["value_after"]) == (
            "applied",
            True,
            False,
        )
        assert service.commands.counts == {"applied": 2}
    status, audit = await call("GET", f"{base}/api/v1/commands", agent=AGENT, device=device)
    assert status == 200, audit
    assert [c["id"] for c in audit["items"]] == [flag["id"], made["id"]]  # newest first


async def test_the_agents_rules_refuse_what_they_do_not_allow(
    base: str, make_agent: Callable[..., AgentConfig], simulator: Simulator
) -> None:
    dead = writable(modbus_device(free_port(), name="dead-modbus"))
    devices = [writable(modbus_device(simulator.modbus_port)), dead]
    async with running_agent(make_agent(devices, connect_wait="1s")) as service:
        await connected(service, "sim-modbus")
        asked = {
            "not allowed": ("sim-modbus", "axis_offset", 5),
            "read-only": ("sim-modbus", "state", 1),
            "above the entry": ("sim-modbus", "speed_setpoint", 16000),
            "below the entry": ("sim-modbus", "speed_setpoint", 999),
            "not a number": ("sim-modbus", "speed_setpoint", "fast"),
            "no device": ("sim-nothing", "speed_setpoint", 2000),
            "unreachable": ("dead-modbus", "speed_setpoint", 2000),
        }
        made = {case: await command(base, *args) for case, args in asked.items()}
        results = {case: await finished(base, c["id"]) for case, c in made.items()}
    reasons = {case: (r["status"], r["reason"]) for case, r in results.items()}
    assert reasons["not allowed"] == (
        "refused",
        "sim-modbus/axis_offset matches no entry of commands.allow",
    )
    assert reasons["read-only"][0] == "refused"
    assert "read-only" in reasons["read-only"][1]
    assert reasons["above the entry"] == (
        "refused",
        "sim-modbus/speed_setpoint: 16000 is above commands.allow[0].max 15000",
    )
    assert reasons["below the entry"] == (
        "refused",
        "sim-modbus/speed_setpoint: 999 is below commands.allow[0].min 1000",
    )
    assert reasons["not a number"][0] == "refused"
    assert reasons["no device"] == (
        "refused",
        "sim-nothing/speed_setpoint: no such device on this agent",
    )
    assert reasons["unreachable"][0] == "unreachable"
    assert "dead-modbus" in reasons["unreachable"][1]
    assert simulator.modbus_image.writes_served == 0
    assert simulator.machine.values["speed_setpoint"] == 12000
    assert service.commands.counts == {"refused": 6, "unreachable": 1}
    status, audit = await call("GET", f"{base}/api/v1/commands", status="refused", limit="4")
    assert status == 200, audit
    assert len(audit["items"]) == 4
    assert audit["next"] is not None
    status, rest = await call("GET", audit["next"].replace("/api", f"{base}/api", 1))
    assert status == 200, rest
    assert len(rest["items"]) == 2
    assert rest["next"] is None


@pytest.mark.parametrize("device", ["sim-modbus", "sim-opcua"])
async def test_the_tags_own_writable_flag_and_bounds_hold_within_a_looser_entry(
    base: str, make_agent: Callable[..., AgentConfig], simulator: Simulator, device: str
) -> None:
    loose = [{"device": "*", "tag": "*"}]
    async with running_agent(make_agent(allow=loose)) as service:
        await connected(service, device)
        above = await finished(base, (await command(base, device, "speed_setpoint", 25000))["id"])
        read_only = await finished(base, (await command(base, device, "state", 1))["id"])
    assert above["status"] == "refused"
    assert (
        f"{device}/speed_setpoint: 25000 is above the configured maximum 20000" in above["reason"]
    )
    assert above["value_before"] == 12000
    assert read_only["status"] == "refused"
    assert f"{device}/state: the tag is read-only" in read_only["reason"]
    assert simulator.modbus_image.writes_served == 0
    assert simulator.machine.values["speed_setpoint"] == 12000


async def test_an_agent_with_commands_off_refuses_them(
    base: str, make_agent: Callable[..., AgentConfig]
) -> None:
    async with running_agent(make_agent(enabled=False)) as service:
        await connected(service)
        done = await finished(base, (await command(base, "sim-modbus", "enable", False))["id"])
    assert (done["status"], done["reason"]) == (
        "refused",
        "commands are disabled on this agent (commands.enabled)",
    )


async def test_an_offline_agent_applies_a_command_once_it_is_back_within_the_expiry(
    base: str, make_agent: Callable[..., AgentConfig], simulator: Simulator
) -> None:
    config = make_agent()
    async with running_agent(config) as service:
        await connected(service)  # its session, and the subscription, now live in the broker
    made = await command(base, "sim-modbus", "speed_setpoint", 3000, expires_in=60)

    async def sent() -> bool:
        _status, found = await call("GET", f"{base}/api/v1/commands/{made['id']}")
        return found["status"] == "sent"

    await eventually(sent, timeout=10, what="the broker to take the command")
    assert simulator.machine.values["speed_setpoint"] == 12000
    async with running_agent(config) as service:
        done = await finished(base, made["id"])
        assert (done["status"], done["value_before"], done["value_after"]) == (
            "applied",
            12000,
            3000,
        )
        assert service.commands.counts == {"applied": 1}
    assert simulator.machine.values["speed_setpoint"] == 3000
    assert simulator.modbus_image.writes_served == 1


async def test_an_offline_agent_refuses_a_command_that_expired_meanwhile(
    base: str, make_agent: Callable[..., AgentConfig], simulator: Simulator
) -> None:
    config = make_agent()
    async with running_agent(config) as service:
        await connected(service)
    made = await command(base, "sim-modbus", "speed_setpoint", 3000, expires_in=0.5)
    expires_at = datetime.fromisoformat(made["expires_at"])

    async def past_expiry() -> bool:
        return datetime.now(UTC) > expires_at

    await eventually(past_expiry, timeout=5, what="the command's expiry")
    async with running_agent(config):
        done = await finished(base, made["id"])
    assert done["status"] == "expired"
    assert done["reason"].startswith("expired at ")
    assert simulator.modbus_image.writes_served == 0
    assert simulator.machine.values["speed_setpoint"] == 12000


async def test_a_command_delivered_again_is_answered_not_applied_again(
    base: str,
    make_agent: Callable[..., AgentConfig],
    simulator: Simulator,
    publisher: MqttClient,
    topic_prefix: str,
) -> None:
    async with running_agent(make_agent()) as service:
        await connected(service, "sim-modbus")
        made = await command(base, "sim-modbus", "speed_setpoint", 4000, expires_in=120)
        first = await finished(base, made["id"])
        assert first["status"] == "applied"
        # Someone changes the setpoint at the machine; then the broker delivers the old
        # command again.
        simulator.machine.set(simulator.clock.time_us(), speed_setpoint=5000)
        again = CommandPayload(
            v=1,
            id=made["id"],
            device="sim-modbus",
            tag="speed_setpoint",
            value=4000,
            requested_at=made["requested_at"],
            expires_at=made["expires_at"],
            requested_by="key 7e57ab1e (tests)",
        )
        topic = Topics(topic_prefix).command(AGENT, made["id"])
        await publisher.publish(topic, encode_command(again), timeout=5)

        async def answered() -> bool:
            return service.commands.duplicates == 1

        await eventually(answered, timeout=10, what="the agent to answer the repeat")
        assert service.commands.counts == {"applied": 1}
        _, after = await call("GET", f"{base}/api/v1/commands/{made['id']}")
    assert simulator.machine.values["speed_setpoint"] == 5000
    assert simulator.modbus_image.writes_served == 1
    assert after == first


async def test_two_replicas_share_commands_and_record_each_result_once(
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    make_agent: Callable[..., AgentConfig],
    db_pool: Any,
) -> None:
    sections = {"commands": {**FAST, "grace": "0s"}}
    first, second = replica_configs(database_url, mosquitto.url, topic_prefix, sections)
    async with (
        running_collector_app(first) as (_, one),
        running_collector_app(second) as (_, two),
        running_agent(make_agent()) as service,
    ):
        await connected(service, "sim-modbus")
        made = await command(one, "sim-modbus", "speed_setpoint", 6000)
        done = await finished(two, made["id"])
        assert (done["status"], done["value_after"]) == ("applied", 6000)
        # No agent answers for this one: one of the replicas times it out.
        body = {"agent": "absent", "device": "d", "tag": "t", "value": 1, "expires_in": 0.2}
        status, lost = await call("POST", f"{two}/api/v1/commands", body)
        assert status == 202, lost
        timed_out = await finished(one, lost["id"])
        assert timed_out["status"] == "timed_out"
        assert timed_out["reason"] == "no result from the agent by its expiry and the grace"
    async with db_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT subject, body FROM events WHERE kind = 'command.result' ORDER BY id"
        )
        events = await cursor.fetchall()
    assert [subject for subject, _ in events] == [made["id"], lost["id"]]
    assert events[0][1]["status"] == "applied"
    assert events[0][1]["value_before"] == 12000


async def test_the_api_names_what_is_wrong_and_keeps_viewers_out(
    base: str, collector: CollectorConfig
) -> None:
    url = f"{base}/api/v1/commands"
    good = {"agent": AGENT, "device": "sim-modbus", "tag": "enable", "value": True}
    for change, name in [
        ({"agent": "no/such"}, "agent"),
        ({"value": None}, "value"),
        ({"value": [1]}, "value"),
        ({"value": "a\u0000b"}, "value"),
        ({"device": ""}, "device"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 3601}, "expires_in"),
        ({"why": "x"}, "why"),
    ]:
        status, problem = await call("POST", url, {**good, **change})
        assert status == 400, (change, problem)
        names = [p["name"].split(".")[0] for p in problem["invalid_params"]]
        assert name in names, (change, problem)
    for params, name in [
        ({"status": "done"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2030-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "since"),
        ({"requested_by": "pwk_x"}, "requested_by"),
    ]:
        status, problem = await call("GET", url, **params)
        assert (status, problem["invalid_params"][0]["name"]) == (400, name)
    status, problem = await call("GET", f"{url}/not-a-uuid")
    assert (status, problem["invalid_params"][0]["name"]) == (400, "id")
    status, problem = await call("GET", f"{url}/3f0c9e1a-5b7d-4c4e-8f80-91a2b3c4d5e6")
    assert (status, problem["invalid_params"][0]["name"]) == (404, "id")
    keys = {}
    for role in ("viewer", "operator"):
        status, made = await call(
            "POST", f"{base}/api/v1/api-keys", {"name": f"{role} key", "role": role}
        )
        assert status == 201, made
        keys[role] = {"Authorization": f"Bearer {made['key']}"}
    status, problem = await call("POST", url, good, headers=keys["viewer"])
    assert status == 403, problem
    status, problem = await call("GET", url, headers=keys["viewer"])
    assert status == 403, problem
    status, made = await call("POST", url, good, headers=keys["operator"])
    assert status == 202, made
    assert made["requested_by_name"] == "operator key"
    status, found = await call("GET", f"{url}/{made['id']}", headers=keys["operator"])
    assert (status, found["id"]) == (200, made["id"])
    status, mine = await call("GET", url, requested_by=made["requested_by"])
    assert [c["id"] for c in mine["items"]] == [made["id"]]
    assert mine["next"] is None


async def test_a_result_that_is_not_one_is_kept_as_a_dead_letter(
    base: str, publisher: MqttClient, topic_prefix: str
) -> None:
    await publisher.publish(Topics(topic_prefix).result(AGENT), b"{not json", timeout=5)
    letters: list[dict[str, Any]] = []

    async def kept() -> bool:
        status, page = await call("GET", f"{base}/api/v1/dead-letters", kind="result")
        assert status == 200, page
        letters[:] = page["items"]
        return bool(letters)

    await eventually(kept, timeout=10, what="the bad result in the dead letters")
    assert (letters[0]["agent"], letters[0]["reason"]) == (AGENT, "result")

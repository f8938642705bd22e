"""The OPC UA driver against the simulator's real asyncua server."""

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.attribute_ids import AttributeIds
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.cli import main as agent_main
from protocols.base import DeviceUnreachable, WriteFailed, WriteRefused
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.simulator.machine import TAGS
from protocols.simulator.opcua_server import (
    NAMESPACE_URI,
    SERVER_URI,
    OpcUaServerSecurity,
    node_name,
)
from protocols.simulator.runner import Simulator
from shared.clock import SystemClock
from shared.readings import DataType, Quality, Reading
from tests.harness import DISTINCT_VALUES, by_tag, eventually, opcua_device, running_simulator
from tests.unit.fakes import FakeClock


@contextlib.asynccontextmanager
async def connected(config: dict[str, Any]) -> AsyncIterator[OpcUaSource]:
    source = OpcUaSource(OpcUaDevice.model_validate(config), SystemClock())
    await source.connect()
    try:
        yield source
    finally:
        await source.close()


def endpoint(sim: Simulator) -> str:
    assert sim.opcua is not None
    return sim.opcua.endpoint


async def test_values_types_quality_and_timestamps(simulator: Simulator) -> None:
    simulator.machine.paused = True
    unchanged = {k for k, v in DISTINCT_VALUES.items() if simulator.machine.values[k] == v}
    stamp = simulator.clock.time_us()
    simulator.machine.set(stamp, **DISTINCT_VALUES)
    assert simulator.opcua is not None
    await simulator.opcua.publish()
    async with connected(opcua_device(endpoint(simulator))) as source:
        readings = by_tag(await source.read())
    assert {name: r.value for name, r in readings.items()} == DISTINCT_VALUES
    for tag in TAGS:
        reading = readings[tag.name]
        assert reading.data_type is tag.data_type
        assert reading.quality is Quality.GOOD
        assert reading.server_ts_us is not None
        if tag.name in unchanged:
            assert reading.ts_us < stamp, "the source timestamp is when the value last changed"
        else:
            assert reading.ts_us == stamp


async def test_polls_ask_for_the_server_timestamp_too(simulator: Simulator) -> None:
    """The simulator, like a conforming server, returns only the timestamps asked for."""
    async with connected(opcua_device(endpoint(simulator))) as source:
        polled = by_tag(await source.read())
        assert source._client is not None
        node = source._client.get_node(f"ns=2;s={node_name(TAGS[0])}")
        [source_only] = await source._client.uaclient.read_attributes(
            [node.nodeid], AttributeIds.Value
        )
    assert source_only.ServerTimestamp is None, "TimestampsToReturn.Source honoured"
    assert source_only.SourceTimestamp is not None
    assert all(reading.server_ts_us is not None for reading in polled.values())


POLL_US = 2_000_000_000_000_000  # 2033: no server stamp coincides with it


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_null_source_and_out_of_range_server_timestamps(
    simulator: Simulator, mode: str
) -> None:
    """OPC UA Part 4: no valid source time means the poll time stands in, quality uncertain."""
    assert simulator.opcua is not None
    simulator.machine.paused = True
    simulator.opcua.broken_timestamps = {"good_count", "program"}
    simulator.machine.set(simulator.clock.time_us(), good_count=4242, program="P-BROKEN")
    await simulator.opcua.publish()
    config = {**opcua_device(endpoint(simulator)), "mode": mode, "publishing_interval": "100ms"}
    source = OpcUaSource(OpcUaDevice.model_validate(config), FakeClock(start_us=POLL_US))
    await source.connect()
    try:
        received: dict[str, Reading] = {}

        async def every_tag() -> bool:
            received.update(by_tag(await source.read()))
            return {tag.name for tag in TAGS} <= received.keys()

        await eventually(every_tag, what="a value of every node")
    finally:
        await source.close()
    for name, value in (("good_count", 4242), ("program", "P-BROKEN")):
        reading = received[name]
        assert reading.value == value
        assert reading.ts_us == POLL_US, "the poll time, as neither timestamp is usable"
        assert reading.server_ts_us is None, "9999-12-31 is no server timestamp"
        assert reading.quality is Quality.UNCERTAIN
    assert received["state"].quality is Quality.GOOD
    assert received["state"].ts_us != POLL_US
    assert received["state"].server_ts_us is not None


async def test_reads_are_batched_and_bad_nodes_stay_bad(simulator: Simulator) -> None:
    config = opcua_device(endpoint(simulator))
    config["max_nodes_per_read"] = 3
    config["tags"][0]["type"] = "int16"  # Running is a Boolean on the server
    config["tags"].append({"name": "missing", "node": f"nsu={NAMESPACE_URI};s=Nope"})
    config["tags"].append({"name": "alien", "node": "nsu=urn:nobody;s=X"})
    async with connected(config) as source:
        readings = by_tag(await source.read())
    assert readings["running"].quality is Quality.BAD
    assert readings["running"].value is None
    assert readings["missing"].quality is Quality.BAD
    assert readings["alien"].quality is Quality.BAD
    assert readings["state"].quality is Quality.GOOD
    assert by_tag(source.unreachable_readings(1))["state"].data_type is DataType.UINT16


async def test_browse_paths(simulator: Simulator) -> None:
    config = {
        "type": "opcua",
        "name": "ua",
        "endpoint": endpoint(simulator),
        "namespace": NAMESPACE_URI,
        "tags": [
            {"name": "temp", "path": "Machine/Temperature"},
            {"name": "prog", "path": f"/{{{NAMESPACE_URI}}}Machine/{{{NAMESPACE_URI}}}Program"},
            {"name": "lost", "path": "Machine/Nothing"},
            {"name": "state", "node": "i=2259"},
        ],
    }
    async with connected(config) as source:
        readings = by_tag(await source.read())
    assert readings["temp"].data_type is DataType.FLOAT32
    assert readings["prog"].value == "P-1001"
    assert readings["lost"].quality is Quality.BAD
    assert readings["state"].value == 0, "ServerStatus.State: running"
    config["namespace"] = None
    async with connected(config) as source:
        assert by_tag(await source.read())["temp"].quality is Quality.BAD


async def test_subscription_reports_changes(simulator: Simulator) -> None:
    config = {
        **opcua_device(endpoint(simulator)),
        "mode": "subscribe",
        "sampling_interval": "50ms",
        "publishing_interval": "100ms",
    }
    config["tags"][8]["deadband"] = 0.5  # temperature
    async with connected(config) as source:
        received: dict[str, list[Any]] = {}

        async def collect() -> bool:
            for reading in await source.read():
                received.setdefault(reading.tag, []).append(reading.value)
            return {tag.name for tag in TAGS} <= received.keys()

        await eventually(collect, what="an initial value of every node")
        simulator.machine.paused = True
        simulator.machine.set(simulator.clock.time_us(), good_count=777, program="P-9")
        await eventually(
            lambda: _arrived(collect, received, "good_count", 777), what="a data change"
        )
        assert received["program"][-1] == "P-9"


async def _arrived(collect: Any, received: dict[str, list[Any]], tag: str, value: Any) -> bool:
    await collect()
    return value in received.get(tag, [])


async def test_unreachable_server() -> None:
    from tests.servers import free_port

    config = opcua_device(f"opc.tcp://127.0.0.1:{free_port()}/x")
    source = OpcUaSource(OpcUaDevice.model_validate({**config, "timeout": "1s"}), SystemClock())
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await source.connect()
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await source.read()


async def test_writes(simulator: Simulator) -> None:
    config = opcua_device(endpoint(simulator))
    for tag in config["tags"]:
        if tag["name"] in ("speed_setpoint", "enable", "state"):
            tag["writable"] = True
            tag["max"] = 15000
    async with connected(config) as source:
        await source.write("speed_setpoint", 9000)  # no read first: types are learnt on connect
        await source.write("enable", False)
        await eventually(
            _machine_has(simulator, speed_setpoint=9000, enable=False), what="the machine"
        )
        with pytest.raises(WriteRefused, match="read-only"):
            await source.write("temperature", 1.0)
        with pytest.raises(WriteRefused, match="above the configured maximum"):
            await source.write("speed_setpoint", 16000)
        with pytest.raises(WriteFailed, match="refused the write"):
            await source.write("state", 1)  # writable here, read-only on the server


async def test_subscribed_device_is_writable_right_after_connect(simulator: Simulator) -> None:
    config = {**opcua_device(endpoint(simulator)), "mode": "subscribe"}
    for tag in config["tags"]:
        tag["writable"] = tag["name"] in ("speed_setpoint", "enable")
    async with connected(config) as source:
        await source.write("speed_setpoint", 7000)
        await source.write("enable", False)
        with pytest.raises(WriteRefused, match="not a valid uint16"):
            await source.write("speed_setpoint", 1.5)
    await eventually(_machine_has(simulator, speed_setpoint=7000, enable=False), what="writes")


def _machine_has(simulator: Simulator, **values: Any) -> Any:
    async def check() -> bool:
        return all(simulator.machine.values[k] == v for k, v in values.items())

    return check


async def test_discover_prints_a_loadable_device(
    simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(agent_main, ["discover", endpoint(simulator), "--name", "d"])
    assert code == 0
    document = yaml.safe_load(capsys.readouterr().out)
    [device] = document["devices"]
    config = OpcUaDevice.model_validate(device)
    names = {tag.name: tag for tag in config.tags}
    assert names["Machine.Temperature"].type is DataType.FLOAT32
    assert names["Machine.Temperature"].node == f"nsu={NAMESPACE_URI};s=Machine.Temperature"
    async with connected(device) as source:
        assert len(await source.read()) == len(TAGS)


# --- security -------------------------------------------------------------------------------


@pytest.fixture
async def certificates(tmp_path: Path) -> dict[str, Path]:
    """A server certificate, a client certificate made by the agent's CLI, and trust stores."""
    paths = {
        name: tmp_path / name
        for name in (
            "server.der",
            "server.pem",
            "trusted",
            "untrusted",
            "client.der",
            "client.pem",
            "other.der",
            "other.pem",
        )
    }
    await setup_self_signed_certificate(
        paths["server.pem"],
        paths["server.der"],
        SERVER_URI,
        "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": "simulator"},
    )
    await setup_self_signed_certificate(
        paths["other.pem"],
        paths["other.der"],
        SERVER_URI,
        "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": "impostor"},
    )
    paths["trusted"].mkdir()
    paths["untrusted"].mkdir()
    shutil.copy(paths["server.der"], paths["trusted"] / "server.der")
    shutil.copy(paths["other.der"], paths["untrusted"] / "other.der")
    code = await asyncio.to_thread(
        agent_main,
        [
            "create-certificate",
            "--certificate",
            str(paths["client.der"]),
            "--private-key",
            str(paths["client.pem"]),
            "--application-uri",
            "urn:plantwire:test",
        ],
    )
    assert code == 0
    return paths


@contextlib.asynccontextmanager
async def secured_simulator(certs: dict[str, Path], **options: Any) -> AsyncIterator[Simulator]:
    security = OpcUaServerSecurity(
        certificate=certs["server.der"], private_key=certs["server.pem"], **options
    )
    async with running_simulator(opcua_security=security) as sim:
        yield sim


def secure_config(
    sim: Simulator, certs: dict[str, Path], policy: str, mode: str, store: str = "trusted"
) -> dict[str, Any]:
    return {
        **opcua_device(endpoint(sim)),
        "security": {
            "policy": policy,
            "mode": mode,
            "certificate": str(certs["client.der"]),
            "private_key": str(certs["client.pem"]),
            "application_uri": "urn:plantwire:test",
            "trust_store": str(certs[store]),
        },
    }


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
        ("Aes128Sha256RsaOaep", "SignAndEncrypt"),
        ("Aes256Sha256RsaPss", "SignAndEncrypt"),
    ],
)
async def test_trusted_server_is_accepted(
    certificates: dict[str, Path], policy: str, mode: str
) -> None:
    async with (
        secured_simulator(certificates) as sim,
        connected(secure_config(sim, certificates, policy, mode)) as source,
    ):
        assert by_tag(await source.read())["program"].value == "P-1001"


async def test_untrusted_server_is_refused(certificates: dict[str, Path]) -> None:
    async with secured_simulator(certificates) as sim:
        config = secure_config(
            sim, certificates, "Basic256Sha256", "SignAndEncrypt", store="untrusted"
        )
        source = OpcUaSource(OpcUaDevice.model_validate(config), SystemClock())
        with pytest.raises(DeviceUnreachable, match="BadCertificateUntrusted"):
            await source.connect()


async def test_user_identities(certificates: dict[str, Path]) -> None:
    async with secured_simulator(
        certificates, users={"alice": "s3cret"}, allow_anonymous=False
    ) as sim:
        base = secure_config(sim, certificates, "Basic256Sha256", "SignAndEncrypt")
        with pytest.raises(DeviceUnreachable, match="cannot connect"):
            async with connected(base):
                pass
        wrong = {**base, "identity": {"type": "username", "username": "alice", "password": "guess"}}
        with pytest.raises(DeviceUnreachable, match="cannot connect"):
            async with connected(wrong):
                pass
        good = {**base, "identity": {"type": "username", "username": "alice", "password": "s3cret"}}
        async with connected(good) as source:
            assert by_tag(await source.read())["state"].quality is Quality.GOOD
        x509 = {
            **base,
            "identity": {
                "type": "certificate",
                "certificate": str(certificates["client.der"]),
                "private_key": str(certificates["client.pem"]),
            },
        }
        async with connected(x509) as source:
            assert by_tag(await source.read())["state"].quality is Quality.GOOD

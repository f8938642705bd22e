"""The OPC UA driver against the simulator's real asyncua server."""

import asyncio
import contextlib
import io
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.attribute_ids import AttributeIds
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.cli import main as agent_main
from protocols.base import DeviceState, DeviceUnreachable, WriteFailed, WriteRefused
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.opcua.trust import thumbprint
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


async def test_discover_prints_a_configuration_check_config_accepts(
    simulator: Simulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = await asyncio.to_thread(agent_main, ["discover", endpoint(simulator), "--name", "d"])
    assert code == 0
    text = capsys.readouterr().out
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(text)
    assert await asyncio.to_thread(agent_main, ["check-config", str(config_file)]) == 0
    assert "OK: agent edge-agent, 1 devices" in capsys.readouterr().out
    document = yaml.safe_load(text)
    assert document.keys() == {"agent", "buffer", "mqtt", "devices"}
    [device] = document["devices"]
    config = OpcUaDevice.model_validate(device)
    names = {tag.name: tag for tag in config.tags}
    assert names["Machine.Temperature"].type is DataType.FLOAT32
    assert names["Machine.Temperature"].node == f"nsu={NAMESPACE_URI};s=Machine.Temperature"
    writable = {tag.name.removeprefix("Machine.") for tag in config.tags if tag.writable}
    assert writable == {tag.opcua_name for tag in TAGS if tag.writable}
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


@pytest.mark.parametrize(
    ("file_name", "encoding"),
    [("server.crt", "pem"), ("server.cer", "der"), ("server.pem", "pem"), ("SERVER.DER", "der")],
)
async def test_trust_store_takes_pem_and_der_under_any_usual_name(
    certificates: dict[str, Path], tmp_path: Path, file_name: str, encoding: str
) -> None:
    der = certificates["server.der"].read_bytes()
    certificate = x509.load_der_x509_certificate(der)
    store = tmp_path / "store"
    store.mkdir()
    body = certificate.public_bytes(Encoding.PEM) if encoding == "pem" else der
    (store / file_name).write_bytes(body)
    (store / "README.txt").write_text("not a certificate, and not named like one\n")
    async with secured_simulator(certificates) as sim:
        config = secure_config(sim, certificates, "Basic256Sha256", "SignAndEncrypt")
        config["security"]["trust_store"] = str(store)
        async with connected(config) as source:
            assert by_tag(await source.read())["program"].value == "P-1001"


async def test_empty_trust_store_is_a_device_error_not_a_crash(
    certificates: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    async with secured_simulator(certificates) as sim:
        config = secure_config(sim, certificates, "Basic256Sha256", "SignAndEncrypt")
        config["security"]["trust_store"] = str(tmp_path / "empty")
        source = OpcUaSource(OpcUaDevice.model_validate(config), SystemClock())
        with pytest.raises(DeviceUnreachable, match=r"trust_store: .*empty holds no certificate"):
            await source.connect()
        assert source.state is DeviceState.DISCONNECTED


async def test_refused_server_is_logged_once_each_way_without_a_traceback(
    certificates: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = tmp_path / "store"
    shutil.copytree(certificates["untrusted"], store)
    async with secured_simulator(certificates) as sim:
        config = secure_config(sim, certificates, "Basic256Sha256", "SignAndEncrypt")
        config["security"]["trust_store"] = str(store)
        source = OpcUaSource(OpcUaDevice.model_validate(config), SystemClock())
        for _ in range(3):
            with pytest.raises(DeviceUnreachable, match="certificate refused"):
                await source.connect()
        shutil.copy(certificates["server.der"], store / "server.der")
        for _ in range(2):
            await source.connect()
            await source.close()
    ours = [r for r in caplog.records if r.name == "protocols.opcua.source"]
    assert [(r.levelno, r.getMessage().split(":")[1].strip()) for r in ours] == [
        (logging.ERROR, "refusing the server's certificate (BadCertificateUntrusted)"),
        (logging.INFO, "the server's certificate is accepted again"),
    ]
    served = x509.load_der_x509_certificate(certificates["server.der"].read_bytes())
    assert thumbprint(served) in ours[0].getMessage()
    assert "CN=simulator" in ours[0].getMessage()
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == ours[:1]


async def test_discover_over_a_secured_channel_as_a_user(
    certificates: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with secured_simulator(
        certificates, users={"alice": "s3cret"}, allow_anonymous=False
    ) as sim:
        options = [
            *("--security-policy", "Aes128Sha256RsaOaep"),
            *("--security-certificate", str(certificates["client.der"])),
            *("--security-private-key", str(certificates["client.pem"])),
            *("--security-application-uri", "urn:plantwire:test"),
            *("--security-trust-store", str(certificates["trusted"])),
            *("--identity-type", "username"),
            *("--identity-username", "alice"),
        ]
        incomplete = ["discover", endpoint(sim), *options]
        assert await asyncio.to_thread(agent_main, incomplete) == 2
        assert "identity: Value error, identity username needs password" in capsys.readouterr().err
        untrusted = [*incomplete, "--identity-password", "s3cret"]
        untrusted[untrusted.index(str(certificates["trusted"]))] = str(certificates["untrusted"])
        assert await asyncio.to_thread(agent_main, untrusted) == 1
        assert "BadCertificateUntrusted" in capsys.readouterr().err
        command = [*incomplete, "--identity-password", "s3cret"]
        assert await asyncio.to_thread(agent_main, command) == 0
        text = capsys.readouterr().out
        config_file = tmp_path / "agent.yaml"
        config_file.write_text(text)
        assert await asyncio.to_thread(agent_main, ["check-config", str(config_file)]) == 0
        [device] = yaml.safe_load(text)["devices"]
        assert device["security"]["policy"] == "Aes128Sha256RsaOaep"
        assert device["identity"] == {"type": "username", "username": "alice", "password": "s3cret"}
        async with connected(device) as source:
            assert len(await source.read()) == len(TAGS)


async def test_trust_command_stores_the_server_certificate_only_when_confirmed(
    certificates: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    served = x509.load_der_x509_certificate(certificates["server.der"].read_bytes())
    store = tmp_path / "trusted-by-command"
    async with secured_simulator(certificates) as sim:
        command = ["trust", endpoint(sim), "--trust-store", str(store)]
        monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
        assert await asyncio.to_thread(agent_main, command) == 1
        out = capsys.readouterr().out
        assert "subject: CN=simulator" in out
        assert f"SHA-256: {thumbprint(served)}" in out
        assert "not stored" in out
        assert not store.exists()
        monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no answer at all: nothing stored
        assert await asyncio.to_thread(agent_main, command) == 1
        assert not store.exists()
        assert await asyncio.to_thread(agent_main, [*command, "--yes"]) == 0
        assert "stored as" in capsys.readouterr().out
        [stored] = store.iterdir()
        assert stored.read_bytes() == certificates["server.der"].read_bytes()
        config = secure_config(sim, certificates, "Basic256Sha256", "SignAndEncrypt")
        config["security"]["trust_store"] = str(store)
        async with connected(config) as source:
            assert by_tag(await source.read())["program"].value == "P-1001"


async def test_trust_command_needs_a_server_with_a_certificate(
    simulator: Simulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    command = ["trust", endpoint(simulator), "--trust-store", str(tmp_path), "--yes"]
    assert await asyncio.to_thread(agent_main, command) == 1
    assert "sent no certificate" in capsys.readouterr().err

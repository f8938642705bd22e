"""The shipped Mosquitto configuration: TLS with client certificates, and an ACL that keeps
each agent to its own topics."""

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared.errors import MqttError
from shared.mqtt import MqttClient, MqttSettings
from tests.harness import (
    agent_config,
    collector_config,
    eventually,
    get_json,
    modbus_device,
    running_agent,
    running_collector,
    running_simulator,
)
from tests.servers import MosquittoServer, free_port
from tests.tls import make_pki

ROOT = Path(__file__).resolve().parents[2]
USERS = {"line1": "pw-line1", "line2": "pw-line2", "collector": "pw-collector"}


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[MosquittoServer, dict[str, Path]]]:
    """Mosquitto running config/mosquitto/plantwire.conf with test paths and a test CA."""
    pki = make_pki(tmp_path)
    passwd = tmp_path / "passwd"
    for index, (user, password) in enumerate(USERS.items()):
        flags = ["-c"] if index == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password], check=True)
    port = free_port()
    config = (ROOT / "config" / "mosquitto" / "plantwire.conf").read_text()
    for old, new in {
        "/etc/mosquitto/plantwire.passwd": str(passwd),
        "/etc/mosquitto/plantwire.acl": str(ROOT / "config" / "mosquitto" / "plantwire.acl"),
        "/etc/mosquitto/certs/ca.pem": str(pki["ca"]),
        "/etc/mosquitto/certs/broker.pem": str(pki["server_cert"]),
        "/etc/mosquitto/certs/broker.key": str(pki["server_key"]),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "listener 8883": f"listener {port} 127.0.0.1",
    }.items():
        assert old in config
        config = config.replace(old, new)
    broker = MosquittoServer(port=port, config=config)
    broker.start()
    try:
        yield broker, pki
    finally:
        broker.stop()


def tls_settings(
    broker: MosquittoServer, pki: dict[str, Path], user: str, **options: object
) -> MqttSettings:
    """Settings to reach the secured broker as `user`, with the test CA's client certificate."""
    return MqttSettings.model_validate(
        {
            "url": f"mqtts://127.0.0.1:{broker.port}",
            "username": user,
            "password": USERS[user],
            "ca_file": pki["ca"],
            "cert_file": pki["client_cert"],
            "key_file": pki["client_key"],
            "connect_timeout": "5s",
            **options,
        }
    )


def client(
    broker: MosquittoServer,
    pki: dict[str, Path],
    user: str,
    *,
    protocol: str = "5",
    certificate: bool = True,
) -> MqttClient:
    settings = MqttSettings(
        url=f"mqtts://127.0.0.1:{broker.port}",
        protocol=protocol,  # type: ignore[arg-type]
        username=user,
        password=USERS[user],
        ca_file=pki["ca"],
        connect_timeout="3s",
        cert_file=pki["client_cert"] if certificate else None,
        key_file=pki["client_key"] if certificate else None,
    )
    return MqttClient(settings, client_id=f"{user}-{protocol}", persistent_session=False)


async def test_each_agent_is_confined_to_its_own_topics(
    secured_broker: tuple[MosquittoServer, dict[str, Path]],
) -> None:
    broker, pki = secured_broker
    collector = client(broker, pki, "collector")
    line1 = client(broker, pki, "line1")
    line2 = client(broker, pki, "line2", protocol="3.1.1")
    for each in (collector, line1, line2):
        await each.connect()
    try:
        await collector.subscribe("plantwire/v1/+/batch")
        await line1.publish("plantwire/v1/line1/batch", b"mine", timeout=5)
        with pytest.raises(MqttError, match="broker refused"):
            await line1.publish("plantwire/v1/line2/batch", b"spoofed", timeout=5)
        # MQTT 3.1.1 cannot say no: the broker takes the publish and drops it.
        await line2.publish("plantwire/v1/line1/batch", b"spoofed by line2", timeout=5)
        await line2.publish("plantwire/v1/line2/batch", b"line2's own", timeout=5)
        stream = collector.messages()
        received = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
        assert [(m.topic, m.payload) for m in received] == [
            ("plantwire/v1/line1/batch", b"mine"),
            ("plantwire/v1/line2/batch", b"line2's own"),
        ]
        # Mosquitto grants the subscription but delivers nothing the ACL forbids.
        await line1.subscribe("plantwire/v1/line2/ack")
        await line1.subscribe("plantwire/v1/line1/ack")
        await collector.publish("plantwire/v1/line2/ack", b"for line2", timeout=5)
        await collector.publish("plantwire/v1/line1/ack", b"for line1", timeout=5)
        ack = await asyncio.wait_for(anext(line1.messages()), 5)
        assert (ack.topic, ack.payload) == ("plantwire/v1/line1/ack", b"for line1")
    finally:
        for each in (collector, line1, line2):
            await each.close()


async def test_each_agent_gets_only_its_own_commands_and_answers_only_for_itself(
    secured_broker: tuple[MosquittoServer, dict[str, Path]],
) -> None:
    broker, pki = secured_broker
    collector = client(broker, pki, "collector")
    line1 = client(broker, pki, "line1")
    for each in (collector, line1):
        await each.connect()
    try:
        await collector.subscribe("plantwire/v1/+/result")
        await line1.subscribe("plantwire/v1/line2/cmd/+")
        await line1.subscribe("plantwire/v1/line1/cmd/+")
        await collector.publish("plantwire/v1/line2/cmd/2", b"for line2", timeout=5)
        await collector.publish("plantwire/v1/line1/cmd/1", b"for line1", timeout=5)
        command = await asyncio.wait_for(anext(line1.messages()), 5)
        assert (command.topic, command.payload) == ("plantwire/v1/line1/cmd/1", b"for line1")
        with pytest.raises(MqttError, match="broker refused"):
            await line1.publish("plantwire/v1/line2/result", b"spoofed", timeout=5)
        with pytest.raises(MqttError, match="broker refused"):
            await line1.publish("plantwire/v1/line2/cmd/3", b"not the collector", timeout=5)
        await line1.publish("plantwire/v1/line1/result", b"done", timeout=5)
        result = await asyncio.wait_for(anext(collector.messages()), 5)
        assert (result.topic, result.payload) == ("plantwire/v1/line1/result", b"done")
    finally:
        for each in (collector, line1):
            await each.close()


async def test_tls_needs_a_client_certificate_and_the_right_password(
    secured_broker: tuple[MosquittoServer, dict[str, Path]],
) -> None:
    broker, pki = secured_broker
    with pytest.raises(MqttError, match="cannot connect"):
        await client(broker, pki, "line1", certificate=False).connect()
    wrong = client(broker, pki, "line1")
    wrong._client.username_pw_set("line1", "guess")
    with pytest.raises(MqttError, match="cannot connect"):
        await wrong.connect()


async def test_readings_flow_from_agent_to_database_through_the_secured_broker(
    secured_broker: tuple[MosquittoServer, dict[str, Path]], database_url: str, tmp_path: Path
) -> None:
    """Agent and collector over TLS with client certificates, passwords and the shipped ACL."""
    broker, pki = secured_broker
    collector = collector_config(
        database_url=database_url, mqtt_url=broker.url, prefix="plantwire", client_id="c"
    )
    collector = collector.model_copy(
        update={"mqtt": tls_settings(broker, pki, "collector", client_id="collector-tls")}
    )
    async with running_simulator(opcua=False) as simulator:
        agent = agent_config(
            agent_id="line1",
            buffer=tmp_path / "buffer.sqlite",
            mqtt_url=broker.url,
            prefix="plantwire",
            devices=[modbus_device(simulator.modbus_port, interval="100ms")],
        )
        agent = agent.model_copy(update={"mqtt": tls_settings(broker, pki, "line1")})
        async with running_collector(collector) as base, running_agent(agent) as service:

            def stored() -> int:
                with psycopg.connect(database_url) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM readings JOIN tags USING (tag_id)"
                        " WHERE agent_id = 'line1'"
                    ).fetchone()
                    return int(row[0]) if row else 0

            async def acknowledged() -> bool:
                return service.forwarder.readings_acknowledged >= 100

            await eventually(acknowledged, what="the collector to acknowledge readings over TLS")
            assert await asyncio.to_thread(stored) >= service.forwarder.readings_acknowledged

            async def listed_online() -> bool:
                status, body = await get_json(f"{base}/api/v1/agents")
                agents = {each["agent"]: each for each in body["agents"]} if status == 200 else {}
                return "line1" in agents and agents["line1"]["status"] == "online"

            await eventually(listed_online, what="/api/v1/agents to list line1 online")
            assert service.mqtt.connected

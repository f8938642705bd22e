"""The agent service: no HTTP port, a second stop, topics it did not ask for, its sources."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.service import AgentService
from agent.sources import build_sources
from protocols.modbus.source import ModbusSource
from protocols.opcua.source import OpcUaSource
from shared.clock import SystemClock
from shared.mqtt import Message
from tests.harness import agent_config, modbus_device, opcua_device
from tests.servers import free_port


def service_config(tmp_path: Path, **agent: object) -> AgentService:
    config = agent_config(
        agent_id="quiet",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # no broker needed here
        prefix="plant",
        devices=[modbus_device(free_port())],
    )
    settings = config.agent.model_copy(update=agent)
    return AgentService(config.model_copy(update={"agent": settings}), stop_grace=5)


async def test_an_agent_without_an_http_port_runs_and_stops_without_listening(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.service")
    service = service_config(tmp_path, http_port=None)
    await service.start()
    try:
        assert service.http.port == 0, "nothing listens"
    finally:
        await service.stop()
    await service.stop()  # a second stop finds nothing running
    [started] = [r.getMessage() for r in caplog.records if "started" in r.getMessage()]
    assert started.endswith(f"(epoch {service.buffer.epoch})"), "no /metrics address"
    assert [r.getMessage() for r in caplog.records].count("agent quiet stopped") == 1


class LeftoverSubscriptions:
    """An MQTT link whose persistent session still delivers a topic of an older subscription."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages

    async def messages(self) -> AsyncIterator[Message]:
        for message in self._messages:
            yield message


async def test_only_acknowledgements_reach_the_forwarder(tmp_path: Path) -> None:
    service = service_config(tmp_path)
    topics = service.topics
    service.mqtt = LeftoverSubscriptions(  # type: ignore[assignment]
        [
            Message(topics.state("quiet"), b'{"status":"online"}', 1, 1, False),
            Message(topics.ack("quiet"), b"an ack", 1, 2, False),
        ]
    )
    handed: list[bytes] = []

    async def handle_ack(raw: bytes) -> None:
        handed.append(raw)

    service.forwarder.handle_ack = handle_ack  # type: ignore[method-assign]
    await service._receive()
    assert handed == [b"an ack"]


def test_each_device_gets_the_driver_of_its_protocol(tmp_path: Path) -> None:
    config = agent_config(
        agent_id="mixed",
        buffer=tmp_path / "b.sqlite",
        mqtt_url="mqtt://127.0.0.1:1",
        prefix="plant",
        devices=[
            modbus_device(free_port(), name="press"),
            opcua_device("opc.tcp://127.0.0.1:4840", name="oven"),
        ],
    )
    press, oven = build_sources(config.devices, SystemClock())
    assert isinstance(press, ModbusSource)
    assert isinstance(oven, OpcUaSource)
    assert (press.name, oven.name) == ("press", "oven")

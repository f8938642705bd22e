"""The OPC UA driver's failure and edge paths, against a fake asyncua client."""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from protocols.base import DeviceState, DeviceUnreachable, SourceError, WriteRefused
from protocols.opcua import source as source_module
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import (
    OpcUaSource,
    _TrustStore,
    data_type_of,
    quality_of,
    stamp_and_quality,
)
from shared.readings import DataType, Quality, datetime_to_us
from tests.unit.fakes import FakeClock
from tests.unit.test_opcua_trust import self_signed

NS = "urn:plant:line1"
READ_LIMIT_NODE = ua.NodeId(
    ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
)
STAMP = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def node(name: str) -> str:
    return f"ns=1;s={name}"


@dataclass
class FakeServer:
    """What a fake client finds at the other end, and what it was asked."""

    values: dict[str, ua.Variant] = field(default_factory=dict)
    types: dict[str, ua.NodeId] = field(default_factory=dict)
    read_limit: int | Exception = 1000
    setup_error: Exception | None = None
    link_error: Exception | None = None
    write_error: Exception | None = None
    disconnect_error: Exception | None = None
    read_error: Exception | None = None
    refused_items: set[str] = field(default_factory=set)
    reads: list[int] = field(default_factory=list)
    written: list[tuple[str, ua.Variant]] = field(default_factory=list)
    monitored: list[str] = field(default_factory=list)
    disconnects: int = 0
    handlers: list[Any] = field(default_factory=list)


class FakeNode:
    def __init__(self, server: FakeServer, node_id: ua.NodeId) -> None:
        self._server = server
        self._node_id = node_id

    async def read_value(self) -> int:
        assert self._node_id == READ_LIMIT_NODE
        if isinstance(self._server.read_limit, Exception):
            raise self._server.read_limit
        return self._server.read_limit

    async def write_value(self, data: ua.DataValue) -> None:
        if self._server.write_error is not None:
            raise self._server.write_error
        assert data.Value is not None
        self._server.written.append((self._node_id.to_string(), data.Value))


class FakeSubscription:
    def __init__(self, server: FakeServer) -> None:
        self._server = server

    async def create_monitored_items(self, requests: list[Any]) -> list[int | ua.StatusCode]:
        results: list[int | ua.StatusCode] = []
        for request in requests:
            text = request.ItemToMonitor.NodeId.to_string()
            self._server.monitored.append(text)
            refused = text in self._server.refused_items
            results.append(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown) if refused else 1)
        return results


class FakeClient:
    """The part of asyncua's Client the driver uses, answering from a FakeServer."""

    def __init__(self, server: FakeServer) -> None:
        self._server = server
        self.uaclient = self
        self.session_timeout = 0

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        self._server.disconnects += 1
        if self._server.disconnect_error is not None:
            raise self._server.disconnect_error

    async def get_namespace_array(self) -> list[str]:
        if self._server.setup_error is not None:
            raise self._server.setup_error
        return ["http://opcfoundation.org/UA/", NS]

    def get_node(self, node_id: ua.NodeId) -> FakeNode:
        return FakeNode(self._server, node_id)

    async def read(self, parameters: ua.ReadParameters) -> list[ua.DataValue]:
        if self._server.read_error is not None:
            raise self._server.read_error
        self._server.reads.append(len(parameters.NodesToRead))
        return [self._answer(item) for item in parameters.NodesToRead]

    def _answer(self, item: ua.ReadValueId) -> ua.DataValue:
        text = item.NodeId.to_string()
        if item.AttributeId == AttributeIds.DataType:
            return ua.DataValue(ua.Variant(self._server.types[text]))
        if item.AttributeId == AttributeIds.ValueRank:
            return ua.DataValue(ua.Variant(-1, ua.VariantType.Int32))
        return ua.DataValue(self._server.values[text], SourceTimestamp=STAMP)

    async def create_subscription(self, period: float, handler: Any) -> FakeSubscription:
        self._server.handlers.append(handler)
        return FakeSubscription(self._server)

    async def check_connection(self) -> None:
        if self._server.link_error is not None:
            raise self._server.link_error


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """The fake server every OpcUaSource of the test connects to."""
    fake = FakeServer()
    monkeypatch.setattr(source_module, "Client", lambda endpoint, timeout: FakeClient(fake))
    return fake


def device(*tags: dict[str, Any], **keys: Any) -> OpcUaSource:
    config = {"type": "opcua", "name": "ua", "endpoint": "opc.tcp://plc:4840", "tags": list(tags)}
    return OpcUaSource(OpcUaDevice.model_validate({**config, **keys}), FakeClock())


def tag(name: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "node": f"nsu={NS};s={name}", **keys}


def test_status_codes_map_onto_qualities() -> None:
    assert quality_of(None) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) is Quality.BAD


def test_a_timestamp_without_a_zone_is_utc() -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)
    data = ua.DataValue(ua.Variant(1.5), SourceTimestamp=naive, ServerTimestamp=naive)
    us = datetime_to_us(STAMP)
    assert stamp_and_quality(data, 0) == (us, us, Quality.GOOD)


@pytest.mark.parametrize(
    "type_id",
    [ua.NodeId(11, 1), ua.NodeId("Double", 0), ua.NodeId(ua.Int32(ObjectIds.Structure))],
)
def test_only_built_in_type_nodes_have_a_data_type(type_id: ua.NodeId) -> None:
    assert data_type_of(type_id) is None
    assert data_type_of(ua.NodeId(11, 0)) is DataType.FLOAT64


def test_a_trust_store_not_loaded_yet_trusts_nothing(tmp_path: Path) -> None:
    certificate, _ = self_signed("server")
    assert not _TrustStore(tmp_path).is_trusted(certificate)


async def test_a_session_that_cannot_be_set_up_is_given_up(server: FakeServer) -> None:
    server.setup_error = ConnectionError("reset by peer")
    source = device(tag("level"))
    with pytest.raises(
        DeviceUnreachable, match=r"^ua: cannot set up the session: ConnectionError\('reset by peer'"
    ):
        await source.connect()
    assert source.state is DeviceState.DISCONNECTED
    assert server.disconnects == 1


@pytest.mark.parametrize(
    "limit", [UaStatusCodeError(ua.StatusCodes.BadNodeIdUnknown), 0, 1000], ids=str
)
async def test_without_a_usable_server_limit_reads_take_the_configured_size(
    server: FakeServer, limit: int | Exception
) -> None:
    server.read_limit = limit
    names = [f"t{i}" for i in range(5)]
    server.values = {node(name): ua.Variant(1.0) for name in names}
    source = device(*(tag(name, type="float64") for name in names), max_nodes_per_read=2)
    await source.connect()
    assert [r.value for r in await source.read()] == [1.0] * 5
    assert server.reads == [2, 2, 1]


async def test_a_float_tag_served_as_an_integer_reads_as_a_float(server: FakeServer) -> None:
    server.values = {node("level"): ua.Variant(3, ua.VariantType.Int32)}
    source = device(tag("level", type="float64"))
    await source.connect()
    (reading,) = await source.read()
    assert (reading.data_type, reading.value, reading.quality) == (
        DataType.FLOAT64,
        3.0,
        Quality.GOOD,
    )
    assert type(reading.value) is float


async def test_subscribing_skips_unresolved_and_refused_nodes(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.refused_items = {node("gone")}
    source = device(
        tag("level", type="float64"),
        {"name": "alien", "node": "nsu=urn:nobody;s=X", "type": "float64"},
        tag("gone", type="float64"),
        mode="subscribe",
    )
    with caplog.at_level(logging.WARNING, logger="protocols.opcua.source"):
        await source.connect()
    assert server.monitored == [node("level"), node("gone")]
    assert "ua/gone: cannot subscribe: " in caplog.text
    assert await source.read() == []
    server.link_error = TimeoutError("no keep-alive answer")
    with pytest.raises(DeviceUnreachable, match=r"^ua: connection lost: TimeoutError"):
        await source.read()
    assert source.state is DeviceState.DISCONNECTED


async def test_writes_need_a_connection_and_a_known_type(server: FakeServer) -> None:
    server.types = {node("recipe"): ua.NodeId(3002, 1), node("speed"): ua.NodeId(10, 0)}
    server.values = {node("recipe"): ua.Variant(None), node("speed"): ua.Variant(1.0)}
    source = device(tag("recipe", writable=True), tag("speed", writable=True))
    for name in ("recipe", "speed"):
        with pytest.raises(DeviceUnreachable, match=r"^ua: not connected$"):
            await source.write(name, 5)
    typed = device(tag("speed", type="float32", writable=True))
    with pytest.raises(DeviceUnreachable, match=r"^ua: not connected$"):
        await typed.write("speed", 5)
    await source.connect()
    with pytest.raises(WriteRefused, match=r"^ua/recipe: the node's data type is not a built-in"):
        await source.write("recipe", 5)
    await source.write("speed", 5)
    assert server.written == [(node("speed"), ua.Variant(5.0, ua.VariantType.Float))]
    assert type(server.written[0][1].Value) is float


async def test_a_write_on_a_broken_connection_disconnects(server: FakeServer) -> None:
    server.write_error = OSError("broken pipe")
    source = device(tag("speed", type="uint16", writable=True))
    await source.connect()
    with pytest.raises(DeviceUnreachable, match=r"^ua: write failed: OSError\('broken pipe'\)"):
        await source.write("speed", 5)
    assert source.state is DeviceState.DISCONNECTED


async def test_closing_is_quiet_whatever_the_connection_state(server: FakeServer) -> None:
    source = device(tag("level", type="float64"))
    await source.close()
    assert server.disconnects == 0
    await source.connect()
    server.disconnect_error = OSError("already closed")
    await source.close()
    assert server.disconnects == 1
    assert source.state is DeviceState.DISCONNECTED
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await source.read()


async def test_a_subscription_the_server_ends_disconnects(server: FakeServer) -> None:
    source = device(tag("level", type="float64"), mode="subscribe")
    await source.connect()
    (handler,) = server.handlers
    status = ua.StatusChangeNotification()
    status.Status = ua.StatusCode(ua.StatusCodes.BadTimeout)
    handler.status_change_notification(status)
    expected = rf"^ua: subscription status StatusCode\(value={ua.StatusCodes.BadTimeout}\)$"
    with pytest.raises(DeviceUnreachable, match=expected):
        await source.read()
    assert source.state is DeviceState.DISCONNECTED


async def test_reading_one_tag_needs_the_tag_its_node_and_a_connection(server: FakeServer) -> None:
    server.values = {node("speed"): ua.Variant(7.5)}
    source = device(tag("speed", type="float64"), {"name": "lost", "node": "nsu=urn:other;s=lost"})
    with pytest.raises(SourceError, match=r"^ua/nothing: no such tag$"):
        await source.read_tag("nothing")
    with pytest.raises(DeviceUnreachable, match=r"^ua: not connected$"):
        await source.read_tag("speed")
    await source.connect()
    assert await source.read_tag("speed") == 7.5
    with pytest.raises(SourceError, match=r"^ua/lost: its node did not resolve on the server$"):
        await source.read_tag("lost")
    server.read_error = OSError("broken pipe")
    with pytest.raises(DeviceUnreachable, match=r"^ua: read failed: OSError\('broken pipe'\)"):
        await source.read_tag("speed")
    assert source.state is DeviceState.DISCONNECTED

"""Commissioning an OPC UA server that is down, breaks while browsed, or repeats names."""

from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncua import ua

from protocols.base import DeviceUnreachable
from protocols.opcua import discover as discover_module
from protocols.opcua.discover import discover, server_certificates
from tests.servers import free_port


async def test_a_server_that_is_down_has_no_certificates_and_nothing_to_browse() -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    with pytest.raises(DeviceUnreachable, match=f"^cannot get the endpoints of {endpoint}: "):
        await server_certificates(endpoint, timeout=5)
    with pytest.raises(DeviceUnreachable, match=f"^cannot connect to {endpoint}: "):
        await discover(endpoint, timeout=5)


@dataclass
class FakeNode:
    """A node of a fake address space: an object with children, or a Double variable."""

    name: str
    node_class: ua.NodeClass = ua.NodeClass.Variable
    children: list["FakeNode"] = field(default_factory=list)
    broken: bool = False

    @property
    def nodeid(self) -> ua.NodeId:
        return ua.NodeId(f"id-{self.name}", 1)

    async def get_children(self) -> list["FakeNode"]:
        if self.broken:
            raise ConnectionError("connection closed by the server")
        return self.children

    async def read_browse_name(self) -> ua.QualifiedName:
        return ua.QualifiedName(self.name, 1)

    async def read_node_class(self) -> ua.NodeClass:
        return self.node_class

    async def read_data_type(self) -> ua.NodeId:
        return ua.NodeId(ua.ObjectIds.Double, 0)

    async def read_attribute(self, attribute: ua.AttributeIds) -> ua.DataValue:
        return ua.DataValue(ua.Variant(1, ua.VariantType.Byte))  # CurrentRead only


class FakeClient:
    def __init__(self, objects: FakeNode) -> None:
        self.nodes = self
        self.objects = objects
        self.session_timeout = 0
        self.disconnected = False

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        self.disconnected = True

    async def get_namespace_array(self) -> list[str]:
        return ["http://opcfoundation.org/UA/", "urn:plant"]


def served(monkeypatch: pytest.MonkeyPatch, *machine: FakeNode, broken: bool = False) -> FakeClient:
    objects = FakeNode(
        "Objects",
        ua.NodeClass.Object,
        [FakeNode("Machine", ua.NodeClass.Object, list(machine), broken=broken)],
    )
    client = FakeClient(objects)

    def new_client(endpoint: str, timeout: float) -> Any:
        return client

    monkeypatch.setattr(discover_module, "Client", new_client)
    return client


async def test_names_that_come_out_alike_are_numbered(monkeypatch: pytest.MonkeyPatch) -> None:
    client = served(monkeypatch, FakeNode("Speed 1"), FakeNode("Speed_1"), FakeNode("Speed/1"))
    tags, skipped = await discover("opc.tcp://plc:4840")
    assert [(t["name"], t["node"]) for t in tags] == [
        ("Machine.Speed_1", "nsu=urn:plant;s=id-Speed 1"),
        ("Machine.Speed_1_2", "nsu=urn:plant;s=id-Speed_1"),
        ("Machine.Speed_1_3", "nsu=urn:plant;s=id-Speed/1"),
    ]
    assert all(t["type"] == "float64" and "writable" not in t for t in tags)
    assert skipped == []
    assert client.disconnected


async def test_a_connection_lost_while_browsing_is_a_device_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = served(monkeypatch, broken=True)
    with pytest.raises(
        DeviceUnreachable,
        match=r"^opc\.tcp://plc:4840: browsing failed: ConnectionError\('connection closed",
    ):
        await discover("opc.tcp://plc:4840")
    assert client.disconnected

"""Serving the simulated machine over OPC UA with asyncua's server."""

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from asyncua import ua
from asyncua.server.server import Server

from protocols.simulator.machine import Machine, SimTag
from shared.readings import DataType, Value, us_to_datetime

NAMESPACE_URI = "urn:plantwire:simulator"
_VARIANTS = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64,
    DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
    DataType.STRING: ua.VariantType.String,
}


def node_name(tag: SimTag) -> str:
    """The string identifier of a tag's node, e.g. Machine.Temperature."""
    return f"Machine.{tag.opcua_name}"


class OpcUaMachineServer:
    """An OPC UA server with one Machine object whose variables follow the simulated machine."""

    def __init__(self, machine: Machine, tags: Sequence[SimTag], host: str, port: int) -> None:
        self._machine = machine
        self._tags = tags
        self.endpoint = f"opc.tcp://{host}:{port}/plantwire/sim"
        self._server = Server()
        self._node_ids: dict[str, ua.NodeId] = {}
        self._published: dict[str, Value] = {}
        self._published_version = -1

    async def start(self) -> None:
        """Create the address space and start listening."""
        server = self._server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Plantwire machine simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for name in ("asyncua.server", "asyncua.common", "asyncua.uaprotocol"):
            logging.getLogger(name).setLevel(logging.WARNING)
        namespace = await server.register_namespace(NAMESPACE_URI)
        machine_object = await server.nodes.objects.add_object(
            ua.NodeId(ua.String("Machine"), ua.Int16(namespace)),
            ua.QualifiedName("Machine", namespace),
        )
        for tag in self._tags:
            node_id = ua.NodeId(ua.String(node_name(tag)), ua.Int16(namespace))
            variant = ua.Variant(self._machine.values[tag.name], _VARIANTS[tag.data_type])
            await machine_object.add_variable(
                node_id, ua.QualifiedName(tag.opcua_name, namespace), variant
            )
            self._node_ids[tag.name] = node_id
        await self.publish()
        await server.start()

    async def publish(self) -> None:
        """Write the values changed since the last publish, stamped with the machine's time."""
        machine = self._machine
        if machine.version == self._published_version:
            return
        moment = us_to_datetime(machine.updated_us) if machine.updated_us else datetime.now(UTC)
        stamp = ua.DateTime(
            moment.year,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond,
            tzinfo=UTC,
        )
        for tag in self._tags:
            value = machine.values[tag.name]
            if self._published.get(tag.name, _UNSET) == value:
                continue
            data = ua.DataValue(
                ua.Variant(value, _VARIANTS[tag.data_type]),
                SourceTimestamp=stamp,
                ServerTimestamp=stamp,
            )
            await self._server.write_attribute_value(self._node_ids[tag.name], data)
            self._published[tag.name] = value
        self._published_version = machine.version

    async def stop(self) -> None:
        """Stop listening and close every session."""
        await self._server.stop()


_UNSET = object()

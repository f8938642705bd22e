"""Building the right driver for each configured device, importing only the drivers in use."""

from agent.config import Device
from protocols.base import Source
from protocols.modbus.config import ModbusDevice
from shared.clock import Clock


def build_source(device: Device, clock: Clock) -> Source:
    """Return the Source for a device's configured protocol."""
    # Imported here: asyncua alone adds about 38 MB to an agent that reads no OPC UA server.
    if isinstance(device, ModbusDevice):
        from protocols.modbus.source import ModbusSource

        return ModbusSource(device, clock)
    from protocols.opcua.source import OpcUaSource

    return OpcUaSource(device, clock)

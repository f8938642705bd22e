"""Building the right driver for each configured device."""

from agent.config import Device
from protocols.base import Source
from protocols.modbus.config import ModbusDevice
from protocols.modbus.source import ModbusSource
from protocols.opcua.source import OpcUaSource
from shared.clock import Clock


def build_source(device: Device, clock: Clock) -> Source:
    """Return the Source for a device's configured protocol."""
    if isinstance(device, ModbusDevice):
        return ModbusSource(device, clock)
    return OpcUaSource(device, clock)

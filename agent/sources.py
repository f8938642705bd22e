"""Building the right driver for each configured device, importing only the drivers in use."""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Device
from protocols.base import Source
from protocols.modbus.config import ModbusDevice
from protocols.opcua.config import OpcUaDevice
from shared.clock import Clock
from shared.invariants import required

if TYPE_CHECKING:  # pymodbus is imported only when a Modbus device is configured
    from protocols.modbus.pool import ModbusPool


def build_sources(devices: Sequence[Device], clock: Clock) -> list[Source]:
    """The Sources of an agent's devices; Modbus devices on one endpoint share its connections."""
    modbus_pool = None
    sources: list[Source] = []
    for device in devices:
        if isinstance(device, ModbusDevice) and modbus_pool is None:
            from protocols.modbus.pool import ModbusPool

            modbus_pool = ModbusPool(clock)
        sources.append(build_source(device, clock, modbus_pool))
    return sources


def build_source(device: Device, clock: Clock, modbus_pool: "ModbusPool | None" = None) -> Source:
    """Return the Source for a device's configured protocol (a Modbus one in `modbus_pool`)."""
    # Imported here: asyncua alone adds about 38 MB to an agent that reads no OPC UA server.
    if isinstance(device, ModbusDevice):
        from protocols.modbus.source import ModbusSource

        return ModbusSource(device, clock, modbus_pool)
    from protocols.opcua.source import OpcUaSource

    return OpcUaSource(device, clock)


def device_file_problems(devices: Sequence[Device]) -> list[str]:
    """Files the devices name that are missing or unusable, each as `key path: problem`."""
    from protocols.opcua.trust import TrustStoreError, load_trust_folder

    problems: list[str] = []
    for index, device in enumerate(devices):
        if not isinstance(device, OpcUaDevice):
            continue
        where = f"devices.{index}"
        security, identity = device.security, device.identity
        files: list[tuple[str, Path | None]] = [
            ("identity.certificate", identity.certificate),
            ("identity.private_key", identity.private_key),
        ]
        if security.policy != "None":
            files += [
                ("security.certificate", security.certificate),
                ("security.private_key", security.private_key),
            ]
            # The security model requires a trust store with every policy but None.
            try:
                load_trust_folder(required(security.trust_store, "security.trust_store"))
            except TrustStoreError as exc:
                problems.append(f"{where}.security.trust_store: {exc}")
        problems += [
            f"{where}.{key}: {path} is not a readable file"
            for key, path in files
            if path is not None and not path.is_file()
        ]
    return problems

"""What every device driver offers the agent: a Source with a connection state."""

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from shared.errors import PlantwireError
from shared.readings import Reading, Value


class DeviceState(StrEnum):
    """Connection state of one device, as the agent reports it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class SourceError(PlantwireError):
    """A device could not be read."""


class DeviceUnreachable(SourceError):
    """The connection to the device failed or was lost; reconnecting may help."""


class WriteRefused(SourceError):
    """The configuration does not allow this write; nothing was sent to the device."""


class WriteFailed(SourceError):
    """The device answered a write with an error."""


class Source(Protocol):
    """A device the agent polls."""

    @property
    def name(self) -> str:
        """The device's name in the plant, unique within an agent."""
        ...

    @property
    def state(self) -> DeviceState:
        """Current connection state."""
        ...

    async def connect(self) -> None:
        """Open the connection; raise DeviceUnreachable if the device does not answer."""
        ...

    async def read(self) -> Sequence[Reading]:
        """Read every configured tag once; raise DeviceUnreachable if the connection is lost."""
        ...

    async def read_tag(self, tag: str) -> Value | None:
        """Read one tag now, apart from polling (None: no usable value).

        Raise SourceError if there is no such tag, DeviceUnreachable if the device is not
        connected or the connection is lost.
        """
        ...

    async def write(self, tag: str, value: Value) -> None:
        """Write a value to a writable tag within its bounds; raise WriteRefused otherwise."""
        ...

    def unreachable_readings(self, ts_us: int) -> Sequence[Reading]:
        """One bad-quality reading per tag, for the moment the device became unreachable."""
        ...

    async def close(self) -> None:
        """Close the connection; safe to call more than once."""
        ...

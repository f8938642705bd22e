"""The exception root every Plantwire package raises from."""


class PlantwireError(Exception):
    """Root of every error Plantwire raises on purpose."""


class ConfigError(PlantwireError):
    """A configuration file or environment override is invalid; the message names the key."""


class WireError(PlantwireError):
    """A payload on the wire does not follow docs/protocol.md; `reason` is a short metric label."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MqttError(PlantwireError):
    """The MQTT broker refused or did not answer in time."""

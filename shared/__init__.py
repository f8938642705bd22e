"""Definitions both ends of the Plantwire pipeline share: readings, wire format, config, MQTT."""

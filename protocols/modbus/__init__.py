"""Modbus TCP driver: register codec, request planning, and the polling source."""

"""The edge agent: polls devices, buffers every reading durably, forwards batches over MQTT."""

__version__ = "0.1.0"

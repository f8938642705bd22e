"""A simulated machine served over OPC UA and Modbus TCP, for tests, benchmarks and the demo."""

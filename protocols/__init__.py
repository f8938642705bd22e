"""Device drivers: OPC UA and Modbus sources, and the PLC simulator that serves both."""

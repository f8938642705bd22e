"""OPC UA driver: batched reads of nodes named by namespace URI."""

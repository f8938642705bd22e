"""The central collector: consumes agents' batches, stores them in PostgreSQL, serves the API."""

__version__ = "0.1.0"
